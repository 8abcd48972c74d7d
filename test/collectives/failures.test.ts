import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { dialHandshake } from '../../src/collectives/auth.js';
import { StoreClient } from '../../src/collectives/store.js';
import { peerAddressKey } from '../../src/collectives/transport.js';
import { runJob, startJob, type RankResult } from '../helpers/job.js';

const errorOf = (r: RankResult) => r.lines.find((l) => 'error' in l)?.error as string | undefined;
const noUnhandled = (rs: RankResult[]) => {
  for (const r of rs) expect(r.lines.filter((l) => 'unhandledRejection' in l)).toEqual([]);
};

async function sendGarbage(port: number): Promise<void> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  socket.resume(); // read (and drop) the challenge, so that 'close' is emitted
  await new Promise<void>((resolve) => socket.once('connect', resolve));
  socket.write(Buffer.from(`GET / HTTP/1.1\r\nHost: x\r\n\r\n${'garbage'.repeat(100)}`));
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    setTimeout(() => {
      socket.destroy();
      resolve();
    }, 3000);
  });
}

describe('collective failures', () => {
  it('a worker killed mid-op makes every survivor reject, naming op, size, rank and peer', async () => {
    let killedAt = 0;
    const job = await startJob({
      world: 3,
      scenario: 'loop',
      params: { elements: 4 << 20, iterations: 100_000 },
      env: { WEBTRON_TIMEOUT_MS: '5000' },
      onLine: (rank, line, child) => {
        if (rank === 1 && line.started) {
          killedAt = Date.now();
          child.kill('SIGKILL');
        }
      },
    });
    const results = await job.done;
    expect(results[1]!.signal).toBe('SIGKILL');
    for (const r of [results[0]!, results[2]!]) {
      expect(r.code, r.stderr).toBe(1);
      expect(errorOf(r)).toMatch(new RegExp(`^allReduce of ${(4 << 20) * 4} B failed on rank ${r.rank} \\(peer rank \\d\\): `));
      // Within the op timeout of the kill (plus process start-up slack).
      expect(r.ms - (killedAt - (Date.now() - r.ms))).toBeLessThan(5000 + 10_000);
    }
    noUnhandled(results);
  });

  it('a worker that stops answering times out by name', async () => {
    const job = await startJob({
      world: 2,
      scenario: 'loop',
      params: { elements: 1 << 16, iterations: 1_000_000 },
      env: { WEBTRON_TIMEOUT_MS: '2000' },
      onLine: (rank, line, child) => {
        if (rank === 1 && line.started) child.kill('SIGSTOP');
      },
    });
    const rank0 = await new Promise<RankResult>((resolve) => {
      void job.done.then((rs) => resolve(rs[0]!));
      job.children[0]!.on('exit', () => {
        job.children[1]!.kill('SIGKILL');
      });
    });
    expect(errorOf(rank0)).toMatch(/^allReduce of 262144 B failed on rank 0 \(peer rank 1\): timed out after 2000 ms waiting for rank 1$/);
  });

  it('rogue clients (garbage, wrong token) to the store and to a rank are refused while the job runs on', async () => {
    const rogue: Promise<unknown>[] = [];
    let port = 0;
    let token = '';
    const job = await startJob({
      world: 2,
      scenario: 'loop',
      params: { elements: 1 << 18, loopMs: 8000 },
      onLine: (rank, line) => {
        if (rank !== 0 || !line.started) return;
        rogue.push(
          (async () => {
            await sendGarbage(port);
            await expect(StoreClient.connect({ host: '127.0.0.1', port, token: 'wrong', connectTimeoutMs: 5000 })).rejects.toThrow(
              /refused this client: refused after the challenge/,
            );
            const client = await StoreClient.connect({ host: '127.0.0.1', port, token });
            const address = JSON.parse((await client.get(peerAddressKey(1))).toString()) as { host: string; port: number };
            client.close();
            await sendGarbage(address.port);
            const socket = net.connect(address);
            await new Promise<void>((resolve) => socket.once('connect', resolve));
            await expect(dialHandshake(socket, 'wrong', { kind: 'peer', rank: 0, worldSize: 2 }, 5000)).rejects.toThrow(
              /refused after the challenge/,
            );
            socket.destroy();
          })(),
        );
      },
    });
    port = job.port;
    token = job.token;
    const results = await job.done;
    await Promise.all(rogue);
    expect(rogue.length).toBe(1);
    for (const r of results) {
      expect(r.lines.at(-1), r.stderr).toMatchObject({ done: true });
      expect(r.code).toBe(0);
      expect((r.lines.find((l) => 'iterations' in l)?.iterations as number) > 1).toBe(true);
    }
    expect(results[0]!.stderr).toMatch(/webtron store: refused connection from 127\.0\.0\.1:\d+: not a webtron handshake/);
    expect(results[0]!.stderr).toMatch(/webtron store: refused connection from 127\.0\.0\.1:\d+: wrong or missing job token/);
    expect(results[1]!.stderr).toMatch(/webtron rank 1: refused connection from 127\.0\.0\.1:\d+: not a webtron handshake/);
    expect(results[1]!.stderr).toMatch(/webtron rank 1: refused connection from 127\.0\.0\.1:\d+: wrong or missing job token/);
  });

  it('mismatched collectives are an error on the rank that sees them, never mixed data', async () => {
    const results = await runJob({ world: 2, scenario: 'mismatch', env: { WEBTRON_TIMEOUT_MS: '5000' } });
    const errors = results.map(errorOf);
    expect(errors.some((e) => /collective mismatch at op #1: rank \d runs (broadcast|allReduce) of \d+ B/.test(e ?? ''))).toBe(true);
    for (const r of results) expect(r.code).toBe(1);
    noUnhandled(results);
  });

  it('a join timeout says k/n workers joined and which ranks are missing', async () => {
    const results = await runJob({ world: 3, ranks: [0, 1], scenario: 'loop', env: { WEBTRON_JOIN_TIMEOUT_MS: '1500' } });
    for (const r of results) {
      expect(r.code).toBe(3);
      expect(errorOf(r)).toMatch(/^join timed out after 1500 ms: 2\/3 workers joined; missing ranks: 2 /);
    }
  });

  it('a worker without WEBTRON_JOB_TOKEN is told what to do', async () => {
    const results = await runJob({ world: 2, ranks: [0], scenario: 'loop', env: { WEBTRON_JOB_TOKEN: '' } });
    expect(errorOf(results[0]!)).toMatch(/^WEBTRON_JOB_TOKEN is not set: give every worker the same secret/);
  });
});
