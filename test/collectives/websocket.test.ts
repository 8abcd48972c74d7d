/**
 * The WebSocket link (WEBTRON_TRANSPORT=ws): the same frames and HMAC handshake as TCP, carried in
 * binary messages, in a ring that mixes it with TCP. Every op at every size against direct sums, over real processes; and a dialer
 * without the job's token is refused, the rank's log saying so.
 */
import { createWebSocketStream, WebSocket } from 'ws';
import { describe, expect, it } from 'vitest';
import { dialHandshake } from '../../src/collectives/auth.js';
import { StoreClient, StoreServer } from '../../src/collectives/store.js';
import { Transport } from '../../src/collectives/transport.js';
import { runJob } from '../helpers/job.js';

describe('collectives over WebSocket links', () => {
  it('every op, every size, exact, with 3 real processes on a ring of two WebSocket links and one TCP link', async () => {
    // Ranks 0 and 1 listen on WebSocket, rank 2 on TCP: rank 1 dials 0 and rank 2 dials 1 over
    // WebSocket, rank 0 dials 2 over TCP; each dialer follows the link its peer published.
    const results = await runJob({
      world: 3,
      scenario: 'matrix',
      params: { big: 2_000_000 },
      env: { WEBTRON_TIMEOUT_MS: '60000' },
      rankEnv: (rank) => ({ WEBTRON_TRANSPORT: rank === 2 ? 'tcp' : 'ws' }),
    });
    for (const r of results) {
      const checks = r.lines.filter((l) => 'check' in l);
      const failed = checks.filter((l) => l.ok !== true);
      expect(failed, `rank ${r.rank}: ${JSON.stringify(failed)}\n${r.stderr}`).toEqual([]);
      expect(checks.length, `rank ${r.rank} ran the whole matrix`).toBe(70);
      expect(r.code).toBe(0);
    }
  });

  it("a dialer without the job's token is refused and the rank logs it; one with it gets in", async () => {
    const token = 'websocket-token';
    const store = await StoreServer.start({ host: '127.0.0.1', port: 0, token, log: () => undefined });
    const client = await StoreClient.connect({ host: '127.0.0.1', port: store.port, token });
    const logged: string[] = [];
    const transport = await Transport.start({
      rank: 0,
      worldSize: 2,
      token,
      host: '127.0.0.1',
      port: 0,
      store: client,
      connectTimeoutMs: 5000,
      settings: { protocol: 1 },
      link: 'ws',
      log: (l) => logged.push(l),
    });
    const dial = async (secret: string) => {
      const ws = new WebSocket(`ws://127.0.0.1:${transport.port}/`);
      // The stream before 'open': the rank's challenge can come in the same packet as the upgrade.
      const stream = createWebSocketStream(ws);
      stream.on('error', () => undefined);
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      try {
        await dialHandshake(stream, secret, { kind: 'peer', rank: 1, worldSize: 2, settings: { protocol: 1 } }, 3000);
        return 'accepted';
      } catch (error) {
        return (error as Error).message;
      } finally {
        stream.destroy();
      }
    };
    try {
      expect(await dial('not-the-token')).toMatch(/refused after the challenge/);
      await new Promise((r) => setTimeout(r, 100));
      expect(logged).toEqual([
        expect.stringMatching(/^webtron rank 0: refused connection from 127\.0\.0\.1:\d+: wrong or missing job token/),
      ]);
      expect(await dial(token)).toBe('accepted');
      expect(logged).toHaveLength(1);
    } finally {
      await transport.close(false);
      client.close();
      await store.close();
    }
  });
});
