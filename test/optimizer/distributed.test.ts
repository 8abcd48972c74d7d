import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runWorkers } from '../helpers/job.js';

const WORKER = fileURLToPath(new URL('../../dist/test/workers/optimizer-worker.js', import.meta.url));

const job = (world: number, config: Record<string, unknown>) => runWorkers(WORKER, world, config);

describe('DistributedOptimizer and its non-distributed twin: Megatron\'s three precision rows', () => {
  it.each([
    [1, true, 0],
    [2, true, 1.0],
    [3, true, 1.0],
    [4, true, 0],
    [2, false, 1.0],
    [3, true, 1.0, true],
    [1, true, 1.0, false, 'bfloat16'],
    [2, true, 1.0, false, 'bfloat16'],
    [4, true, 0, true, 'bfloat16'],
    [2, false, 1.0, false, 'bfloat16'],
    [1, true, 1.0, false, 'float16'],
    [2, true, 1.0, false, 'float16', 2],
    [3, true, 0, true, 'float16', 3],
    [2, false, 1.0, false, 'float16', 2],
  ])('world %i, distributed %s, clip %s, overlapped param gather %s, params %s, inf at step %s: k steps equal single-process Adam on the averaged grads; memory matches the table', async (world, distributed, clip, overlapParamGather = false, dtype = 'float32', infAt?: number) => {
    const ranks = await job(world, { distributed, clip, steps: 4, overlapParamGather, dtype, ...(infAt ? { infAt } : {}) });
    for (const [rank, lines] of ranks.entries()) {
      const failed = lines.filter((l) => 'check' in l && l.ok !== true);
      expect(failed, `rank ${rank}: ${JSON.stringify(lines)}`).toEqual([]);
      const checks = 4 + (dtype === 'float32' ? 0 : 1) + (dtype === 'float16' ? 1 : 0) + (infAt ? 1 : 0);
      expect(lines.filter((l) => 'check' in l), JSON.stringify(lines)).toHaveLength(checks);
      const accuracy = lines.find((l) => String(l.check).startsWith('params equal'))!.detail as { clippedSteps: number };
      expect(accuracy.clippedSteps).toBe(clip > 0 ? (infAt ? 3 : 4) : 0);
    }
  });
});
