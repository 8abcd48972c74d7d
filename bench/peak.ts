/**
 * `npm run bench -- peak`: the arithmetic peak this adapter reaches through WGSL, with no memory
 * traffic, so that every kernel's figure has a ceiling measured the same way beside it:
 * - `fma-f32`: vec4 fma chains on registers (shaders/peak-fma.wgsl): the ceiling of fp32 kernels;
 *   `fma-f32-staged`: the tiled matmul's inner loop, its operands read from workgroup memory;
 * - `mma-f16-regs` and `mma-f16-staged`, where the adapter offers f16 subgroup matrices
 *   (shaders/peak-mma.wgsl): the tensor cores' multiply-accumulate rate alone, and with the
 *   fragments loaded from workgroup memory at every step as the tensor-core matmul loads them.
 * Each kernel runs at several dispatch lengths (`--durations`), timed by GPU timestamps and by the
 * wall clock, since a rate that falls as a dispatch grows says the clock drops under load or the
 * timestamps miss time, not a kernel. Every length's result is checked exactly before its row is kept.
 */
import { FlagError } from '../src/cli/flags.js';
import { type DeviceBuffer, type GpuContext, storageUsage } from '../src/gpu/context.js';
import { type Binding, UniformSlots } from '../src/gpu/kernels.js';
import type { UniformValues } from '../src/gpu/bindings.js';
import { knownPeaks } from '../src/train/throughput.js';
import type { Bench } from './bench.js';
import { cpuGemmLimit, fractionOf } from './limits.js';
import { productRows } from './nn.js';
import { type Row, progress } from './report.js';
import { median, timeGpu, timeGpuInterleaved } from './timing.js';

export type PeakKind = 'fma-f32' | 'fma-f32-staged' | 'mma-f16-regs' | 'mma-f16-staged';

/** The fma kernels' invocations per workgroup (FLOPs per invocation per iteration: 64, and 32 staged). */
const FMA_WG = 256;
/** The subgroup-matrix kernel's subgroups per workgroup and staged fragment sets. */
export const PEAK_NSUB = 4;
export const PEAK_SETS = 2;

/**
 * What an invocation of peak-fma.wgsl writes after `iters` iterations with a = b = 1: Σ (c + iters)
 * over its 32 chains (`fma_f32`), or its 16 lanes (`fma_f32_staged`).
 */
export function fmaExpected(iters: number, staged = false): number {
  return staged ? 120 + 16 * iters : 496 + 32 * iters;
}

/** The inputs of peak-mma.wgsl: PEAK_SETS sets of 2 fragments of A (FM x FK) and 4 of B (FK x FN), small integers (exact in f16). */
export function mmaInputs(shape: { m: number; n: number; k: number }, sets = PEAK_SETS): { a: Float32Array; b: Float32Array } {
  const a = Float32Array.from({ length: sets * 2 * shape.m * shape.k }, (_, i) => ((i * 7 + 3) % 5) - 2);
  const b = Float32Array.from({ length: sets * 4 * shape.k * shape.n }, (_, i) => ((i * 11 + 1) % 3) - 1);
  return { a, b };
}

/**
 * One subgroup's 8 fragments (fragment f row-major at f FM FN) after `iters` steps, step i using set
 * `(i + skew) % sets` (`sets` 1 for `regs`): Σ over steps of A[set][f / 4] @ B[set][f % 4], in float64
 * (the kernel's f32 sums are exact while |C| < 2^24).
 */
export function mmaExpected(
  shape: { m: number; n: number; k: number },
  inputs: { a: Float32Array; b: Float32Array },
  iters: number,
  sets: number,
  skew = 0,
): Float64Array {
  const { m, n, k } = shape;
  const out = new Float64Array(8 * m * n);
  for (let j = 0; j < sets; j++) {
    // Steps i < iters with (i + skew) % sets === j.
    const first = (((j - skew) % sets) + sets) % sets;
    const count = first < iters ? Math.floor((iters - 1 - first) / sets) + 1 : 0;
    for (let f = 0; f < 8; f++) {
      const a = (2 * j + (f >> 2)) * m * k;
      const b = (4 * j + (f & 3)) * k * n;
      for (let r = 0; r < m; r++)
        for (let c = 0; c < n; c++) {
          let s = 0;
          for (let x = 0; x < k; x++) s += inputs.a[a + r * k + x]! * inputs.b[b + x * n + c]!;
          const at = f * m * n + r * n + c;
          out[at] = out[at]! + count * s;
        }
    }
  }
  return out;
}

