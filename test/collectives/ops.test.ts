import { describe, expect, it } from 'vitest';
import { runJob } from '../helpers/job.js';

// Every op for worlds 1-4 and sizes 0, 1, odd and 800k elements (3.2 MB: three 256 KiB segments in
// every rank's chunk at world 4, six at world 2), each rank checking its result exactly against
// direct sums of every rank's (deterministic) input.
describe.each([1, 2, 3, 4])('collectives with %i real processes on loopback', (world) => {
  it('every op, every size, exact', async () => {
    const results = await runJob({
      world,
      scenario: 'matrix',
      params: { big: 800_000 },
      env: { WEBTRON_TIMEOUT_MS: '60000', WEBTRON_SEGMENT_BYTES: String(256 * 1024) },
    });
    for (const r of results) {
      const checks = r.lines.filter((l) => 'check' in l);
      const failed = checks.filter((l) => l.ok !== true);
      expect(failed, `rank ${r.rank}: ${JSON.stringify(failed)}\n${r.stderr}`).toEqual([]);
      expect(checks.length, `rank ${r.rank} ran the whole matrix`).toBe(70);
      expect(r.lines.at(-1), `rank ${r.rank}: ${r.stderr}`).toMatchObject({ done: true });
      expect(r.code).toBe(0);
    }
  });
});
