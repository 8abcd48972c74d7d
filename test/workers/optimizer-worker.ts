/**
 * One rank of an optimizer test job (spawned by test/optimizer/distributed.test.ts). Grads are a
 * deterministic function of (rank, step, element); after k steps every rank's params must equal a
 * single-process Adam (or SGD, or Lion) on the averaged grads (with the same clipping), and the GPU's
 * live bytes must match Megatron's table for fp32 params and grads: 16 B per param, or 8 + 8/d
 * distributed (Adam's two moments; one for Lion and SGD, none for SGD at momentum 0).
 */
import { initProcessGroup } from '../../src/collectives/init.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS, adamReferenceStep } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { modelStateBytes } from '../../src/memory/model-state.js';
import { relativeError } from '../helpers/hash.js';
import { bf16ToFloat, floatToBf16, floatToHalf, halfToFloat } from '../../src/collectives/reduce.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/checkpoint/checkpoint.js';
import type { StateDtype } from '../../src/optimizer/adam.js';
import type { StateDtypes } from '../../src/optimizer/optimizer-base.js';
import { momentKinds, momentumReferenceStep } from '../../src/optimizer/momentum-math.js';
import { bf16Reference, fp16Reference } from '../helpers/bf16.js';

interface CheckpointConfig {
  save?: string;
  /** Save after these steps (or the one step `saveAfter`). */
  saveAfter?: number | number[];
  load?: string;
  retain?: number;
  maxFileBytes?: number;
  /** A bigger model (elements of one extra param), so that a save takes long enough to be interrupted. */
  extraElements?: number;
  /** Biases in fp32 beside 16-bit weights (two buffers: Megatron keeps such params in fp32). */
  mixed?: boolean;
}

const config = JSON.parse(process.argv[2] ?? '{}') as {
  distributed: boolean;
  clip: number;
  steps: number;
  overlapParamGather?: boolean;
  dtype?: 'float32' | 'bfloat16' | 'float16';
  infAt?: number;
  alignment?: number;
  /** Bytes per grad-sync and param-gather chunk: small, so that every bucket moves in several. */
  chunkBytes?: number;
  checkpoint?: CheckpointConfig;
  /** The precision-aware optimizer's moment dtypes. */
  stateDtypes?: StateDtypes;
  /** SGD or Lion instead of Adam, and SGD's momentum (default 0.9). */
  optimizer?: 'sgd' | 'lion';
  sgdMomentum?: number;
};
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const dtype = config.dtype ?? 'float32';
const fp16 = dtype === 'float16';
// --main-grads-dtype bf16: a bf16 grad buffer (bf16 params only).
const bf16Grads = config.stateDtypes?.mainGrads === 'bfloat16';
const gradDtype = fp16 ? 'float16' : bf16Grads ? 'bfloat16' : 'float32';
const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype, gradDtype });
const half = dtype !== 'float32';
const toWord = fp16 ? floatToHalf : floatToBf16;
const fromWord = fp16 ? halfToFloat : bf16ToFloat;
const roundHalf = (x: number) => fromWord(toWord(x));
const LOSS_SCALE = 2 ** 10;
const MODEL = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];
const hyper = { ...ADAMW_DEFAULTS, lr: 1e-2, weightDecay: 0.1 };
const sgdMomentum = config.sgdMomentum ?? 0.9;
/** The optimizer the config asks for, as createOptimizer takes it, and SGD's or Lion's hyper-parameters. */
const which = config.optimizer ? { optimizer: config.optimizer, sgdMomentum, lionBetas: [0.95, 0.98] as [number, number] } : {};
const momentumHyper = { lr: hyper.lr, weightDecay: hyper.weightDecay, momentum: sgdMomentum, beta1: 0.95, beta2: 0.98 };

/** `values` rounded in place to `dtype` by the test's own float64 rounding. */
function roundState(values: Float32Array, dtype: StateDtype = 'float32'): void {
  if (dtype === 'float32') return;
  for (let i = 0; i < values.length; i++) values[i] = (dtype === 'bfloat16' ? bf16Reference : fp16Reference)(values[i]!);
}