/**
 * A peak kernel ready to run `slots` configurations (each its own iteration count, set with
 * `setIters`), over `workgroups` workgroups of which the first `keep` write their results. `twin`
 * runs the subgroup-matrix kernels' plain twin (shaders/peak-mma-twin.wgsl) instead.
 */
export class PeakKernel {
  private readonly pipeline: GPUComputePipeline;
  private readonly uniforms: UniformSlots;
  private readonly out: DeviceBuffer;
  private readonly inputs: DeviceBuffer[] = [];
  private readonly iters: number[];
  readonly mma: { m: number; n: number; k: number; a: Float32Array; b: Float32Array } | null;
  readonly perWorkgroupIter: number;
  private readonly skew: number;

  constructor(
    private readonly ctx: GpuContext,
    readonly kind: PeakKind,
    readonly workgroups: number,
    private readonly keep: number,
    slots: number,
    options: { twin?: boolean; skew?: number } = {},
  ) {
    this.iters = new Array<number>(slots).fill(1);
    if (kind === 'fma-f32' || kind === 'fma-f32-staged') {
      this.mma = null;
      this.pipeline =
        kind === 'fma-f32'
          ? ctx.kernels.pipeline('peak-fma', 'fma_f32', { WG: FMA_WG })
          : ctx.kernels.pipeline('peak-fma', 'fma_f32_staged');
      this.perWorkgroupIter = FMA_WG * (kind === 'fma-f32' ? 64 : 32);
      this.out = this.buffer('peak.out', new Float32Array(keep * FMA_WG));
    } else {
      const shape = options.twin ? { m: 8, n: 8, k: 8 } : ctx.subgroupMatrixOffered;
      if (!shape) throw new Error(`${kind}: this adapter offers no f16 subgroup matrices`);
      const sg = options.twin ? 32 : ctx.subgroupMaxSize;
      this.mma = { ...shape, ...mmaInputs(shape) };
      const defines = { FM: shape.m, FN: shape.n, FK: shape.k, NSUB: PEAK_NSUB, NS: PEAK_SETS, PAD: 8 };
      const entry = kind === 'mma-f16-regs' ? 'regs' : 'staged';
      this.pipeline = ctx.kernels.pipeline(options.twin ? 'peak-mma-twin' : 'peak-mma', entry, { SG: sg }, defines);
      this.perWorkgroupIter = PEAK_NSUB * 8 * 2 * shape.m * shape.n * shape.k;
      this.inputs.push(this.buffer('peak.a', this.mma.a), this.buffer('peak.b', this.mma.b));
      this.out = this.buffer('peak.out', new Float32Array(keep * PEAK_NSUB * 8 * shape.m * shape.n));
    }
    this.uniforms = new UniformSlots(ctx, this.pipeline, slots, `peak.${kind}.uniforms`);
    this.skew = options.skew ?? 0;
  }

  private buffer(label: string, data: Float32Array): DeviceBuffer {
    const b = this.ctx.createBuffer({ label, size: data.byteLength, usage: storageUsage(), category: 'other' });
    this.ctx.transfers.upload(b, data);
    return b;
  }

  setIters(slot: number, iters: number): void {
    this.iters[slot] = iters;
    const values: UniformValues = this.mma
      ? { iters, keep: this.keep, skew: this.skew }
      : { iters, keep: this.keep, a: 1, b: 1, skew: this.skew };
    this.uniforms.set(slot, values);
    this.uniforms.upload();
  }

  /** FLOPs of one dispatch of `slot`. */
  flops(slot: number): number {
    return this.workgroups * this.iters[slot]! * this.perWorkgroupIter;
  }

  readonly encode = (encoder: GPUCommandEncoder, slot: number): void => {
    const [a, b] = this.inputs;
    const storage: Record<string, Binding> = a && b ? { A: a, B: b, C: this.out } : { out: this.out };
    const group = this.ctx.kernels.bindGroup(this.pipeline, storage, this.uniforms.binding(slot));
    const pass = encoder.beginComputePass({ label: `peak.${this.kind}` });
    this.ctx.kernels.dispatchInPass(pass, this.pipeline, [group], this.workgroups);
    pass.end();
  };

  /** Run `slot` once and read back every kept result. */
  async results(slot: number): Promise<Float32Array> {
    const encoder = this.ctx.device.createCommandEncoder();
    this.encode(encoder, slot);
    this.ctx.submit([encoder.finish()]);
    return this.ctx.transfers.readFloat32(this.out);
  }

