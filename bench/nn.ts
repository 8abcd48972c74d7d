/**
 * `npm run bench -- nn`: webtron's WGSL matmul beside onnxruntime-node running the same MatMul on
 * its WebGPU execution provider (same adapter) and its CPU provider, in the same run; and GPT
 * forward+backward tokens/s beside torch's CPU forward+backward on the identical config
 * (bench/reference/gpt_torch.py, when Debian's python3-torch is installed).
 *
 * Matmul, measured the way onnxruntime is used: host arrays in, host result out, wall clock
 * (`gflops`, `ort_webgpu_gflops`, `ort_cpu_gflops`), the three interleaved run by run;
 * `vs_ort_webgpu` is the median over runs of onnxruntime's time / webtron's time in the same run.
 * Square shapes also run chains of CHAIN multiplies, whose extra time over one multiply is kernel
 * time without transfers (`kernel_gflops`, `ort_webgpu_kernel_gflops`, `kernel_vs_ort_webgpu`).
 * `gpu_timestamp_gflops` is webtron's kernel alone from GPU timestamps; `deep_plan`, the plan a deep
 * product ran in on a hardware GPU (docs/gpu.md, the autotuner). GPT steps are wall clock
 * per forward+backward (graph building and dispatch included, as torch's are); `host_ms`, the part of
 * it the host spends building the graph and recording its dispatches, before it waits for the loss.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../src/files.js';
import { storageUsage, type GpuContext } from '../src/gpu/context.js';
import { floatToHalf, halfToFloat } from '../src/collectives/reduce.js';
import { modelDtypes, PRECISION_DTYPES, type Precision } from '../src/memory/calculator.js';
import { Graph } from '../src/nn/graph.js';
import { type DeepPlan, deepPlanFor, shapeClass } from '../src/gpu/matmul-tuner.js';
import { GpuTimer } from '../src/gpu/timer.js';
import { Gpt, type GptConfig } from '../src/nn/gpt.js';
import { matmulInto } from '../src/nn/ops.js';
import { LocalParams } from '../src/nn/params.js';
import { Runner } from '../src/nn/runner.js';
import { Tensor } from '../src/nn/tensor.js';
import { knownPeaks } from '../src/train/throughput.js';
import { matmulModel } from '../src/onnx/proto.js';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { groupedBarSvg } from '../src/plot/svg.js';
import {
  cpuGemmLimit,
  fractionOf,
  gptTrainFlopsPerToken,
  requireOptimizedBlas,
  torchEnvFields,
  torchGemm,
  type TorchEnv,
} from './limits.js';
import { progress, type Row } from './report.js';
import { median, timeGpu } from './timing.js';

/** Multiplies in the chained runs that separate kernel time from transfers (square shapes). */
const CHAIN = 4;

/** Named GPT configs (the issue's: a character-level model on a small vocabulary). */
export const GPT_CONFIGS: Record<string, GptConfig & { batch: number }> = {
  'char-4x128': { numLayers: 4, numAttentionHeads: 4, hiddenSize: 128, seqLength: 64, vocabSize: 81, batch: 12 },
  tiny: { numLayers: 2, numAttentionHeads: 2, hiddenSize: 32, seqLength: 16, vocabSize: 81, batch: 4 },
  // The second model: 6 layers of 384, 6 heads (of 64), T 256, micro-batch 4 (10.8M params).
  'gpt-6x384-t256': { numLayers: 6, numAttentionHeads: 6, hiddenSize: 384, seqLength: 256, vocabSize: 96, batch: 4 },
  // GPT-2 small's shape (vocab padded to a multiple of 128), for hardware GPUs only.
  'gpt2-small': { numLayers: 12, numAttentionHeads: 12, hiddenSize: 768, seqLength: 1024, vocabSize: 50304, batch: 8 },
};

