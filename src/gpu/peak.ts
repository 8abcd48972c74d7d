/**
 * The arithmetic peak this adapter reaches through WGSL, with no global memory traffic: fp32 fma
 * chains on registers (shaders/peak-fma.wgsl), the tiled matmul's inner loop with its
 * workgroup-memory reads, and, where the adapter offers f16 subgroup matrices, the tensor cores'
 * multiply-accumulate from registers and from workgroup memory (shaders/peak-mma.wgsl). Every
 * result is exact, so a run is checked before its time counts. `npm run bench -- peak` times them
 * all; `measuredFmaPeak` is the denominator of `--log-throughput`'s MFU on adapters the vendor
 * table does not know.
 */
import type { UniformValues } from './bindings.js';
import { type DeviceBuffer, type GpuContext, storageUsage } from './context.js';
import { GpuError } from './errors.js';
import { type Binding, UniformSlots } from './kernels.js';
import { wallClockMs } from './timer.js';

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
  private readonly perWorkgroupIter: number;
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
      if (!shape) throw new GpuError(`${kind}: ${ctx.adapterName} offers no f16 subgroup matrices`);
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

  /** The iterations each invocation runs in a dispatch of `slot`. */
  itersAt(slot: number): number {
    return this.iters[slot]!;
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
export const MAX_ITERS = 1 << 18;

/**
 * GFLOP/s of the fp32 fma chains in dispatches of about `targetMs`, by the wall clock from submit
 * to the queue's drain (the best of `runs`, after about 200 ms of untimed ones so that a GPU at
 * idle clocks has ramped up), checked exactly. Its buffers are destroyed before it returns.
 */
export async function measuredFmaPeak(ctx: GpuContext, targetMs = 20, runs = 3): Promise<number> {
  const kernel = new PeakKernel(ctx, 'fma-f32', ctx.software ? 64 : 8192, 1, 1);
  const once = () => wallClockMs(ctx, (encoder) => kernel.encode(encoder, 0));
  try {
    let iters = 16;
    kernel.setIters(0, iters);
    await once(); // pipeline creation and first use
    for (const t0 = performance.now(); performance.now() - t0 < 200; ) {
      const ms = await once();
      iters = Math.max(1, Math.min(MAX_ITERS, Math.round((iters * targetMs) / Math.max(ms, 1e-3))));
      kernel.setIters(0, iters);
    }
    let best = Infinity;
    for (let r = 0; r < runs; r++) best = Math.min(best, await once());
    const wrong = await kernel.check(0);
    if (wrong) throw new GpuError(`the fp32 peak's kernel computed a wrong result on ${ctx.adapterName}: ${wrong}`);
    return kernel.flops(0) / (best / 1e3) / 1e9;
  } finally {
    kernel.destroy();
  }
}
