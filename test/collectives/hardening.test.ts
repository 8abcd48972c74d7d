/**
 * What a demanding operator tries: peers that disagree on settings or reductions, and a store that
 * a token holder (or a stranger) sends nonsense or floods.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { dialHandshake } from '../../src/collectives/auth.js';
import { checkSharedSettings } from '../../src/collectives/init.js';
import { rateLimitedLog } from '../../src/collectives/log-limit.js';
import { STORE_LIMITS, StoreClient, StoreServer, validateRequest } from '../../src/collectives/store.js';
import { runJob, type RankResult } from '../helpers/job.js';

const errorOf = (r: RankResult) => r.lines.find((l) => 'error' in l)?.error as string | undefined;

describe('ranks that disagree', () => {
  it('a different WEBTRON_SEGMENT_BYTES stops every rank at start-up, naming the setting and both values', async () => {
    // Before: the frames' lengths disagreed and the receiver spun at 98% CPU forever.
    const started = Date.now();
    const results = await runJob({
      world: 2,
      scenario: 'matrix',
      rankEnv: (rank) => ({ WEBTRON_SEGMENT_BYTES: rank === 0 ? '2400' : '2000' }),
    });
    for (const r of results) {
      expect(r.code, r.stderr).toBe(3);
      expect(errorOf(r)).toBe(
        'ranks disagree on segmentBytes (WEBTRON_SEGMENT_BYTES): rank 0: 2400, rank 1: 2000; give every rank the same value',
      );
    }
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('the same op with another reduction is a mismatch naming both', async () => {
    const results = await runJob({ world: 2, scenario: 'reduceMismatch', env: { WEBTRON_TIMEOUT_MS: '5000' } });
    for (const r of results) expect(r.code).toBe(1);
    expect(results.map(errorOf).join('\n')).toMatch(
      /collective mismatch at op #1: rank \d runs allReduce of 4000 B \(float32, (sum|max)\), this rank allReduce of 4000 B \(float32, (max|sum)\)/,
    );
  });

  it("an op with its own timeout waits past the group's (a checkpoint save's deadline), and without it does not", async () => {
    const patient = await runJob({
      world: 2,
      scenario: 'lateJoiner',
      params: { loopMs: 1500, iterations: 10_000 },
      env: { WEBTRON_TIMEOUT_MS: '300' },
    });
    for (const r of patient) expect(r.code, JSON.stringify(r.lines)).toBe(0);
    const impatient = await runJob({ world: 2, scenario: 'lateJoiner', params: { loopMs: 1500 }, env: { WEBTRON_TIMEOUT_MS: '300' } });
    expect(errorOf(impatient[0]!)).toMatch(/^allGather of 32 B failed on rank 0 \(peer rank 1\): timed out after 300 ms/);
  });

  it("checkSharedSettings names the first differing setting with every rank's value", () => {
    const mine = { segmentBytes: 1024, protocol: 2 };
    expect(() =>
      checkSharedSettings(mine, [
        { rank: 0, settings: mine },
        { rank: 1, settings: mine },
      ]),
    ).not.toThrow();
    expect(() =>
      checkSharedSettings(mine, [
        { rank: 0, settings: mine },
        { rank: 1, settings: { segmentBytes: 1024, protocol: 1 } },
      ]),
    ).toThrow('ranks disagree on protocol (the webtron version): rank 0: 2, rank 1: 1; give every rank the same value');
    expect(() =>
      checkSharedSettings(mine, [
        { rank: 0, settings: mine },
        { rank: 1, settings: undefined },
      ]),
    ).toThrow(/rank 1: undefined/);
  });
});

/** An authenticated store connection that sends raw JSON messages and reads raw answers. */
async function rawStoreClient(port: number, token: string) {
  const socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  const leftover = await dialHandshake(socket, token, { kind: 'store' }, 5000);
  let pending = Buffer.from(leftover);
  const answers: unknown[] = [];
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.byteLength >= 4 && pending.byteLength >= 4 + pending.readUInt32LE(0)) {
      const n = pending.readUInt32LE(0);
      answers.push(JSON.parse(pending.subarray(4, 4 + n).toString('utf8')));
      pending = pending.subarray(4 + n);
    }
  });
  const send = async (message: unknown) => {
    const body = Buffer.from(JSON.stringify(message));
    const length = Buffer.alloc(4);
    length.writeUInt32LE(body.byteLength);
    const before = answers.length;
    socket.write(Buffer.concat([length, body]));
    for (let i = 0; i < 200 && answers.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    return answers[before];
  };
  return { send, close: () => socket.destroy() };
}

