/**
 * One rank of `npm run bench -- optimizer` (spawned by bench/optimizer.ts with RANK, WORLD_SIZE,
 * MASTER_* set): a model of `params` fp32 elements, grad sync plus optimizer step, timed per phase.
 * Rank 0 prints one JSON line.
 */
import { DistributedDataParallel } from '../src/ddp/ddp.js';
import { computeLayout } from '../src/ddp/layout.js';
import { GpuContext } from '../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../src/optimizer/adam-math.js';
import { createOptimizer } from '../src/optimizer/optimizer.js';
import { median } from './timing.js';
import { runRank } from './rank-main.js';

const config = JSON.parse(process.argv[2]!) as { params: number; distributed: boolean; steps: number; bucketSize?: number };

runRank(300_000, async (dist) => {
  const ctx = await GpuContext.create();
  const { rank, worldSize } = dist.info;
  const quarter = Math.floor(config.params / 4);
  const model = [0, 1, 2, 3].map((i) => ({
    name: `w${i}`,
    shape: [i === 3 ? config.params - 3 * quarter : quarter],
    dtype: 'float32' as const,
    gradDtype: 'float32' as const,
  }));
  const layout = computeLayout(model, {
    dataParallelSize: worldSize,
    distributedOptimizer: config.distributed,
    ...(config.bucketSize ? { bucketSize: config.bucketSize } : {}),
  });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout);
  const optimizer = createOptimizer(ctx, dist.group, ddp, { hyper: ADAMW_DEFAULTS, clipGrad: 1 });
  const grads = new Float32Array(layout.buffers[0]!.numel).fill(0.01 * (rank + 1));
  const steps: number[] = [];
  const phases: Record<string, number[]> = {};
  for (let i = 0; i < config.steps + 1; i++) {
    ddp.zeroGradBuffer();
    ctx.transfers.upload(ddp.buffers[0]!.grads, grads);
    await ctx.sync();
    await dist.group.barrier();
    ddp.phases.reset();
    const t0 = performance.now();
    await ddp.finishGradSync();
    await optimizer.step();
    if (i === 0) continue; // warm-up: pipelines, connections
    steps.push(performance.now() - t0);
    for (const [name, ms] of Object.entries(ddp.phases.ms)) {
      phases[name] ??= [];
      phases[name].push(ms);
    }
  }
  const live = ctx.memoryReport().live;
  if (rank === 0) {
    process.stdout.write(
      `${JSON.stringify({
        bench: 'optimizer',
        world: worldSize,
        distributed: config.distributed,
        params: config.params,
        step_ms: median(steps),
        phases: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, median(v)])),
        model_state_bytes_per_rank: live.params + live.grads + live['main-params'] + live['optimizer-state'],
      })}\n`,
    );
  }
});
