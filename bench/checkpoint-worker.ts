/**
 * One rank of `npm run bench -- checkpoint` (spawned by bench/checkpoint.ts): an fp32 model of
 * `params` elements with the distributed optimizer after one step, saved with every rank writing
 * at once, then loaded back from a cold page cache (when the bench runs as root); then the same
 * save again in the background (--async-save) while training steps (grad sync and Adam) go on.
 * Rank 0 prints one JSON line.
 */
import { loadCheckpoint, reserveAsyncSaveMemory, saveCheckpoint, startAsyncSave } from '../src/checkpoint/checkpoint.js';
import { DistributedDataParallel } from '../src/ddp/ddp.js';
import { computeLayout } from '../src/ddp/layout.js';
import { GpuContext } from '../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../src/optimizer/adam-math.js';
import { createOptimizer } from '../src/optimizer/optimizer.js';
import { dropCaches } from './page-cache.js';
import { runRank } from './rank-main.js';
import { median } from './timing.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { params: number; dir: string; tensors: number };
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

runRank(600_000, async (dist) => {
  const ctx = await GpuContext.create();
  const { rank, worldSize } = dist.info;
  const per = Math.floor(config.params / config.tensors);
  const model = Array.from({ length: config.tensors }, (_, i) => ({
    name: `layers.${i}.weight`,
    shape: [i === config.tensors - 1 ? config.params - per * (config.tensors - 1) : per],
    dtype: 'float32' as const,
    gradDtype: 'float32' as const,
  }));
  const layout = computeLayout(model, { dataParallelSize: worldSize, distributedOptimizer: true });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout);
  const optimizer = createOptimizer(ctx, dist.group, ddp, { hyper: ADAMW_DEFAULTS });
  const buffer = ddp.buffers[0]!;
  const chunk = Float32Array.from({ length: 1 << 22 }, (_, i) => Math.sin(i) * 0.02);
  for (let at = 0; at < buffer.layout.numel; at += chunk.length) {
    const n = Math.min(chunk.length, buffer.layout.numel - at);
    ctx.transfers.upload(buffer.params, chunk.subarray(0, n), at * 4);
    ctx.transfers.upload(buffer.grads, chunk.subarray(0, n), at * 4);
  }
  ddp.paramsWritten();
  await ddp.finishGradSync();
  await optimizer.step();
  await ctx.sync();
  const parts = { group: dist.group, ddp, optimizer };

  await dist.group.barrier();
  let t0 = performance.now();
  const saved = await saveCheckpoint(config.dir, parts, { iteration: 1 });
  const saveMs = performance.now() - t0;
  const cold = rank === 0 ? dropCaches() : false;
  await dist.group.barrier();
  t0 = performance.now();
  const loaded = await loadCheckpoint(config.dir, parts);
  await dist.group.barrier();
  const loadMs = performance.now() - t0;
  // Bytes every rank read, summed in MiB (fp32 keeps those exact enough).
  const mib = new Float32Array([loaded.bytesRead / 2 ** 20]);
  await dist.group.allReduce(mib, 'sum');

  // A training step without the model: grad sync and the optimizer step (the grads are zeros; Adam does the same work).
  const step = async () => {
    const t = performance.now();
    ddp.zeroGradBuffer();
    await ddp.finishGradSync();
    await optimizer.step();
    await ctx.sync();
    return performance.now() - t;
  };
  await step();
  const alone: number[] = [];
  for (let i = 0; i < 5; i++) alone.push(await step());
  // Async: host memory reserved once (as the trainer does before its first iteration); then blocked
  // while the state is copied into it, steps while every rank's writer runs, and the commit.
  t0 = performance.now();
  const memory = reserveAsyncSaveMemory(parts);
  const reserveMs = performance.now() - t0;
  await dist.group.barrier();
  t0 = performance.now();
  const pending = await startAsyncSave(config.dir, parts, { iteration: 2 }, memory);
  const startMs = performance.now() - t0;
  const during: number[] = [];
  for (;;) {
    const flag = new Float32Array([pending.state === 'writing' ? 1 : 0]);
    await dist.group.allReduce(flag, 'max');
    if (flag[0] === 0) break;
    during.push(await step());
  }
  const writtenMs = performance.now() - t0;
  const t1 = performance.now();
  await pending.finish();
  const finishMs = performance.now() - t1;
  if (rank === 0) {
    say({
      save_ms: saveMs,
      load_ms: loadMs,
      checkpoint_bytes: saved.totalBytes,
      bytes_read_mib: mib[0],
      cold_load: cold,
      async_blocked_ms: startMs + finishMs,
      async_reserve_ms: reserveMs,
      async_copy_ms: startMs,
      async_commit_ms: finishMs,
      async_write_ms: writtenMs,
      step_ms: median(alone),
      step_ms_during_write: during.length > 0 ? median(during) : null,
      steps_during_write: during.length,
    });
  }
});
