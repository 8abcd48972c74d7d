import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { initProcessGroup } from '../../src/collectives/init.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import type { StateDtypes } from '../../src/optimizer/optimizer-base.js';
import { runWorkers } from '../helpers/job.js';

const WORKER = fileURLToPath(new URL('../../dist/test/workers/optimizer-worker.js', import.meta.url));

const job = (world: number, config: Record<string, unknown>) => runWorkers(WORKER, world, config);

describe("DistributedOptimizer and its non-distributed twin: Megatron's three precision rows", () => {
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
    [3, true, 1.0, false, 'bfloat16'],
    [2, false, 1.0, false, 'bfloat16'],
    [1, true, 1.0, false, 'float16'],
    [2, true, 1.0, false, 'float16', 2],
    [3, true, 0, true, 'float16', 3],
    [4, true, 1.0, false, 'float16'],
    [2, false, 1.0, false, 'float16', 2],
    // A device demanding 256-byte storage offsets: shard starts at d = 4 are not aligned to it.
    [4, true, 1.0, false, 'float32', undefined, 256],
    [4, true, 1.0, false, 'bfloat16', undefined, 256],
    [4, true, 1.0, false, 'float16', 3, 256],
    // Grads synced and params gathered in chunks of 96 B: several per bucket.
    [2, true, 1.0, true, 'float32', undefined, undefined, 96],
    [3, true, 1.0, false, 'bfloat16', undefined, undefined, 96],
    [2, true, 1.0, false, 'float16', 2, undefined, 96],
  ])(
    'world %i, distributed %s, clip %s, overlapped param gather %s, params %s, inf at step %s, alignment %s, chunks of %s B: k steps equal single-process Adam on the averaged grads; memory matches the table',
    async (world, distributed, clip, overlapParamGather = false, dtype = 'float32', infAt?: number, alignment?: number, chunkBytes?: number) => {
      const ranks = await job(world, {
        distributed,
        clip,
        steps: 4,
        overlapParamGather,
        dtype,
        ...(infAt ? { infAt } : {}),
        ...(alignment ? { alignment } : {}),
        ...(chunkBytes ? { chunkBytes } : {}),
      });
      for (const [rank, lines] of ranks.entries()) {
        const failed = lines.filter((l) => 'check' in l && l.ok !== true);
        expect(failed, `rank ${rank}: ${JSON.stringify(lines)}`).toEqual([]);
        const checks = 5 + (dtype === 'float32' ? 0 : 1) + (dtype === 'float16' ? 1 : 0) + (infAt ? 1 : 0);
        expect(
          lines.filter((l) => 'check' in l),
          JSON.stringify(lines),
        ).toHaveLength(checks);
        const accuracy = lines.find((l) => String(l.check).startsWith('params equal'))!.detail as { clippedSteps: number };
        expect(accuracy.clippedSteps).toBe(clip > 0 ? (infAt ? 3 : 4) : 0);
      }
    },
  );

  it.each([
    [2, 'float32', { expAvg: 'bfloat16', expAvgSq: 'bfloat16' }],
    [3, 'bfloat16', { expAvg: 'float16', expAvgSq: 'bfloat16' }],
    [4, 'float16', { expAvg: 'bfloat16', expAvgSq: 'float32' }],
    [1, 'float32', { expAvg: 'float32', expAvgSq: 'float16' }],
    [2, 'bfloat16', { mainGrads: 'bfloat16' }],
    [3, 'bfloat16', { expAvg: 'bfloat16', expAvgSq: 'bfloat16', mainParams: 'float16', mainGrads: 'bfloat16' }],
    [2, 'float16', { mainParams: 'float16' }],
  ] as [number, 'float32' | 'bfloat16' | 'float16', StateDtypes][])(
    'precision-aware optimizer, world %i, params %s, state %j: k steps equal single-process Adam with the state rounded; memory matches',
    async (world, dtype, stateDtypes) => {
      const ranks = await job(world, { distributed: true, clip: 1.0, steps: 4, dtype, stateDtypes });
      for (const [rank, lines] of ranks.entries()) {
        const failed = lines.filter((l) => 'check' in l && l.ok !== true);
        expect(failed, `rank ${rank}: ${JSON.stringify(lines)}`).toEqual([]);
        const memory = lines.find((l) => l.check === 'memory by category')!.detail as { got: Record<string, number> };
        // The moments take 2 bytes each where 16-bit: a (1/d) shard of every bucket.
        const moments: (string | undefined)[] = [stateDtypes.expAvg, stateDtypes.expAvgSq];
        const bytesPerElement = moments.reduce((sum, t) => sum + (t === undefined || t === 'float32' ? 4 : 2), 0);
        expect(memory.got['optimizer-state']! % bytesPerElement).toBe(0);
      }
    },
  );

  it.each([
    [2, true, 'sgd', 0.9, 'float32', {}],
    [3, true, 'sgd', 0, 'bfloat16', {}],
    [2, false, 'sgd', 0.5, 'float16', {}],
    [2, false, 'lion', 0, 'float32', {}],
    [4, true, 'lion', 0, 'float16', {}],
    [3, true, 'lion', 0, 'bfloat16', { mainGrads: 'bfloat16' }],
  ] as [number, boolean, 'sgd' | 'lion', number, 'float32' | 'bfloat16' | 'float16', StateDtypes][])(
    'world %i, distributed %s, --optimizer %s (momentum %s), params %s, state %j: k steps equal the single-process update; memory matches',
    async (world, distributed, optimizer, sgdMomentum, dtype, stateDtypes) => {
      const ranks = await job(world, { distributed, clip: 1.0, steps: 4, dtype, stateDtypes, optimizer, sgdMomentum });
      for (const [rank, lines] of ranks.entries()) {
        const failed = lines.filter((l) => 'check' in l && l.ok !== true);
        expect(failed, `rank ${rank}: ${JSON.stringify(lines)}`).toEqual([]);
        expect(
          lines.some((l) => String(l.check).startsWith('params equal')),
          JSON.stringify(lines),
        ).toBe(true);
        const memory = lines.find((l) => l.check === 'memory by category')!.detail as { got: Record<string, number> };
        // One fp32 moment a param (Lion's exp_avg, SGD's momentum buffer), none for plain SGD.
        if (optimizer === 'sgd' && sgdMomentum === 0) expect(memory.got['optimizer-state']).toBe(0);
        else expect(memory.got['optimizer-state']).toBeGreaterThan(0);
      }
    },
  );

  it('bf16 grads go with bf16 params only, and the optimizer is told about them (stateDtypes.mainGrads)', async () => {
    const ctx = await GpuContext.create();
    const dist = await initProcessGroup({ rank: 0, worldSize: 1 });
    const layoutOf = (dtype: 'float32' | 'bfloat16') =>
      computeLayout([{ name: 'w', shape: [64], dtype, gradDtype: 'bfloat16' }], { dataParallelSize: 1, distributedOptimizer: true });
    expect(() => new DistributedDataParallel(ctx, dist.group, layoutOf('float32'))).toThrow(
      /^params float32 with grads bfloat16: use fp32\/fp32, bf16\/fp32, fp16\/fp16 \(Megatron's three rows\) or bf16\/bf16 \(--main-grads-dtype bf16\)$/,
    );
    const ddp = new DistributedDataParallel(ctx, dist.group, layoutOf('bfloat16'));
    expect(() => createOptimizer(ctx, dist.group, ddp, { hyper: ADAMW_DEFAULTS })).toThrow(
      /^the grad buffer holds bf16 grads: say so with stateDtypes.mainGrads/,
    );
    createOptimizer(ctx, dist.group, ddp, { hyper: ADAMW_DEFAULTS, stateDtypes: { mainGrads: 'bfloat16' } }).destroy();
    ddp.destroy();
    ctx.destroy();
  });

  it('fp16 without the shader-f16 feature fails at start-up with what to do', async () => {
    const ctx = await GpuContext.create({ disableFeatures: ['shader-f16'] });
    const dist = await initProcessGroup({ rank: 0, worldSize: 1 });
    const layout = computeLayout([{ name: 'w', shape: [64], dtype: 'float16', gradDtype: 'float16' }], {
      dataParallelSize: 1,
      distributedOptimizer: true,
    });
    const ddp = new DistributedDataParallel(ctx, dist.group, layout);
    expect(() => createOptimizer(ctx, dist.group, ddp, { hyper: ADAMW_DEFAULTS })).toThrow(
      /^fp16 params need the shader-f16 feature, which adapter '.+' does not offer; use bf16 \(--bf16\) or fp32 instead$/,
    );
    ddp.destroy();
    ctx.destroy();
  });
});