const param0 = (rank: number, i: number) => (((i * 13 + rank * 5) % 101) - 50) / 50;
const grad = (rank: number, t: number, i: number) => (((i * 31 + rank * 17 + t * 7) % 23) - 11) * 0.5;

/**
 * Checkpoint scenario: grads the same on every rank (so the averaged grads do not depend on d); save
 * after `saveAfter` steps, or load, then step on to `steps` and print the final params.
 */
async function checkpointScenario(): Promise<void> {
  const ctx = await GpuContext.create();
  const dist = await initProcessGroup();
  const { rank, worldSize: d } = dist.info;
  const c = config.checkpoint!;
  const fp32 = (p: ParamSpec): ParamSpec => ({ ...p, dtype: 'float32', gradDtype: 'float32' });
  let model = c.extraElements ? [...MODEL, f32('big', c.extraElements)] : MODEL;
  if (c.mixed) model = model.map((p) => (/^b\d/.test(p.name) ? fp32(p) : p));
  const layout = computeLayout(model, {
    dataParallelSize: d,
    distributedOptimizer: config.distributed,
    bucketSize: c.extraElements ? 1 << 22 : 100,
  });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout);
  const optimizer = createOptimizer(ctx, dist.group, ddp, {
    hyper,
    clipGrad: config.clip,
    lossScaler: { initialScale: LOSS_SCALE },
    ...(config.stateDtypes ? { stateDtypes: config.stateDtypes } : {}),
  });
  const parts = { group: dist.group, ddp, optimizer };
  const names = model.map((p) => p.name);
  let first = 1;
  if (c.load) {
    try {
      first = (await loadCheckpoint(c.load, parts)).index.iteration + 1;
    } catch (error) {
      say({ loadError: (error as Error).message });
      await dist.close();
      process.exit(0);
    }
  } else {
    // Written after the optimizer exists: its fp32 main params must follow (16-bit rows).
    const numel = (p: ParamSpec) => p.shape.reduce((a, b) => a * b, 1);
    ddp.importParams(new Map(model.map((p, k) => [p.name, Float32Array.from({ length: numel(p) }, (_, e) => param0(k, e))])));
  }
  for (let t = first; t <= config.steps; t++) {
    ddp.zeroGradBuffer();
    const scale = optimizer.scaler?.scale ?? 1;
    // Grads as a function of (param, element, step): the same whatever the layout; padding stays zero.
    for (const buffer of ddp.buffers) {
      const g = new Float32Array(buffer.layout.numel);
      for (const p of buffer.layout.params) for (let e = 0; e < p.numel; e++) g[p.start + e] = grad(names.indexOf(p.name), t, e);
      const { gradDtype: stored } = buffer.layout;
      if (stored === 'float16')
        ctx.transfers.upload(
          buffer.grads,
          Uint16Array.from(g, (x) => floatToHalf(x * scale)),
        );
      else ctx.transfers.upload(buffer.grads, stored === 'bfloat16' ? Uint16Array.from(g, floatToBf16) : g);
    }
    await ddp.finishGradSync();
    await optimizer.step();
    if (c.save && new Set([c.saveAfter ?? []].flat()).has(t)) {
      say({ saving: t });
      const saved = await saveCheckpoint(c.save, parts, {
        iteration: t,
        ...(c.retain ? { retain: c.retain } : {}),
        ...(c.maxFileBytes ? { maxFileBytes: c.maxFileBytes } : {}),
      });
      say({ saved: t, bytesWritten: saved.bytesWritten, totalBytes: saved.totalBytes });
    }
  }
  // 16-bit params: compare the fp32 main params (the model params are their rounding).
  const modelParams = await ddp.exportParams();
  const main = (await optimizer.exportState()).main;
  if (rank === 0) {
    const shown = names.filter((k) => k !== 'big').map((k) => [k, Array.from(main?.get(k) ?? modelParams.get(k)!)]);
    say({ params: Object.fromEntries(shown), step: optimizer.stepCount, scaler: optimizer.scaler?.stateDict() ?? null });
  }
  await dist.group.barrier();
  await dist.close();
  say({ done: true });
  process.exit(0);
}