function matmulShapes(spec: string, config: GptConfig & { batch: number }): [string, number, number, number][] {
  if (spec === 'none') return [];
  if (spec === 'gpt') {
    const n = config.batch * config.seqLength;
    const h = config.hiddenSize;
    return [
      ['qkv', n, h, 3 * h],
      ['attn.proj', n, h, h],
      ['mlp.fc', n, h, 4 * h],
      ['mlp.proj', n, 4 * h, h],
      ['head', n, h, config.vocabSize],
      // Weight grads (x^T dy): k is the tokens, and C has few tiles.
      ['attn.proj.dw', h, n, h],
      ['mlp.fc.dw', h, n, 4 * h],
    ];
  }
  const s = Number(spec);
  if (!Number.isInteger(s) || s < 1) throw new FlagError(`--matmul: '${spec}' is not a square size, 'gpt' or none`);
  return [[`${s}³`, s, s, s]];
}

type Ort = typeof import('onnxruntime-node');

/**
 * onnxruntime-node, a devDependency: a production install (a GPU host's bundle, scripts/gpu-bundle.sh)
 * runs the nn bench without it, and its columns stay empty.
 */
export async function loadOrt(): Promise<Ort | null> {
  try {
    return (await import('onnxruntime-node')).default as unknown as Ort;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
    progress('onnxruntime-node is not installed (npm install, with devDependencies): its comparison is left out');
    return null;
  }
}

