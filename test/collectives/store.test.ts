import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError } from '../../src/collectives/errors.js';
import { StoreClient, StoreServer } from '../../src/collectives/store.js';

let server: StoreServer;
const logged: string[] = [];
const token = 'store-test-token';
const connect = () => StoreClient.connect({ host: '127.0.0.1', port: server.port, token });

beforeAll(async () => {
  server = await StoreServer.start({ host: '127.0.0.1', port: 0, token, log: (l) => logged.push(l) });
});
afterAll(() => server.close());

describe('rendezvous store', () => {
  it('set, get, add, compareSet, delete, numKeys, check', async () => {
    const a = await connect();
    const b = await connect();
    await a.set('x', 'hello');
    expect((await b.get('x')).toString()).toBe('hello');
    await a.set('bin', new Uint8Array([0, 255, 7]));
    expect([...(await b.get('bin'))]).toEqual([0, 255, 7]);
    expect(await a.add('n', 5)).toBe(5);
    expect(await b.add('n', -2)).toBe(3);
    expect((await a.get('n')).toString()).toBe('3');
    expect((await a.compareSet('cs', null, 'first'))!.toString()).toBe('first');
    expect((await b.compareSet('cs', null, 'second'))!.toString()).toBe('first');
    expect((await b.compareSet('cs', 'first', 'second'))!.toString()).toBe('second');
    expect(await a.compareSet('absent', 'x', 'y')).toBeNull();
    expect(await a.check(['x', 'nope'])).toEqual([true, false]);
    const before = await a.numKeys();
    expect(await a.delete('x')).toBe(true);
    expect(await a.delete('x')).toBe(false);
    expect(await a.numKeys()).toBe(before - 1);
    a.close();
    b.close();
  });

  it('get and wait block until the keys are set', async () => {
    const a = await connect();
    const b = await connect();
    const got = a.get('later', 5000);
    const waited = a.wait(['w1', 'w2'], 5000);
    await new Promise((r) => setTimeout(r, 50));
    await b.set('later', 'now');
    await b.set('w1', '1');
    await b.set('w2', '2');
    expect((await got).toString()).toBe('now');
    await expect(waited).resolves.toBeNull();
    a.close();
    b.close();
  });

  it('a timeout names the keys it waited for', async () => {
    const a = await connect();
    await a.set('present', '1');
    await expect(a.wait(['present', 'missing/a', 'missing/b'], 200)).rejects.toThrow(
      new StoreError('store wait(present, missing/a, missing/b): timed out after 200 ms waiting for keys: missing/a, missing/b'),
    );
    await expect(a.get('never', 100)).rejects.toThrow(/waiting for keys: never$/);
    a.close();
  });

  it('refuses a wrong token and garbage, logs them, and keeps serving', async () => {
    await expect(StoreClient.connect({ host: '127.0.0.1', port: server.port, token: 'nope', connectTimeoutMs: 3000 })).rejects.toThrow(
      /refused this client/,
    );
    const rogue = net.connect({ host: '127.0.0.1', port: server.port });
    rogue.resume();
    await new Promise<void>((resolve) => rogue.once('connect', resolve));
    rogue.write('\x00\x01garbage garbage garbage garbage garbage garbage');
    await new Promise<void>((resolve) => rogue.once('close', () => resolve()));
    expect(logged.some((l) => /refused connection from 127\.0\.0\.1:\d+: wrong or missing job token/.test(l))).toBe(true);
    expect(logged.some((l) => /refused connection from 127\.0\.0\.1:\d+: not a webtron handshake/.test(l))).toBe(true);
    const ok = await connect();
    await ok.set('still', 'works');
    expect((await ok.get('still')).toString()).toBe('works');
    ok.close();
  });

  it('a port already in use is a clear error', async () => {
    await expect(StoreServer.start({ host: '127.0.0.1', port: server.port, token })).rejects.toThrow(
      new RegExp(`cannot listen for the store on 127\\.0\\.0\\.1:${server.port}: port already in use; pick another port`),
    );
  });

  it('an unreachable store is reported with what to check', async () => {
    await expect(StoreClient.connect({ host: '127.0.0.1', port: 1, token, connectTimeoutMs: 300 })).rejects.toThrow(
      /cannot reach the store at 127\.0\.0\.1:1 within 300 ms .*MASTER_ADDR\/MASTER_PORT/,
    );
  });
});
