/**
 * One rank of an optimizer test job (spawned by test/optimizer/distributed.test.ts). Grads are a
 * deterministic function of (rank, step, element); after k steps every rank's params must equal a
 * single-process Adam on the averaged grads (with the same clipping), and the GPU's live bytes must
 * match Megatron's table for fp32 params and grads: 16 B per param, or 8 + 8/d distributed.
 */
import { initProcessGroup } from '../../src/collectives/init.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS, adamReferenceStep } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { relativeError } from '../helpers/hash.js';
import { bf16ToFloat, floatToBf16 } from '../../src/collectives/reduce.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/optimizer/checkpoint.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { distributed: boolean; clip: number; steps: number; overlapParamGather?: boolean; dtype?: 'float32' | 'bfloat16'; checkpoint?: { save?: string; saveAfter?: number; load?: string } };
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype: config.dtype ?? 'float32', gradDtype: 'float32' });
const bf16 = config.dtype === 'bfloat16';
const roundBf16 = (x: number) => bf16ToFloat(floatToBf16(x));
const MODEL = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];
const hyper = { ...ADAMW_DEFAULTS, lr: 1e-2, weightDecay: 0.1 };

const param0 = (rank: number, i: number) => (((i * 13 + rank * 5) % 101) - 50) / 50;
const grad = (rank: number, t: number, i: number) => ((((i * 31 + rank * 17 + t * 7) % 23) - 11) * 0.5);

/**
 * Checkpoint scenario: grads the same on every rank (so the averaged grads do not depend on d); save
 * after `saveAfter` steps, or load, then step on to `steps` and print the final params.
 */
async function checkpointScenario(): Promise<void> {
  const ctx = await GpuContext.create();
  const dist = await initProcessGroup();
  const { rank, worldSize: d } = dist.info;
  const layout = computeLayout(MODEL, { dataParallelSize: d, distributedOptimizer: config.distributed, bucketSize: 100 });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout);
  const buffer = ddp.buffers[0]!;
  const n = buffer.layout.numel;
  const optimizer = createOptimizer(ctx, dist.group, ddp, { hyper, clipGrad: config.clip });
  const c = config.checkpoint!;
  let first = 1;
  if (c.load) {
    try {
      first = (await loadCheckpoint(c.load, { group: dist.group, ddp, optimizer })).step + 1;
    } catch (error) {
      say({ loadError: (error as Error).message });
      await dist.close();
      process.exit(0);
    }
  } else {
    ctx.transfers.upload(buffer.params, Float32Array.from({ length: n }, (_, i) => param0(0, i)));
  }
  // Grads as a function of (param, element, step): the same whatever the layout; padding stays zero.
  const gradsAt = (t: number) => {
    const g = new Float32Array(n);
    buffer.layout.params.forEach((p, k) => {
      for (let e = 0; e < p.numel; e++) g[p.start + e] = grad(k, t, e);
    });
    return g;
  };
  for (let t = first; t <= config.steps; t++) {
    ddp.zeroGradBuffer();
    ctx.transfers.upload(buffer.grads, gradsAt(t));
    await ddp.finishGradSync();
    await optimizer.step();
    if (c.save && t === c.saveAfter) await saveCheckpoint(c.save, { group: dist.group, ddp, optimizer, hyper, clipGrad: config.clip });
  }
  const params = await ddp.exportParams();
  if (rank === 0) say({ params: Object.fromEntries([...params].map(([k, v]) => [k, Array.from(v)])), step: optimizer.stepCount });
  await dist.group.barrier();
  await dist.close();
  say({ done: true });
  process.exit(0);
}