export async function ortSession(
  ort: Ort,
  model: Uint8Array,
  ep: 'webgpu' | 'cpu',
): Promise<import('onnxruntime-node').InferenceSession | null> {
  try {
    // No spinning threads after a run: they would take the CPU from whatever is timed next
    // (lavapipe runs on the same cores).
    return await ort.InferenceSession.create(model, {
      executionProviders: [ep],
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
  } catch (e) {
    progress(`onnxruntime ${ep} provider unavailable: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

async function matmulRows(
  ctx: GpuContext,
  spec: string[],
  dtypes: string[],
  config: GptConfig & { batch: number },
  warmup: number,
  runs: number,
  torchAt: { python: string; device: string } | null,
): Promise<Row[]> {
  const rows: Row[] = [];
  const ort = await loadOrt();
  for (const [name, m, k, n] of spec.flatMap((s) => matmulShapes(s, config)))
    rows.push(...(await productRows(ctx, ort, name, { m, k, n }, dtypes, { warmup, runs }, torchAt)));
  return rows;
}

/**
 * Rows of one product, with fp32 weights and (`dtypes` naming float16) with fp16 weights, each
 * timed on the GPU and checked; beside onnxruntime where `ort` is given and torch where `torchAt` is.
 */
export async function productRows(
  ctx: GpuContext,
  ort: Ort | null,
  name: string,
  { m, k, n }: { m: number; k: number; n: number },
  dtypes: string[],
  timing: { warmup: number; runs: number },
  torchAt: { python: string; device: string } | null,
): Promise<Row[]> {
  const rows: Row[] = [];
  const runner = new Runner(ctx);
  const g = new Graph(ctx, { runner });
  const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i));
  const b = Float32Array.from({ length: k * n }, (_, i) => Math.cos(i));
  try {
    if (dtypes.includes('float32')) rows.push(await fp32MatmulRow(g, ort, name, { m, k, n }, a, b, timing, torchAt));
    if (dtypes.includes('float16')) rows.push(await halfMatmulRow(g, name, { m, k, n }, a, b, timing, torchAt));
  } finally {
    runner.destroy();
  }
  return rows;
}

/**
 * The product with fp32 weights beside onnxruntime's MatMul (WebGPU and CPU providers), host to
 * host and chained on the device, and beside torch's GEMM.
 */
async function fp32MatmulRow(
  g: Graph,
  ort: Ort | null,
  name: string,
  { m, k, n }: { m: number; k: number; n: number },
  a: Float32Array,
  b: Float32Array,
  { warmup, runs }: { warmup: number; runs: number },
  torchAt: { python: string; device: string } | null,
): Promise<Row> {
  const { ctx, runner } = g;
  progress(`matmul ${name} (${m}x${k} @ ${k}x${n}): webtron${ort ? ', onnxruntime webgpu, onnxruntime cpu' : ''}`);
  const buf = (label: string, len: number) =>
    new Tensor(ctx.createBuffer({ label, size: len * 4, usage: storageUsage(), category: 'other' }), 0, [len], 'float32');
  const [A, B, C, D] = [buf('bench.a', m * k), buf('bench.b', k * n), buf('bench.c', m * n), buf('bench.d', m * n)];
  ctx.transfers.upload(A.buffer, a);
  ctx.transfers.upload(B.buffer, b);
  const mul = (x: Tensor, y: Tensor) => matmulInto(g, { m, n, k }, { t: x, rs: k, cs: 1 }, { t: B, rs: n, cs: 1 }, { t: y, rs: n, cs: 1 });
  const [gpu, kernel] = await namingKernels(runner, () =>
    timeGpu(ctx, (encoder) => runner.recordInto(encoder, () => mul(A, C)), { warmup, runs }),
  );
  const exact = (x: number) => x;
  checkProduct(`matmul ${name} (${kernel})`, await ctx.transfers.readFloat32(C.buffer, 0, m * n), a, b, { m, k, n }, [exact, exact], 1e-3);
  // With host I/O, as onnxruntime runs with host tensors: upload a and b, multiply, read c back.
  // For square shapes also a chain of CHAIN multiplies by b (ping-pong on the GPU, one MatMul model
  // of CHAIN nodes for onnxruntime): the difference between the two is CHAIN - 1 multiplies without
  // transfers, the kernels' own rate measured the same way for everyone. All interleaved run by run.
  const chain = k === n ? CHAIN : 1;
  const ours = async (length: number) => {
    ctx.transfers.upload(A.buffer, a);
    ctx.transfers.upload(B.buffer, b);
    let x = A;
    for (let i = 0; i < length; i++) {
      const y = i % 2 === 0 ? C : D;
      mul(x, y);
      x = y;
    }
    runner.flush();
    await ctx.transfers.readFloat32(x.buffer, 0, m * n);
  };
  const workloads: { key: string; run: () => Promise<unknown> }[] = [{ key: 'ours', run: () => ours(1) }];
  if (ort) {
    const feeds = { a: new ort.Tensor('float32', a, [m, k]), b: new ort.Tensor('float32', b, [k, n]) };
    for (const ep of ['webgpu', 'cpu'] as const) {
      for (const length of chain > 1 ? [1, chain] : [1]) {
        const session = await ortSession(ort, matmulModel(m, k, n, length), ep);
        if (session) workloads.push({ key: `${ep}${length}`, run: () => session.run(feeds) });
      }
    }
  }
  if (chain > 1) workloads.push({ key: `ours${chain}`, run: () => ours(chain) });
  const samples = new Map(workloads.map((w) => [w.key, [] as number[]]));
  for (let i = 0; i < warmup + runs; i++) {
    for (const w of workloads) {
      const t0 = performance.now();
      await w.run();
      if (i >= warmup) samples.get(w.key)!.push(performance.now() - t0);
    }
  }
  const ms = (key: string) => (samples.get(key)?.length ? median(samples.get(key)!) : null);
  const gf = (t: number | null) => (t === null ? null : (2 * m * n * k) / (t * 1e6));
  // Per-multiply time from the chain; null when the difference is lost in the noise.
  const slope = (key: string) => {
    const one = ms(`${key}1`) ?? ms(key);
    const many = ms(`${key}${chain}`);
    return one === null || many === null || many <= one ? null : (many - one) / (chain - 1);
  };
  // Per-iteration ratios (the workloads of one iteration ran back to back, so slow spells of a
  // shared machine cancel out), then their median.
  const ratio = (num: (i: number) => number | null) => {
    const values = (samples.get('ours') ?? []).map((_, i) => num(i)).filter((v): v is number => v !== null && Number.isFinite(v) && v > 0);
    return values.length > 0 ? median(values) : null;
  };
  const at = (key: string, i: number) => samples.get(key)?.[i] ?? null;
  const speedup = ratio((i) => (at('webgpu1', i) ?? NaN) / at('ours', i)!);
  const kernelSpeedup =
    chain > 1
      ? ratio((i) => ((at(`webgpu${chain}`, i) ?? NaN) - (at('webgpu1', i) ?? NaN)) / (at(`ours${chain}`, i)! - at('ours', i)!))
      : null;
  const row: Row = {
    bench: 'matmul',
    shape: name,
    m,
    n,
    k,
    dtype: 'float32',
    kernel,
    deep_plan: deepPlanOf(ctx, m, n, k, kernel),
    ms: ms('ours'),
    gflops: gf(ms('ours')),
    gpu_timestamp_gflops: gf(gpu.ms),
    vs_ort_webgpu: speedup,
    kernel_vs_ort_webgpu: kernelSpeedup,
    ort_webgpu_gflops: gf(ms('webgpu1')),
    ort_cpu_gflops: gf(ms('cpu1')),
    ...torchGemmFields(torchAt, m, k, n, gf(gpu.ms)),
    ...(chain > 1
      ? {
          chain,
          kernel_gflops: gf(slope('ours')),
          ort_webgpu_kernel_gflops: gf(slope('webgpu')),
          ort_cpu_kernel_gflops: gf(slope('cpu')),
        }
      : {}),
    timing: gpu.method,
    backend: ctx.backend,
    adapter: ctx.adapterName,
    dawn_toggles: ctx.found.toggles,
  };
  for (const t of [A, B, C, D]) t.buffer.destroy();
  return row;
}

/**
 * Check C = A @ B at its four corners and 60 other elements spread over every tile position, against
 * float64 sums over the operands as the kernel stages them: a wrong edge tile or fragment fails the run.
 * Within `tolerance` of the sum, plus `slack` times the sum of the products' magnitudes (a device may
 * round f32 to f16 to either neighbour: up to 2^-10 of each product).
 */
function checkProduct(
  what: string,
  c: Float32Array,
  a: Float32Array,
  b: Float32Array,
  { m, k, n }: { m: number; k: number; n: number },
  [stageA, stageB]: [(x: number) => number, (x: number) => number],
  tolerance: number,
  slack = 0,
): void {
  const spots: [number, number][] = [
    [0, 0],
    [0, n - 1],
    [m - 1, 0],
    [m - 1, n - 1],
  ];
  for (let i = 1; i <= 60; i++) spots.push([(i * 7919) % m, (i * 104729 + 13) % n]);
  for (const [r, col] of spots) {
    let want = 0;
    let mass = 0;
    for (let p = 0; p < k; p++) {
      const term = stageA(a[r * k + p]!) * stageB(b[p * n + col]!);
      want += term;
      mass += Math.abs(term);
    }
    const got = c[r * n + col]!;
    if (!(Math.abs(got - want) <= tolerance * Math.max(1, Math.abs(want)) + slack * mass))
      throw new Error(`${what}: C[${r}, ${col}] = ${got} but the host sum is ${want}`);
  }
}

/** Run `work` and name the shaders it dispatched on `runner` (joined with '+'). */
async function namingKernels<T>(runner: Runner, work: () => Promise<T>): Promise<[T, string]> {
  const used = new Set<string>();
  const dispatch = runner.dispatch;
  runner.dispatch = (...args: Parameters<Runner['dispatch']>) => {
    used.add(args[0]);
    return dispatch.apply(runner, args);
  };
  try {
    return [await work(), [...used].join('+')];
  } finally {
    runner.dispatch = dispatch;
  }
}

/**
 * The same product with B as 16-bit weights (fp16 params, as `--fp16` trains them), on the kernel the
 * adapter picks for them: the tensor-core kernel where it offers f16 subgroup matrices, f16 staging
 * with f32 accumulation otherwise. Timed on the GPU; beside torch's fp16 GEMM on CUDA.
 */
async function halfMatmulRow(
  g: Graph,
  name: string,
  { m, k, n }: { m: number; k: number; n: number },
  a: Float32Array,
  b: Float32Array,
  timing: { warmup: number; runs: number },
  torchAt: { python: string; device: string } | null,
): Promise<Row> {
  const { ctx, runner } = g;
  progress(`matmul ${name} (${m}x${k} @ ${k}x${n}), fp16 weights: webtron`);
  const params = new LocalParams(ctx, [{ name: 'b', shape: [k * n], dtype: 'float16', gradDtype: 'float32' }]);
  params.set(new Map([['b', b]]));
  const A = g.input(a, [m * k]);
  const C = g.input(new Float32Array(m * n), [m * n]);
  runner.flush();
  const mul = () => matmulInto(g, { m, n, k }, { t: A, rs: k, cs: 1 }, { t: params.get('b'), rs: n, cs: 1 }, { t: C, rs: n, cs: 1 });
  const [gpu, kernel] = await namingKernels(runner, () => timeGpu(ctx, (encoder) => runner.recordInto(encoder, mul), timing));
  // Against the host's sums over what the kernel sees: B in fp16, and A too where it is staged in f16.
  const f16 = (x: number) => halfToFloat(floatToHalf(x));
  const halfA = /mma|tiled-f16/.test(kernel);
  const stageA = halfA ? f16 : (x: number) => x;
  checkProduct(`matmul ${name}, fp16 weights (${kernel})`, await g.read(C), a, b, { m, k, n }, [stageA, f16], 1e-3, halfA ? 2 ** -10 : 0);
  g.release();
  params.destroy();
  const gflops = (2 * m * n * k) / (gpu.ms * 1e6);
  // torch's fp16 GEMM only where it is a kernel users run: on CUDA.
  const half = torchAt?.device === 'cuda' ? torchAt : null;
  return {
    bench: 'matmul',
    shape: name,
    m,
    n,
    k,
    dtype: 'float16',
    kernel,
    deep_plan: deepPlanOf(ctx, m, n, k, kernel),
    gpu_timestamp_gflops: gflops,
    ...torchGemmFields(half, m, k, n, gflops, 'float16'),
    timing: gpu.method,
    backend: ctx.backend,
    adapter: ctx.adapterName,
    dawn_toggles: ctx.found.toggles,
  };
}

/** The plan a deep product ran in on the tiled or tensor-core kernel (matmul-tuner.ts, DEEP_PLANS); null for the rest. */
function deepPlanOf(ctx: GpuContext, m: number, n: number, k: number, kernel: string): DeepPlan | null {
  if (ctx.matmulKernel !== 'tiled' || shapeClass(m, n, k) !== 'deep') return null;
  return deepPlanFor(ctx, kernel.includes('matmul-mma') ? 'mma' : 'tiled');
}

/** torch's GEMM of the same shape in the same run, and webtron's kernel over it. */
function torchGemmFields(
  torchAt: { python: string; device: string } | null,
  m: number,
  k: number,
  n: number,
  ours: number | null,
  dtype: 'float32' | 'float16' = 'float32',
): Row {
  if (!torchAt) return {};
  progress(`matmul ${m}x${k} @ ${k}x${n}: torch (${torchAt.device}, ${dtype})`);
  const t = torchGemm(torchAt.python, torchAt.device, m, k, n, dtype);
  if (!t) return {};
  return { torch_gflops: t.gemm_shape_gflops, vs_torch_gemm: ours === null ? null : ours / t.gemm_shape_gflops, torch_blas: t.blas.kind };
}

function torchReference(
  python: string,
  device: string,
  config: GptConfig & { batch: number },
  precision: Precision,
  runs: number,
  warmup: number,
): { tokens_per_s: number; threads: number; device: string; env: TorchEnv } | null {
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'reference', 'gpt_torch.py');
  if (!existsSync(python)) {
    progress(`torch reference skipped: ${python} not found (install Debian's python3-torch)`);
    return null;
  }
  try {
    const args = [
      script,
      '--layers',
      config.numLayers,
      '--heads',
      config.numAttentionHeads,
      '--hidden',
      config.hiddenSize,
      '--block',
      config.seqLength,
      '--batch',
      config.batch,
      '--vocab',
      config.vocabSize,
      '--runs',
      runs,
      '--warmup',
      warmup,
      '--device',
      device,
      '--precision',
      precision,
    ].map(String);
    const out = execFileSync(python, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 });
    const result = JSON.parse(out.trim().split('\n').pop()!) as { tokens_per_s: number; threads: number; device: string; env: TorchEnv };
    requireOptimizedBlas(result.env);
    return result;
  } catch (e) {
    if (e instanceof Error && e.name === 'BaselineError') throw e;
    progress(`torch reference skipped: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

async function gptRow(
  ctx: GpuContext,
  name: string,
  config: GptConfig & { batch: number },
  precision: Precision,
  torchAt: { python: string; device: string } | null,
  warmup: number,
  runs: number,
): Promise<Row> {
  // The params and grads `webtron train` keeps at this precision (16-bit weights: the tensor-core
  // matmuls where the adapter has them); torch beside it under autocast, its own mixed precision.
  const params = new LocalParams(ctx, Gpt.specs(config, ...modelDtypes(precision)));
  params.set(Gpt.init(config, 1));
  const gpt = new Gpt(config, params.tensors);
  const tokens = config.batch * config.seqLength;
  const ids = Uint32Array.from({ length: tokens }, (_, i) => (i * 7919) % config.vocabSize);
  const targets = Uint32Array.from({ length: tokens }, (_, i) => (i * 104729 + 3) % config.vocabSize);
  const samples: number[] = [];
  const recording: number[] = [];
  let loss = NaN;
  let recorded = 0;
  const step = async (g: Graph) => {
    const out = gpt.forward(g, g.input(ids, [config.batch, config.seqLength], 'ids'), g.input(targets, [tokens], 'targets'));
    g.backward(out.loss!);
    recorded = performance.now();
    return (await g.read(out.loss!))[0]!;
  };
  for (let i = 0; i < warmup + runs; i++) {
    progress(`gpt ${name}, ${precision}: forward+backward ${i + 1}/${warmup + runs}${i < warmup ? ' (warm-up)' : ''}`);
    const t0 = performance.now();
    const g = new Graph(ctx);
    loss = await step(g);
    g.release();
    if (i >= warmup) {
      samples.push(performance.now() - t0);
      recording.push(recorded - t0);
    }
  }
  const profile = ctx.hasTimestamps ? await kernelProfile(ctx, step) : null;
  params.destroy();
  const ms = median(samples);
  if (torchAt) progress(`gpt ${name}, ${precision}: torch (${torchAt.device}) on the same config`);
  const torch = torchAt ? torchReference(torchAt.python, torchAt.device, config, precision, runs, warmup) : null;
  const tokensPerS = tokens / (ms / 1000);
  return {
    bench: 'gpt',
    config: name,
    precision,
    tokens,
    ms,
    tokens_per_s: tokensPerS,
    host_ms: median(recording),
    torch_tokens_per_s: torch?.tokens_per_s ?? null,
    ratio_to_torch: torch ? tokensPerS / torch.tokens_per_s : null,
    torch_device: torch?.device ?? null,
    torch_threads: torch?.threads ?? null,
    ...(torch ? torchEnvFields(torch.env) : {}),
    gflops: (tokensPerS * gptTrainFlopsPerToken(config)) / 1e9,
    loss,
    ...(profile ?? {}),
    backend: ctx.backend,
    adapter: ctx.adapterName,
    dawn_toggles: ctx.found.toggles,
    attention: ctx.attentionKernel,
    reductions: ctx.reductionKernel,
  };
}

/** Kernels named in a profile row, the costliest first. */
const PROFILE_KERNELS = 16;

/**
 * One more forward + backward with every dispatch in a timed pass of its own: GPU milliseconds by
 * kernel (the costliest PROFILE_KERNELS, and their sum over all kernels). Beside the row's wall
 * time this tells GPU work from the host's encoding and waiting. Passes past the timer's 2,048 go
 * untimed and are counted in `gpu_profile_untimed`.
 */
async function kernelProfile(ctx: GpuContext, step: (g: Graph) => Promise<number>): Promise<Row> {
  const timer = new GpuTimer(ctx, 2048);
  const g = new Graph(ctx);
  try {
    g.runner.timer = timer;
    g.runner.timePerKernel = true;
    await step(g);
    const { ms, passes, dropped } = await timer.read();
    const byKernel = Object.entries(ms).sort((a, b) => b[1] - a[1]);
    const total = byKernel.reduce((sum, [, t]) => sum + t, 0);
    return {
      gpu_profile_ms: Math.round(total * 100) / 100,
      gpu_profile_passes: passes,
      gpu_profile_untimed: dropped,
      gpu_profile_by_kernel: Object.fromEntries(byKernel.slice(0, PROFILE_KERNELS).map(([k, t]) => [k, Math.round(t * 100) / 100])),
    };
  } finally {
    g.release();
    timer.destroy();
  }
}

function writeChart(path: string, rows: Row[], adapter: string): void {
  const groups = rows.map((r) => ({ label: String(r.shape), values: [Number(r.gflops ?? 0), Number(r.ort_webgpu_gflops ?? 0)] }));
  const svg = groupedBarSvg(
    groups,
    [
      { name: 'webtron WGSL', color: '#1f77b4' },
      { name: 'onnxruntime WebGPU', color: '#ff7f0e' },
    ],
    {
      title: `matmul GFLOP/s, host to host (${adapter.split(':')[0]})`,
      xLabel: 'shape',
      yLabel: 'GFLOP/s',
      yFormat: (y) => y.toFixed(1),
    },
  );
  writeFileAtomic(path, svg);
  progress(`wrote ${path}`);
}

export const nnBench: Bench = {
  name: 'nn',
  summary: 'WGSL matmul vs onnxruntime (WebGPU and CPU); GPT forward+backward vs torch (CPU, or CUDA)',
  columns: [
    'bench',
    'shape',
    'dtype',
    'kernel',
    'deep_plan',
    'config',
    'precision',
    'ms',
    'gflops',
    'ort_webgpu_gflops',
    'ort_cpu_gflops',
    'vs_ort_webgpu',
    'kernel_gflops',
    'ort_webgpu_kernel_gflops',
    'kernel_vs_ort_webgpu',
    'gpu_timestamp_gflops',
    'torch_gflops',
    'vs_torch_gemm',
    'tokens_per_s',
    'host_ms',
    'torch_tokens_per_s',
    'torch_device',
    'ratio_to_torch',
    'fraction_of_limit',
  ],
  flags: {
    matmul: { kind: 'list', default: ['1024', '512', 'gpt'], help: "matmul sizes: squares, 'gpt' for the GPT config's shapes, or none" },
    'matmul-dtypes': {
      kind: 'list',
      default: ['float32', 'float16'],
      help: 'weights of the matmuls: float32, and float16 (the kernel --fp16 trains with: tensor cores where the adapter has them)',
    },
    config: { kind: 'string', default: 'char-4x128', help: `GPT config: ${Object.keys(GPT_CONFIGS).join(', ')}, or none for matmul only` },
    python: { kind: 'string', default: '/usr/bin/python3', help: 'python with torch for the reference' },
    'torch-device': { kind: 'string', default: 'cpu', help: 'where torch runs the GPT reference: cpu, or cuda on an NVIDIA GPU' },
    runs: { kind: 'int', default: 10, help: 'timed runs (median reported)' },
    warmup: { kind: 'int', default: 2, help: 'untimed runs first' },
    chart: { kind: 'string', help: 'write an SVG chart of matmul GFLOP/s (webtron vs onnxruntime WebGPU) to this file' },
    'no-torch': { kind: 'boolean', help: 'leave out torch (its GEMMs, the GPT reference and the CPU limit)' },
    'gpt-precisions': {
      kind: 'list',
      default: ['fp32'],
      help: `the GPT's precisions, as webtron train's (${Object.keys(PRECISION_DTYPES).join(', ')}); torch runs each under autocast`,
    },
    'no-gpt': { kind: 'boolean', help: "leave out the GPT forward+backward (--config still gives 'gpt' its shapes)" },
  },
  async run(env, flags) {
    const dtypes = flags['matmul-dtypes'] as string[];
    for (const d of dtypes)
      if (d !== 'float32' && d !== 'float16') throw new FlagError(`--matmul-dtypes: '${d}' is neither float32 nor float16`);
    const precisions = flags['gpt-precisions'] as Precision[];
    for (const p of precisions)
      if (!Object.hasOwn(PRECISION_DTYPES, p))
        throw new FlagError(`--gpt-precisions: '${p}' is not one of ${Object.keys(PRECISION_DTYPES).join(', ')}`);
    const ctx = await env.gpu();
    const name = flags.config as string;
    const config = GPT_CONFIGS[name === 'none' ? 'char-4x128' : name];
    if (!config) throw new FlagError(`--config: unknown GPT config '${name}'; known: ${Object.keys(GPT_CONFIGS).join(', ')}`);
    const runs = flags.runs as number;
    const warmup = flags.warmup as number;
    const torchAt = flags['no-torch'] ? null : { python: flags.python as string, device: flags['torch-device'] as string };
    // The limit every row is a fraction of (a reference BLAS is refused here, before anything runs):
    // torch's GEMM on every core for a CPU driver, the vendor's peak for a known GPU.
    const cpuLimit = ctx.software && torchAt ? cpuGemmLimit(torchAt.python) : null;
    const peak = ctx.software ? null : knownPeaks(ctx.adapterModel);
    const rows = await matmulRows(ctx, flags.matmul as string[], dtypes, config, warmup, runs, torchAt);
    if (flags.chart) writeChart(flags.chart as string, rows, ctx.adapterName);
    if (name !== 'none' && !flags['no-gpt'])
      for (const precision of precisions) rows.push(await gptRow(ctx, name, config, precision, torchAt, warmup, runs));
    // Each row against the limit of its arithmetic: fp32, or 16-bit (on tensor cores where webtron
    // uses them); on a GPU also against webtron's best kernel of its kind at the largest square here.
    const half = (r: Row) => r.dtype === 'float16' || (r.precision !== undefined && r.precision !== 'fp32');
    const limitOf = (r: Row): { gflops: number; what: string } | null => {
      if (cpuLimit)
        return {
          gflops: cpuLimit.gemm_gflops,
          what: `torch fp32 GEMM ${cpuLimit.gemm_size}^3, ${cpuLimit.threads} threads, ${cpuLimit.blas.kind}`,
        };
      if (!peak) return null;
      if (!half(r)) return { gflops: peak.fp32 * 1e3, what: `${peak.name} fp32 peak` };
      if (ctx.subgroupMatrix) return { gflops: peak.half * 1e3, what: `${peak.name} fp16 tensor-core peak` };
      return peak.fp16 === null ? null : { gflops: peak.fp16 * 1e3, what: `${peak.name} fp16 peak` };
    };
    const bestOf = (kind: boolean): number | null => {
      const squares = rows.filter((r) => r.bench === 'matmul' && r.m === r.n && r.n === r.k && half(r) === kind);
      const largest = squares.sort((a, b) => (b.m as number) - (a.m as number))[0];
      return (largest?.gpu_timestamp_gflops as number | undefined) ?? null;
    };
    for (const row of rows) {
      const achieved = (row.gpu_timestamp_gflops ?? row.gflops) as number | null;
      if (achieved === null || achieved === undefined) continue;
      const limit = limitOf(row);
      row.fraction_of_limit = fractionOf(achieved, limit?.gflops ?? null);
      if (!ctx.software) row.fraction_of_best_kernel = fractionOf(achieved, bestOf(half(row)));
      row.limit = limit ? `${limit.gflops} GFLOP/s (${limit.what})` : null;
    }
    return rows;
  },
};