describe('the store under abuse', () => {
  const token = 'hardening-token';

  it('a malformed request from a token holder is answered with an error and the store keeps serving', async () => {
    const server = await StoreServer.start({ host: '127.0.0.1', port: 0, token, log: () => undefined });
    try {
      const raw = await rawStoreClient(server.port, token);
      // Before: this threw inside the socket handler and killed the store's process.
      expect(await raw.send({ id: 1, cmd: 'get', keys: 5 })).toEqual({
        id: 1,
        ok: false,
        error: "bad request: field 'keys' must be a non-empty array of strings",
      });
      expect(await raw.send({ id: 2, cmd: 'set', key: 'k'.repeat(STORE_LIMITS.keyBytes + 1), value: '' })).toMatchObject({
        id: 2,
        ok: false,
        error: expect.stringMatching(/field 'key' is longer than 1024 B/) as unknown,
      });
      expect(await raw.send({ id: 3, cmd: 'wait', keys: ['a'], timeoutMs: -1 })).toMatchObject({ ok: false });
      expect(await raw.send({ id: 4, cmd: 'nope' })).toMatchObject({ ok: false, error: 'bad request: unknown store command "nope"' });
      expect(await raw.send([1, 2])).toMatchObject({ id: -1, ok: false });
      expect(await raw.send({ id: 5, cmd: 'add', key: 'n', delta: 2 })).toEqual({ id: 5, ok: true, result: 2 });
      raw.close();
      const client = await StoreClient.connect({ host: '127.0.0.1', port: server.port, token });
      await client.set('still', 'up');
      expect((await client.get('still')).toString()).toBe('up');
      client.close();
    } finally {
      await server.close();
    }
  });

  it('validateRequest accepts what StoreClient sends and bounds every size', () => {
    expect(validateRequest({ id: 1, cmd: 'set', key: 'a', value: 'AAAA' })).toHaveProperty('request');
    expect(validateRequest({ id: 1, cmd: 'get', keys: ['a', 'b'], timeoutMs: 1000 })).toHaveProperty('request');
    expect(validateRequest({ id: 1, cmd: 'compareSet', key: 'a', expected: null, desired: 'AA==' })).toHaveProperty('request');
    expect(validateRequest({ id: 1, cmd: 'numKeys' })).toHaveProperty('request');
    expect(validateRequest({ id: 1, cmd: 'set', key: 'a', value: 'A'.repeat(((STORE_LIMITS.valueBytes + 8) * 4) / 3) })).toEqual({
      id: 1,
      error: `field 'value' is larger than ${STORE_LIMITS.valueBytes} B`,
    });
    expect(
      validateRequest({ id: 1, cmd: 'check', keys: Array.from({ length: STORE_LIMITS.keysPerRequest + 1 }, () => 'k') }),
    ).toHaveProperty('error');
    expect(validateRequest({ id: 1.5, cmd: 'numKeys' })).toHaveProperty('error');
    expect(validateRequest(null)).toEqual({ id: null, error: 'a store request must be a JSON object' });
  });

  it('connections that never authenticate are capped and closed at the deadline; the refusal log cannot flood', async () => {
    const logged: string[] = [];
    const server = await StoreServer.start({
      host: '127.0.0.1',
      port: 0,
      token,
      authTimeoutMs: 800,
      maxPendingConnections: 8,
      log: (l) => logged.push(l),
    });
    const sockets: net.Socket[] = [];
    try {
      const closed: boolean[] = [];
      for (let i = 0; i < 40; i++) {
        const s = net.connect({ host: '127.0.0.1', port: server.port });
        s.on('error', () => undefined);
        s.resume();
        const index = i;
        closed[index] = false;
        s.on('close', () => (closed[index] = true));
        sockets.push(s);
      }
      await new Promise((r) => setTimeout(r, 300));
      // Over the cap: closed at once; the first 8 are held until their deadline.
      expect(closed.filter(Boolean).length).toBeGreaterThanOrEqual(32);
      await new Promise((r) => setTimeout(r, 1500));
      expect(closed.every(Boolean)).toBe(true);
      // 40 refusals, at most 10 lines in this minute.
      expect(logged.length).toBeLessThanOrEqual(10);
      expect(logged[0]).toMatch(/^webtron store: refused connection from 127\.0\.0\.1:\d+: /);
      // A real client gets in once the squatters are gone.
      const client = await StoreClient.connect({ host: '127.0.0.1', port: server.port, token });
      expect(await client.add('ok', 1)).toBe(1);
      client.close();
    } finally {
      for (const s of sockets) s.destroy();
      await server.close();
    }
  });

  it('rateLimitedLog says how many lines it dropped once the window turns', async () => {
    const out: string[] = [];
    const log = rateLimitedLog((l) => out.push(l), { lines: 2, windowMs: 100, what: 'refusals' });
    for (let i = 0; i < 5; i++) log(`line ${i}`);
    expect(out).toEqual(['line 0', 'line 1']);
    await new Promise((r) => setTimeout(r, 120));
    log('line 5');
    expect(out.slice(2)).toEqual([expect.stringMatching(/^webtron: 3 more refusals in the last 0 s not shown$/) as unknown, 'line 5']);
  });
});
