/**
 * --log-straggler: the report from every rank's times, and a run where one rank is slowed on
 * purpose; --distributed-timeout-minutes: how long the others wait for such a rank.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stragglerReport } from '../../src/train/stragglers.js';
import { dir, TINY, train } from '../helpers/train.js';

describe('--log-straggler', () => {
  it('the slowest rank is the one with the most own time (step minus the grad-sync wait); its phase is the furthest above the median', () => {
    // Rank 2 loads data slowly; the others wait for it in the grad sync; rank 3 computes a little slower.
    const times = [
      { step: 100, data: 2, gradSync: 60 },
      { step: 100, data: 2, gradSync: 58 },
      { step: 101, data: 62, gradSync: 1 },
      { step: 100, data: 2, gradSync: 50 },
    ];
    const r = stragglerReport(times, 2);
    expect(r.step).toEqual({ min: 100, median: 100, max: 101 });
    // Own times 40, 42, 100, 50.
    expect(r.own).toEqual({ min: 40, median: 46, max: 100 });
    expect(r.slowest).toEqual([
      { rank: 2, ms: 100 },
      { rank: 3, ms: 50 },
    ]);
    expect(r.fastest).toEqual([
      { rank: 0, ms: 40 },
      { rank: 1, ms: 42 },
    ]);
    // Rank 2's data 62 against a median of 2; its compute 38 against 39.
    expect(r.phase).toBe('data');
    expect(r.excessMs).toBe(60);
    // A rank that computes slowly.
    const compute = stragglerReport([
      { step: 80, data: 1, gradSync: 40 },
      { step: 80, data: 1, gradSync: 0 },
    ]);
    expect([compute.slowest[0]!.rank, compute.phase]).toEqual([1, 'compute']);
  });

  it('a 2-rank run whose rank 1 sleeps in its data loader names rank 1 and the data phase, every log interval', async () => {
    const runDir = join(dir(), 'run');
    const r = await train(
      [
        ...TINY,
        '--train-iters',
        '4',
        '--global-batch-size',
        '4',
        '--nproc-per-node',
        '2',
        '--log-interval',
        '2',
        '--log-straggler',
        '--run-dir',
        runDir,
      ],
      { WEBTRON_FAULT_SLOW_DATA: '1:400' },
    );
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('stragglers: '));
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/: rank 1 is slowest, in data \(\+\d+\.\d ms over the median\)$/);
    const logged = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { stragglers?: { ranks: { data: number }[]; slowest: { rank: number }[] } })
      .filter((l) => l.stragglers);
    expect(logged).toHaveLength(2);
    // The sleep is in every one of rank 1's data loads: 400 ms an iteration at least (well above the
    // first interval's compile time, which differs between ranks by up to 200 ms on lavapipe).
    for (const l of logged) expect(l.stragglers!.ranks[1]!.data).toBeGreaterThan(400);
  });

  it('--distributed-timeout-minutes is how long a collective waits for a slow rank, whatever WEBTRON_TIMEOUT_MS says', async () => {
    const job = (minutes: string, env: NodeJS.ProcessEnv) =>
      train(
        [
          ...TINY,
          '--train-iters',
          '2',
          '--lr-warmup-iters',
          '1',
          '--global-batch-size',
          '4',
          '--nproc-per-node',
          '2',
          '--distributed-timeout-minutes',
          minutes,
        ],
        env,
      );
    // Rank 1 sleeps 2.5 s in its data; 0.01 minutes is 600 ms: rank 0 gives up on it.
    const short = await job('0.01', { WEBTRON_FAULT_SLOW_DATA: '1:2500', WEBTRON_TIMEOUT_MS: '60000' });
    expect(short.code).not.toBe(0);
    expect(short.stderr).toMatch(/failed on rank 0 \(peer rank 1\): timed out after 600 ms waiting for rank 1/);
    // Half a minute outlasts a 1.5 s sleep that WEBTRON_TIMEOUT_MS alone would not.
    const long = await job('0.5', { WEBTRON_FAULT_SLOW_DATA: '1:1500', WEBTRON_TIMEOUT_MS: '600' });
    expect(long.code, long.stderr).toBe(0);
  });
});