  /** Run `slot` once and compare every kept result with its exact value: null, or what differs. */
  async check(slot: number): Promise<string | null> {
    const got = await this.results(slot);
    const iters = this.iters[slot]!;
    const want = this.mma
      ? mmaExpected(this.mma, this.mma, iters, this.kind === 'mma-f16-regs' ? 1 : PEAK_SETS, this.skew)
      : Float64Array.of(fmaExpected(iters, this.kind === 'fma-f32-staged'));
    for (let i = 0; i < got.length; i++) {
      const w = want[i % want.length]!;
      if (got[i] !== w) return `${this.kind} at ${iters} iterations: element ${i} is ${got[i]}, not ${w}`;
    }
    return null;
  }

  destroy(): void {
    this.uniforms.destroy();
    this.out.destroy();
    for (const b of this.inputs) b.destroy();
  }
}

/** The most iterations a dispatch runs: every kernel's results stay exact in f32 up to it (below 2^24). */
const MAX_ITERS = 1 << 18;

/** Rows of `kind` at each of `durations` (ms, reached by scaling a first timing), checked. */
async function peakRows(
  ctx: GpuContext,
  kind: PeakKind,
  workgroups: number,
  durations: number[],
  timing: { warmup: number; runs: number },
): Promise<Row[]> {
  const kernel = new PeakKernel(ctx, kind, workgroups, 2, durations.length + 1);
  try {
    // Milliseconds per iteration, from a dispatch long enough that its fixed costs do not count:
    // 16 iterations first, then as many as the longest length (at most 10 ms) takes at that rate.
    let iters = 16;
    let perIter = 0;
    for (const cap of [0, Math.min(Math.max(...durations), 10)]) {
      if (cap > 0) iters = Math.max(iters, Math.min(MAX_ITERS, Math.round(cap / perIter)));
      kernel.setIters(0, iters);
      perIter = (await timeGpu(ctx, (e) => kernel.encode(e, 0), { warmup: 1, runs: 3 })).ms / iters;
    }
    for (const [i, ms] of durations.entries())
      kernel.setIters(i + 1, Math.max(1, Math.min(MAX_ITERS, Math.round(ms / Math.max(perIter, 1e-9)))));
    const slots = durations.map((_, i) => i + 1);
    const timed = await timeGpuInterleaved(
      ctx,
      slots.map((s) => (e: GPUCommandEncoder) => kernel.encode(e, s)),
      timing,
    );
    const rows: Row[] = [];
    for (const [i, slot] of slots.entries()) {
      const wrong = await kernel.check(slot);
      if (wrong) throw new Error(`peak: ${wrong}`);
      const wall = await wallMs(ctx, (e) => kernel.encode(e, slot), timing.runs);
      const gflop = kernel.flops(slot) / 1e9;
      const t = timed[i]!;
      rows.push({
        bench: 'peak',
        kernel: kind,
        target_ms: durations[i]!,
        iters: kernel.flops(slot) / kernel.workgroups / kernel.perWorkgroupIter,
        workgroups: kernel.workgroups,
        ms: t.ms,
        gflops: gflop / (t.ms / 1e3),
        timing: t.method,
        wall_ms: wall,
        wall_gflops: gflop / (wall / 1e3),
        ...(kernel.mma ? { fragment: `${kernel.mma.m}x${kernel.mma.n}x${kernel.mma.k}` } : {}),
        backend: ctx.backend,
        adapter: ctx.adapterName,
        dawn_toggles: ctx.found.toggles,
      });
      progress(`peak ${kind}: ${rows.at(-1)!.gflops} GFLOP/s over ${t.ms.toFixed(2)} ms`);
    }
    return rows;
  } finally {
    kernel.destroy();
  }
}

/** Median wall-clock milliseconds of one submitted dispatch, from submit to the queue's drain. */
async function wallMs(ctx: GpuContext, encode: (encoder: GPUCommandEncoder) => void, runs: number): Promise<number> {
  const samples: number[] = [];
  for (let r = 0; r < runs; r++) {
    const encoder = ctx.device.createCommandEncoder();
    encode(encoder);
    await ctx.sync();
    const t0 = performance.now();
    ctx.submit([encoder.finish()]);
    await ctx.sync();
    samples.push(performance.now() - t0);
  }
  return median(samples);
}