async function main(): Promise<void> {
  if (config.checkpoint) return checkpointScenario();
  const ctx = await GpuContext.create();
  const dist = await initProcessGroup();
  const { rank, worldSize: d } = dist.info;
  const layout = computeLayout(MODEL, { dataParallelSize: d, distributedOptimizer: config.distributed, bucketSize: 100 });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout, { overlapGradReduce: true });
  const buffer = ddp.buffers[0]!;
  const n = buffer.layout.numel;
  const initial = (r: number) => Float32Array.from({ length: n }, (_, i) => (bf16 ? roundBf16(param0(r, i)) : param0(r, i)));
  ctx.transfers.upload(buffer.params, bf16 ? Uint16Array.from(initial(rank), floatToBf16) : initial(rank));
  await ddp.broadcastParams();
  const optimizer = createOptimizer(ctx, dist.group, ddp, { hyper, clipGrad: config.clip, overlapParamGather: config.overlapParamGather ?? false });

  const ref = { p: initial(0), m: new Float32Array(n), v: new Float32Array(n) };
  let worstNorm = 0;
  let clipped = 0;
  for (let t = 1; t <= config.steps; t++) {
    // A forward reads the params first layers first; with overlapped gathers it waits per bucket.
    for (const p of [...buffer.layout.params].reverse()) await ddp.paramsReady(p.name);
    ddp.zeroGradBuffer();
    ctx.transfers.upload(buffer.grads, Float32Array.from({ length: n }, (_, i) => grad(rank, t, i)));
    for (const p of buffer.layout.params) ddp.registerGradReady(p.name);
    await ddp.finishGradSync();
    const result = await optimizer.step();
    const avg = Float32Array.from({ length: n }, (_, i) => {
      let sum = 0;
      for (let r = 0; r < d; r++) sum += grad(r, t, i);
      return Math.fround(sum * (1 / d));
    });
    const norm = Math.sqrt(avg.reduce((s, x) => s + x * x, 0));
    const coeff = config.clip > 0 && config.clip / (norm + 1e-6) < 1 ? config.clip / (norm + 1e-6) : 1;
    if (coeff < 1) clipped += 1;
    worstNorm = Math.max(worstNorm, Math.abs(result.gradNorm - norm) / norm);
    adamReferenceStep(hyper, t, ref.p, avg, ref.m, ref.v, coeff);
  }
  await ddp.finishParamSync(); // the last step's gathers may still run
  // Model params and (bf16) the fp32 main params, both laid out as the buffer is (padding zero).
  const asBuffer = (values: Map<string, Float32Array>) => {
    const out = new Float32Array(n);
    for (const p of buffer.layout.params) out.set(values.get(p.name)!, p.start);
    return out;
  };
  const params = asBuffer(await ddp.exportParams());
  const main = bf16 ? asBuffer((await optimizer.exportState()).main!) : params;
  const padding = new Set<number>();
  let at = 0;
  for (const p of buffer.layout.params) {
    for (; at < p.start; at++) padding.add(at);
    at = p.end;
  }
  for (; at < n; at++) padding.add(at);
  const refOfParams = Float32Array.from(ref.p, (x, i) => (padding.has(i) ? 0 : x));
  const err = relativeError(main, refOfParams);
  say({ check: 'params equal single-process Adam on averaged grads', ok: err <= 1e-6, detail: { relativeError: err, clippedSteps: clipped } });
  say({ check: 'grad norm', ok: worstNorm <= 1e-5, detail: worstNorm });
  say({ check: 'params moved', ok: relativeError(params, Float32Array.from(initial(0), (x, i) => (padding.has(i) ? 0 : x))) > 1e-3, detail: null });
  if (bf16) {
    const mismatch = params.findIndex((x, i) => !Object.is(x, roundBf16(main[i]!)));
    say({ check: 'bf16 model params are the main params rounded', ok: mismatch < 0, detail: mismatch < 0 ? null : `element ${mismatch}: ${params[mismatch]} vs main ${main[mismatch]}` });
  }

  const live = ctx.memoryReport().live;
  const shardOrAll = config.distributed ? n / d : n;
  const want = { params: bf16 ? Math.ceil((n * 2) / 4) * 4 : n * 4, grads: n * 4, 'main-params': bf16 ? shardOrAll * 4 : 0, 'optimizer-state': shardOrAll * 8 };
  const got = { params: live.params, grads: live.grads, 'main-params': live['main-params'], 'optimizer-state': live['optimizer-state'] };
  say({ check: 'memory by category', ok: JSON.stringify(got) === JSON.stringify(want), detail: { got, want, bytesPerParam: (got.params + got.grads + got['main-params'] + got['optimizer-state']) / n } });

  await dist.group.barrier();
  await dist.close();
  say({ done: true });
  process.exit(0);
}

main().catch((error: Error) => {
  say({ error: error.stack ?? error.message });
  process.exit(1);
});