async function main(): Promise<void> {
  if (config.checkpoint) return checkpointScenario();
  // A device that demands this storage offset alignment (most GPUs: 256 B), to test unaligned shards.
  const ctx = await GpuContext.create(config.alignment ? { limits: { minStorageBufferOffsetAlignment: config.alignment } } : {});
  const dist = await initProcessGroup();
  const { rank, worldSize: d } = dist.info;
  const layout = computeLayout(MODEL, { dataParallelSize: d, distributedOptimizer: config.distributed, bucketSize: 100 });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout, {
    overlapGradReduce: true,
    ...(config.chunkBytes ? { syncChunkBytes: config.chunkBytes } : {}),
  });
  const buffer = ddp.buffers[0]!;
  const n = buffer.layout.numel;
  const initial = (r: number) => Float32Array.from({ length: n }, (_, i) => (half ? roundHalf(param0(r, i)) : param0(r, i)));
  ctx.transfers.upload(buffer.params, half ? Uint16Array.from(initial(rank), toWord) : initial(rank));
  await ddp.broadcastParams();
  const optimizer = createOptimizer(ctx, dist.group, ddp, {
    hyper,
    clipGrad: config.clip,
    overlapParamGather: config.overlapParamGather ?? false,
    lossScaler: { initialScale: LOSS_SCALE },
    ...(config.stateDtypes ? { stateDtypes: config.stateDtypes } : {}),
    ...which,
  });

  const ref = { p: initial(0), m: new Float32Array(n), v: new Float32Array(n) };
  let worstNorm = 0;
  let clipped = 0;
  let adamSteps = 0;
  const scales: number[] = [];
  for (let t = 1; t <= config.steps; t++) {
    // A forward reads the params first layers first; with overlapped gathers it waits per bucket.
    for (const p of [...buffer.layout.params].reverse()) await ddp.paramsReady(p.name);
    ddp.zeroGradBuffer();
    const scale = optimizer.scaler?.scale ?? 1;
    // fp16: the backward of a loss multiplied by the scale gives fp16 grads times the scale.
    const wordOf = (r: number, i: number) => floatToHalf(grad(r, t, i) * scale);
    if (fp16) {
      const words = Uint16Array.from({ length: n }, (_, i) => wordOf(rank, i));
      if (config.infAt === t && rank === d - 1) words[7] = 0x7c00; // +inf on one rank only
      ctx.transfers.upload(buffer.grads, words);
    } else if (bf16Grads) {
      // Halves of integers up to 11: exact in bf16.
      ctx.transfers.upload(
        buffer.grads,
        Uint16Array.from({ length: n }, (_, i) => floatToBf16(grad(rank, t, i))),
      );
    } else {
      ctx.transfers.upload(
        buffer.grads,
        Float32Array.from({ length: n }, (_, i) => grad(rank, t, i)),
      );
    }
    for (const p of buffer.layout.params) ddp.registerGradReady(p.name);
    await ddp.finishGradSync();
    const result = await optimizer.step();
    scales.push(result.lossScale ?? 0);
    if (config.infAt === t) {
      say({ check: 'an inf on one rank skips the step on every rank', ok: result.skipped && result.step === adamSteps, detail: result });
      continue;
    }
    adamSteps += 1;
    const avg = Float32Array.from({ length: n }, (_, i) => {
      let sum = 0;
      for (let r = 0; r < d; r++) sum += fp16 ? halfToFloat(wordOf(r, i)) : grad(r, t, i);
      const mean = Math.fround(sum * (1 / d));
      // fp16: the collective rounds the mean to fp16; the optimizer unscales it in fp32. bf16 grads:
      // the mean rounded to bf16, widened exactly.
      if (bf16Grads) return bf16ToFloat(floatToBf16(mean));
      return fp16 ? Math.fround(halfToFloat(floatToHalf(mean)) * Math.fround(1 / scale)) : mean;
    });
    const norm = Math.sqrt(avg.reduce((s, x) => s + x * x, 0));
    const coeff = config.clip > 0 && config.clip / (norm + 1e-6) < 1 ? config.clip / (norm + 1e-6) : 1;
    if (coeff < 1) clipped += 1;
    worstNorm = Math.max(worstNorm, Math.abs(result.gradNorm - norm) / norm);
    if (config.optimizer) {
      const state = config.optimizer === 'sgd' && sgdMomentum === 0 ? null : ref.m;
      momentumReferenceStep(config.optimizer, momentumHyper, ref.p, avg, state, coeff);
    } else adamReferenceStep(hyper, adamSteps, ref.p, avg, ref.m, ref.v, coeff);
    // The precision-aware optimizer keeps the moments rounded to their dtypes.
    roundState(ref.m, config.stateDtypes?.expAvg);
    roundState(ref.v, config.stateDtypes?.expAvgSq);
    roundState(ref.p, config.stateDtypes?.mainParams);
  }
  if (fp16)
    say({
      check: 'loss scale after the steps (one overflow: hysteresis, no backoff)',
      ok: scales.every((x) => x === LOSS_SCALE) && optimizer.scaler!.skippedSteps === (config.infAt ? 1 : 0),
      detail: { scales, skipped: optimizer.scaler!.skippedSteps },
    });
  await ddp.finishParamSync(); // the last step's gathers may still run
  // Model params and (bf16) the fp32 main params, both laid out as the buffer is (padding zero).
  const asBuffer = (values: Map<string, Float32Array>) => {
    const out = new Float32Array(n);
    for (const p of buffer.layout.params) out.set(values.get(p.name)!, p.start);
    return out;
  };
  const params = asBuffer(await ddp.exportParams());
  // fp16 params with fp16 main params are their own main params.
  const exported = half ? (await optimizer.exportState()).main : undefined;
  const main = exported ? asBuffer(exported) : params;
  // Megatron's params norm: of the params Adam updates (the main params), from the GPU. This test
  // puts values in the padding too (a run keeps it zero), so the reference is the whole buffer's.
  const paramsNorm = await optimizer.paramsNorm();
  const hostNorm = Math.sqrt(ref.p.reduce((s, x) => s + x * x, 0));
  say({
    check: 'params norm',
    ok: Math.abs(paramsNorm - hostNorm) <= 1e-6 * hostNorm,
    detail: { gpu: paramsNorm, host: hostNorm },
  });
  const padding = new Set<number>();
  let at = 0;
  for (const p of buffer.layout.params) {
    for (; at < p.start; at++) padding.add(at);
    at = p.end;
  }
  for (; at < n; at++) padding.add(at);
  const refOfParams = Float32Array.from(ref.p, (x, i) => (padding.has(i) ? 0 : x));
  const err = relativeError(main, refOfParams);
  say({
    check: 'params equal single-process Adam on averaged grads',
    ok: err <= 1e-6,
    detail: { relativeError: err, clippedSteps: clipped },
  });
  say({ check: 'grad norm', ok: worstNorm <= 1e-5, detail: worstNorm });
  say({
    check: 'params moved',
    ok:
      relativeError(
        params,
        Float32Array.from(initial(0), (x, i) => (padding.has(i) ? 0 : x)),
      ) > 1e-3,
    detail: null,
  });
  if (half) {
    const mismatch = params.findIndex((x, i) => !Object.is(x, roundHalf(main[i]!)));
    say({
      check: `${dtype} model params are the main params rounded`,
      ok: mismatch < 0,
      detail: mismatch < 0 ? null : `element ${mismatch}: ${params[mismatch]} vs main ${main[mismatch]}`,
    });
  }

  const live = ctx.memoryReport().live;
  // Megatron's rows (fp32 16 | 8 + 8/d; bf16 18 | 6 + 12/d; fp16 20 | 4 + 16/d) from the pure
  // accounting of src/memory, with this rank's padding on its own.
  const moments = config.optimizer ? { moments: momentKinds(config.optimizer, sgdMomentum) } : {};
  const expected = modelStateBytes(layout, rank, { ...config.stateDtypes, ...moments });
  const want = expected.byCategory;
  const got = { params: live.params, grads: live.grads, 'main-params': live['main-params'], 'optimizer-state': live['optimizer-state'] };
  say({
    check: 'memory by category',
    ok: JSON.stringify(got) === JSON.stringify(want),
    detail: { got, want, padding: expected.paddingByCategory, tableBytesPerParam: expected.bytesPerParam },
  });

  await dist.group.barrier();
  await dist.close();
  say({ done: true });
  process.exit(0);
}

main().catch((error: Error) => {
  say({ error: error.stack ?? error.message });
  process.exit(1);
});
