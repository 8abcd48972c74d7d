import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lcm } from '../../src/ddp/layout.js';
import { runWorkers } from '../helpers/job.js';

const WORKER = fileURLToPath(new URL('../../dist/test/workers/ddp-worker.js', import.meta.url));

/** Every rank's checks passed and every rank finished. */
function expectChecksPassed(ranks: Record<string, unknown>[][]): void {
  for (const [rank, lines] of ranks.entries()) {
    expect(
      lines.filter((l) => 'check' in l && l.ok !== true),
      `rank ${rank}: ${JSON.stringify(lines)}`,
    ).toEqual([]);
    expect(lines.at(-1)).toEqual({ done: true });
  }
}

const job = (world: number, config: Record<string, unknown>) => runWorkers(WORKER, world, config);

describe('DistributedDataParallel on real processes', () => {
  it.each([
    [1, true, true],
    [2, true, true],
    [3, true, false],
    [3, false, true],
    [2, false, false],
  ])('world %i, distributed optimizer %s, overlap %s: params broadcast, grads averaged', async (world, distributed, overlap) => {
    const ranks = await job(world, { distributed, overlap, bucketSize: 100 });
    for (const [rank, lines] of ranks.entries()) {
      const failed = lines.filter((l) => 'check' in l && l.ok !== true);
      expect(failed, `rank ${rank}: ${JSON.stringify(lines)}`).toEqual([]);
      expect(lines.filter((l) => 'check' in l)).toHaveLength(4);
      expect(lines.at(-1)).toEqual({ done: true });
    }
    // Several buckets, and with the distributed optimizer each one splits into equal shards.
    const buckets = (ranks[0]![0]!.layout as { buckets: [number, number][] }).buckets;
    expect(buckets.length).toBeGreaterThan(2);
    if (distributed) for (const [s, e] of buckets) expect((e - s) % lcm(world, 128)).toBe(0);
  });

  // Buckets synced in several chunks (192 B each: three slices of every shard at world 2, an
  // uneven last one), fp32 and fp16 grads, reduce-scatter and all-reduce.
  it.each([
    [2, true, true, false],
    [3, true, false, true],
    [3, false, true, false],
    [2, false, false, true],
  ])(
    'world %i, distributed optimizer %s, overlap %s, fp16 %s: grads averaged chunk by chunk',
    async (world, distributed, overlap, fp16) => {
      const ranks = await job(world, { distributed, overlap, bucketSize: 100, fp16, chunkBytes: 192 });
      expectChecksPassed(ranks);
      // Every bucket made more than one chunk.
      const chunks = (ranks[0]![0]!.layout as { chunks: number[] }).chunks;
      expect(Math.min(...chunks)).toBeGreaterThanOrEqual(2);
    },
  );

  // --grad-reduce-in-bf16: fractional grads that bf16 rounds, each element checked against what
  // the ring at world 2 must give (the other rank's value rounded to bf16, summed in fp32).
  it.each([
    [true, false, 0],
    [false, true, 0],
    [false, false, 192],
  ])(
    'world 2, bf16 on the wire, distributed optimizer %s, overlap %s, chunks of %i B: grads averaged as the ring rounds them',
    async (distributed, overlap, chunkBytes) => {
      const ranks = await job(2, { distributed, overlap, bucketSize: 100, bf16: true, chunkBytes });
      expectChecksPassed(ranks);
    },
  );

  it('a param that never received a grad stops the sync with its name', async () => {
    const ranks = await job(2, { distributed: true, overlap: true, bucketSize: 200, skipReady: 'b1' });
    for (const lines of ranks) {
      expect(lines.find((l) => l.check === 'finishGradSync')).toMatchObject({
        ok: false,
        error: expect.stringMatching(/param\(s\) 'b1' never received a grad/) as unknown,
      });
    }
  });
});