export const peakBench: Bench = {
  name: 'peak',
  summary: 'arithmetic peak through WGSL: fp32 fma, and f16 subgroup matrices where offered, by dispatch length',
  columns: [
    'kernel',
    'target_ms',
    'iters',
    'workgroups',
    'ms',
    'gflops',
    'wall_ms',
    'wall_gflops',
    'gpu_timestamp_gflops',
    'fraction_of_peak',
    'fraction_of_limit',
  ],
  flags: {
    durations: { kind: 'list', default: ['0.5', '5', '50'], help: 'dispatch lengths to time each kernel at, ms' },
    workgroups: { kind: 'int', default: 0, help: 'workgroups per dispatch (0: 64 on a CPU driver, 8192 on a GPU)' },
    runs: { kind: 'int', default: 10, help: 'timed runs per length (median reported)' },
    warmup: { kind: 'int', default: 2, help: 'untimed runs first' },
    python: { kind: 'string', default: '/usr/bin/python3', help: "python with torch, whose GEMM is a CPU driver's limit" },
    'no-torch': { kind: 'boolean', help: "leave out torch's GEMM (a CPU driver's limit)" },
    product: { kind: 'int', default: 1024, help: "webtron's matmul of this square size beside the peaks, as a fraction of them (0: none)" },
  },
  async run(env, flags) {
    const durations = (flags.durations as string[]).map(Number);
    if (durations.some((d) => !(d > 0)))
      throw new FlagError(`--durations: '${(flags.durations as string[]).join(',')}' must be positive milliseconds, e.g. 0.5,5,50`);
    for (const name of ['workgroups', 'product'])
      if ((flags[name] as number) < 0)
        throw new FlagError(
          `--${name}: ${flags[name]} is negative; give a positive number, or 0 for ${name === 'product' ? 'none' : 'the default'}`,
        );
    const ctx = await env.gpu();
    const workgroups = (flags.workgroups as number) || (ctx.software ? 64 : 8192);
    const timing = { warmup: flags.warmup as number, runs: flags.runs as number };
    const kinds: PeakKind[] = ['fma-f32', 'fma-f32-staged'];
    if (ctx.subgroupMatrixOffered) kinds.push('mma-f16-regs', 'mma-f16-staged');
    else progress('peak: this adapter offers no f16 subgroup matrices; fp32 only');
    // Each row against its arithmetic's limit: torch's fp32 GEMM on every core for a CPU driver
    // (measured now), the vendor's peak for a known GPU.
    const cpu = ctx.software && !flags['no-torch'] ? cpuGemmLimit(flags.python as string) : null;
    const peak = ctx.software ? null : knownPeaks(ctx.adapterModel);
    const limitOf = (kind: PeakKind): { gflops: number; what: string } | null => {
      if (cpu) return { gflops: cpu.gemm_gflops, what: `torch fp32 GEMM ${cpu.gemm_size}^3, ${cpu.threads} threads, ${cpu.blas.kind}` };
      if (!peak) return null;
      return kind.startsWith('fma')
        ? { gflops: peak.fp32 * 1e3, what: `${peak.name} fp32 peak` }
        : { gflops: peak.half * 1e3, what: `${peak.name} fp16 tensor-core peak` };
    };
    const withLimit = (row: Row, gflops: number, kind: PeakKind): Row => {
      const limit = limitOf(kind);
      return {
        ...row,
        fraction_of_limit: fractionOf(gflops, limit?.gflops),
        limit: limit ? `${limit.gflops} GFLOP/s (${limit.what})` : null,
      };
    };
    const rows: Row[] = [];
    for (const kind of kinds)
      for (const row of await peakRows(ctx, kind, workgroups, durations, timing)) rows.push(withLimit(row, row.gflops as number, kind));
    // webtron's own matmul in the same run, against the peak of its arithmetic: fp32 against the
    // fma chains, fp16 weights on tensor cores against the subgroup matrices from registers.
    const size = flags.product as number;
    if (size > 0) {
      const dtypes = ctx.subgroupMatrix ? ['float32', 'float16'] : ['float32'];
      const best = (kind: PeakKind) => Math.max(...rows.filter((r) => r.kernel === kind).map((r) => r.gflops as number));
      for (const row of await productRows(ctx, null, `${size}³`, { m: size, k: size, n: size }, dtypes, timing, null)) {
        const peakKind: PeakKind = row.dtype === 'float32' ? 'fma-f32' : 'mma-f16-regs';
        const gflops = row.gpu_timestamp_gflops as number;
        // Its host-to-host figures belong to the nn bench: here the kernel's own time is the point.
        const { ms: _ms, gflops: _gflops, ...kernelRow } = row;
        rows.push(withLimit({ ...kernelRow, peak: peakKind, fraction_of_peak: fractionOf(gflops, best(peakKind)) }, gflops, peakKind));
      }
    }
    return rows;
  },
};
