/**
 * Tile shapes for the tiled matmul (shaders/matmul-tiled-body.wgsl), chosen per adapter and shape
 * class by timing every candidate on one representative product of each class, and cached on disk
 * keyed by the adapter, its driver and the kernel's source, so each machine tunes once.
 *
 * Shape classes: `small` (C has at most 256 x 256 elements: few tiles, so small ones keep every
 * core busy), `narrow` (C is at most 64 wide or tall: attention heads, narrow projections), `deep`
 * (k of at least DEEP_K: a linear layer's weight grad, whose k is the tokens of the batch, and
 * products into a layer from a wider one) and `large` (everything else).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';
import { cacheDir } from './cache-dir.js';
import type { DeviceBuffer, GpuContext } from './context.js';
import { GpuError } from './errors.js';
import { storageUsage } from './context.js';

export interface TileShape {
  /** Rows and columns of C per workgroup, k per staged step, rows and columns per invocation. */
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
}

/**
 * The tensor-core kernel's workgroup: SGR x SGC subgroups, each owning FR x FC fragments of C, so a
 * workgroup computes (FR SGR FM) x (FC SGC FN) of C (128 x 128 at 4 x 2 subgroups of 2 x 4 with
 * 16 x 16 fragments); it stages KS FK of k per step, and pads each staged row by PAD halves.
 */
export interface MmaGrid {
  sgr: number;
  sgc: number;
  /**
   * Fragments of C per subgroup, rows and columns: 2 x 4, or 4 x 4 (a third fewer fragment loads
   * per product, and a bigger tile of C per staged byte, for twice the accumulators).
   */
  fr: number;
  fc: number;
  /** Fragments of k (FK each) per staged step: BK = KS FK. */
  ks: number;
  /**
   * Halves after each row of a staged fragment of A and of B in workgroup memory: 0, or 8 (16 bytes),
   * which puts the 8 rows a fragment load reads together in 8 different groups of banks (rows of 16
   * halves would fall in the same ones two by two), and keeps every row 16-byte aligned.
   */
  pad: number;
}

/** The tensor-core workgroups the tuner times, where the probe passes them. */
export const MMA_CANDIDATES: readonly MmaGrid[] = [
  { sgr: 2, sgc: 1, fr: 2, fc: 4, ks: 2 },
  { sgr: 2, sgc: 2, fr: 2, fc: 4, ks: 2 },
  { sgr: 4, sgc: 2, fr: 2, fc: 4, ks: 2 },
  // Smaller workgroups would stage more than 8 slots of a 64-deep step per invocation.
  { sgr: 4, sgc: 2, fr: 2, fc: 4, ks: 4 },
  { sgr: 2, sgc: 2, fr: 4, fc: 4, ks: 2 },
  { sgr: 4, sgc: 2, fr: 4, fc: 4, ks: 2 },
].flatMap((g) => [0, 8].map((pad) => ({ ...g, pad })));

export const SHAPE_CLASSES = ['small', 'narrow', 'large', 'deep'] as const;
export type ShapeClass = (typeof SHAPE_CLASSES)[number];

/** The candidates the tuner times (those the device's limits allow). */
export const TILE_CANDIDATES: readonly TileShape[] = [
  { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4 },
  { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
  { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 },
];

/** Untuned choices: what the tuner picks most often on the GPUs it has run on. */
export const DEFAULT_TILES: Record<ShapeClass, TileShape> = {
  small: { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 },
  narrow: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  deep: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
};

/** Untuned tensor-core workgroups: the smallest for few tiles, the largest for the rest. */
export const DEFAULT_MMA: Record<ShapeClass, MmaGrid> = {
  small: { sgr: 2, sgc: 1, fr: 2, fc: 4, ks: 2, pad: 0 },
  narrow: { sgr: 2, sgc: 1, fr: 2, fc: 4, ks: 2, pad: 0 },
  large: { sgr: 4, sgc: 2, fr: 2, fc: 4, ks: 2, pad: 0 },
  deep: { sgr: 4, sgc: 2, fr: 2, fc: 4, ks: 2, pad: 0 },
};

/**
 * Tile rows per group in the order the tiled and tensor-core kernels' workgroups take their tiles
 * (`tile_rc` in shaders/matmul-slots.wgsl): workgroups running together share A's rows and B's
 * columns in cache instead of all of B.
 */
export const TILE_GROUP_M = 8;

/** The tiled kernel's pipeline constants for tile `t`, the tile order with them. */
export function tileConstants(t: TileShape): Record<string, number> {
  return { BM: t.bm, BN: t.bn, BK: t.bk, TM: t.tm, TN: t.tn, GROUP_M: TILE_GROUP_M };
}

/** The representative product [m, k] @ [k, n] each class is timed on (one of the class: shapeClass(m, n, k)). */
export const TUNING_SHAPES: Record<ShapeClass, [number, number, number]> = {
  small: [256, 256, 256],
  narrow: [4096, 1024, 64],
  large: [2048, 1024, 2048],
  deep: [8192, 3072, 768],
};

/**
 * k from which a product is `deep`. On an H200 the tiled kernel did 24 – 30 TFLOP/s on products of
 * k 768 to 2048 and about 5 on those of k 3072 and 4096 (by GPU timestamps, in the same tiles), and
 * in GPT-2 small's step half the FLOPs have a k of 2304 or more, so deep products get tiles and a
 * plan (DEEP_PLANS) of their own, timed on one of the slow products: GPT-2 small's mlp.proj forward
 * (8,192 tokens, k 3,072, 768 wide; A's rows 12 KB apart), whose C has as many tiles as the step's
 * other deep products that are not split (the input grads of qkv, fc and the head).
 */
export const DEEP_K = 2048;

/**
 * How the tiled and the tensor-core kernel run a deep product, each chosen with its tile or
 * workgroup by timing every candidate in all three on the deep tuning shape:
 * - `rows`: one dispatch, A read in place;
 * - `chunks`: one dispatch per range of at most DEEP_CHUNK_K of k, each adding into C (the first
 *   writes it, with the bias), so that no workgroup walks more of k than a large product's;
 * - `packed`: A, whose rows lie 4k bytes apart, first copied m-fast (shaders/transpose.wgsl), so
 *   that each step of a tile reads BK runs of BM contiguous words instead of BM runs of BK.
 * `packed` copies an A over PACKED_A_MAX_BYTES a range of k at a time. Products a plan cannot take
 * (gelu(C) in several ranges of k; a batched or m-fast A, packed) run as `rows`.
 */
export const DEEP_PLANS = ['rows', 'chunks', 'packed'] as const;
export type DeepPlan = (typeof DEEP_PLANS)[number];
/** The most k one dispatch of the `chunks` plan walks: the large class's tuning k. */
export const DEEP_CHUNK_K = 1024;
/**
 * The most bytes of one copy of A in the `packed` plan: WebGPU's default binding limit, which holds
 * GPT-2 small's and medium's widest A whole (mlp.proj over 8,192 tokens: 96 and 128 MiB), and keeps
 * the scratch the memory estimates do not count small.
 */
export const PACKED_A_MAX_BYTES = 128 * 2 ** 20;

/** The grid of shaders/transpose.wgsl, which moves a block of 32 x 32 per workgroup, for a rows x cols block. */
export function transposeWorkgroups(rows: number, cols: number): [number, number, number] {
  return [Math.ceil(cols / 32), Math.ceil(rows / 32), 1];
}

/** The ranges of k the `chunks` plan splits k into: `chunks` of `chunk` (a multiple of 4), the last one shorter. */
export function deepChunks(k: number): { chunk: number; chunks: number } {
  const chunk = Math.ceil(k / Math.ceil(k / DEEP_CHUNK_K) / 4) * 4;
  return { chunk, chunks: Math.ceil(k / chunk) };
}

/** The plan the adapter's tuning chose for deep products on the tiled or the tensor-core kernel (`rows` untuned). */
export function deepPlanFor(ctx: GpuContext, kernel: 'tiled' | 'mma'): DeepPlan {
  return (kernel === 'mma' ? ctx.matmulTuning.mmaDeepPlan : ctx.matmulTuning.deepPlan) ?? 'rows';
}

export function shapeClass(m: number, n: number, k: number): ShapeClass {
  if (m * n <= 256 * 256) return 'small';
  if (Math.min(m, n) <= 64) return 'narrow';
  return k >= DEEP_K ? 'deep' : 'large';
}

/** Why `tile` cannot run on this device, or null. */
export function tileProblem(ctx: GpuContext, t: TileShape): string | null {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  if (t.bm % t.tm !== 0 || t.bn % t.tn !== 0) return 'BM and BN must be multiples of TM and TN';
  if (![4, 8].includes(t.tm) || ![4, 8].includes(t.tn)) return 'TM and TN are 4 or 8';
  if (t.bk % 4 !== 0) return 'BK must be a multiple of 4';
  // The kernel stages at most 4 vec4 slots of each operand per invocation per step.
  if (Math.max(t.bm, t.bn) * t.bk > 16 * threads)
    return `${Math.max(t.bm, t.bn) * t.bk} elements staged per operand by ${threads} invocations`;
  if (threads > ctx.limits.maxComputeInvocationsPerWorkgroup) return `${threads} invocations per workgroup`;
  if (t.bn / t.tn > ctx.limits.maxComputeWorkgroupSizeX || t.bm / t.tm > ctx.limits.maxComputeWorkgroupSizeY) return 'workgroup too wide';
  if ((t.bm + t.bn) * t.bk * 4 > ctx.limits.maxComputeWorkgroupStorageSize) return 'tiles exceed workgroup memory';
  return null;
}

export interface MatmulTuning {
  tiles: Record<ShapeClass, TileShape>;
  /**
   * Whether the tensor-core kernel computed a product right on this adapter (null: the adapter has
   * no subgroup matrices, or it was not probed). The kernel is used only after it has.
   */
  mma?: boolean | null;
  /** The tensor-core workgroup by class, among those the probe passed (absent: not tuned). */
  mmaGrids?: Record<ShapeClass, MmaGrid>;
  /** GFLOP/s of each class's choice on its tuning shape (empty when not tuned). */
  gflops: Partial<Record<ShapeClass, number>>;
  /** GFLOP/s of each class's tensor-core choice, with fp16 B. */
  mmaGflops?: Partial<Record<ShapeClass, number>>;
  /** How deep products run on the tiled kernel and on the tensor-core one (absent: `rows`, untuned). */
  deepPlan?: DeepPlan;
  mmaDeepPlan?: DeepPlan;
  /** Every candidate's GFLOP/s, not only the choices' (absent: not tuned, or cached before they were kept). */
  times?: TuningTimes;
  /** 'tuned' now, 'cache' (read from `cachePath`), or 'default' (not tuned). */
  source: 'tuned' | 'cache' | 'default';
  cachePath: string | null;
  tunedAt?: string;
}

/**
 * What the tuner measured of every candidate, by class and by its description (`describeTile`,
 * `describeMma`): its GFLOP/s on the class's tuning shape, the better of its rounds (0 where the
 * timestamps did not advance). A choice is one row of these; the rest say how far behind the others
 * came, which is what tells a kernel change that helps on a GPU from one that does not.
 */
export interface TuningTimes {
  tiles: Partial<Record<ShapeClass, Record<string, number>>>;
  mma: Partial<Record<ShapeClass, Record<string, number>>>;
  /**
   * Deep products in the plans other than `rows` (whose times are the deep class's): each tile's and
   * each tensor-core workgroup's GFLOP/s on the deep tuning shape, the plan's extra passes included.
   */
  deepPlans?: Partial<Record<DeepPlan, Record<string, number>>>;
  mmaDeepPlans?: Partial<Record<DeepPlan, Record<string, number>>>;
  /** Candidates left untimed, and why: beyond the device's limits, or (tensor cores) a wrong product in the probe. */
  untimed: { tiles: Record<string, string>; mma: Record<string, string> };
}

/**
 * How the tuner measures; a new method re-tunes every cached adapter (2: unquantized timestamps, a
 * warm-up, interleaved rounds; 3: the deep class, and narrow timed on a narrow product; 4: deep
 * plans, and deep timed on GPT-2 small's mlp.proj).
 */
const TUNING_METHOD = 4;

/** The adapter, its driver (Dawn's description carries the driver version), the backend, Dawn's toggles, and the kernels' source and tuning method. */
export function tuningKey(ctx: GpuContext): string {
  const info = ctx.found.info;
  const sources = [`method ${TUNING_METHOD}`, ...['matmul-tiled', 'matmul-mma', 'transpose'].map((name) => ctx.kernels.source(name))].join(
    '\n',
  );
  const kernel = createHash('sha256').update(sources).digest('hex').slice(0, 16);
  return [ctx.backend, info.vendor, info.architecture, info.device, info.description, ctx.found.toggles.join(','), kernel].join('|');
}

interface CacheFile {
  version: 1;
  entries: Record<
    string,
    {
      tiles: Record<ShapeClass, TileShape>;
      gflops: Partial<Record<ShapeClass, number>>;
      tunedAt: string;
      mma?: boolean | null;
      mmaGrids?: Record<ShapeClass, MmaGrid>;
      mmaGflops?: Partial<Record<ShapeClass, number>>;
      deepPlan?: DeepPlan;
      mmaDeepPlan?: DeepPlan;
      times?: TuningTimes;
    }
  >;
}

function readCache(path: string): CacheFile {
  if (!existsSync(path)) return { version: 1, entries: {} };
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as CacheFile;
    return parsed.version === 1 && typeof parsed.entries === 'object' ? parsed : { version: 1, entries: {} };
  } catch {
    return { version: 1, entries: {} }; // a damaged cache is rebuilt, never trusted
  }
}

/** The tile shape the adapter's tuning chose for a product of this shape. */
export function tileFor(ctx: GpuContext, m: number, n: number, k: number): TileShape {
  return ctx.matmulTuning.tiles[shapeClass(m, n, k)];
}

/** The tensor-core workgroup the adapter's tuning chose for a product of this shape. */
export function mmaFor(ctx: GpuContext, m: number, n: number, k: number): MmaGrid {
  const cls = shapeClass(m, n, k);
  return ctx.matmulTuning.mmaGrids?.[cls] ?? DEFAULT_MMA[cls];
}

/** The tensor-core kernel's tile of C and staged step of k with fragments of `shape` and `grid`. */
export function mmaTile(shape: { m: number; n: number; k: number }, grid: MmaGrid): { bm: number; bn: number; bk: number } {
  return { bm: grid.fr * grid.sgr * shape.m, bn: grid.fc * grid.sgc * shape.n, bk: grid.ks * shape.k };
}

/** The tensor-core kernel's (and its twin's) module defines for fragments of `shape` and `grid`. */
export function mmaDefines(shape: { m: number; n: number; k: number }, grid: MmaGrid): Record<string, number> {
  return { FM: shape.m, FN: shape.n, FK: shape.k, SGR: grid.sgr, SGC: grid.sgc, FR: grid.fr, FC: grid.fc, KS: grid.ks, PAD: grid.pad };
}

/** The tensor-core kernel's entry point for `grid`: `main` names its 2 x 4 fragments, `frags` holds any in arrays. */
export function mmaEntry(grid: MmaGrid): 'main' | 'frags' {
  return grid.fr === 2 && grid.fc === 4 ? 'main' : 'frags';
}

/** Workgroups of the tensor-core kernel for C of m x n in `batches`. */
export function mmaWorkgroups(
  shape: { m: number; n: number; k: number },
  grid: MmaGrid,
  m: number,
  n: number,
  batches = 1,
): [number, number, number] {
  const t = mmaTile(shape, grid);
  return [Math.ceil(n / t.bn), Math.ceil(m / t.bm), batches];
}

export function describeMma(grid: MmaGrid): string {
  return `${grid.sgr}x${grid.sgc} subgroups of ${grid.fr}x${grid.fc} fragments, ${grid.ks} fragments of k a step${grid.pad ? `, rows padded ${grid.pad}` : ''}`;
}

/**
 * Why the tensor-core kernel (or, `twin`, its plain twin) cannot run with fragments of `shape`,
 * subgroups of `sg` lanes and `grid` subgroups here, or null.
 */
export function mmaProblem(
  ctx: GpuContext,
  shape: { m: number; n: number; k: number },
  sg: number,
  grid: MmaGrid,
  twin = false,
): string | null {
  const threads = grid.sgr * grid.sgc * sg;
  const { bm, bn, bk } = mmaTile(shape, grid);
  if (sg <= 0) return 'the adapter does not say its subgroup size';
  if (![2, 4].includes(grid.ks) || ![0, 8].includes(grid.pad) || ![2, 4].includes(grid.fr) || grid.fc !== 4)
    return 'subgroups hold 2 x 4 or 4 x 4 fragments, steps are 2 or 4 fragments of k, and rows are padded 0 or 8';
  if (threads > ctx.limits.maxComputeInvocationsPerWorkgroup || threads > ctx.limits.maxComputeWorkgroupSizeX)
    return `${threads} invocations per workgroup`;
  if ((bm * bk) / 4 > 8 * threads || (bk * bn) / 4 > 8 * threads) return `more than 8 slots of a tile per invocation`;
  // Halves staged: each fragment's rows padded (matmul-mma-body.wgsl's As and Bs).
  const staged = 2 * (bm * grid.ks * (shape.k + grid.pad) + bk * (bn / shape.n) * (shape.n + grid.pad));
  if (staged + 4 * grid.sgr * grid.sgc * shape.m * shape.n > ctx.limits.maxComputeWorkgroupStorageSize)
    return 'tiles exceed workgroup memory';
  if (twin && (bm * bn) / threads > 256) return `the twin holds ${(bm * bn) / threads} elements per invocation, at most 256`;
  return null;
}

/** GFLOP/s of `tile` on [m, k] @ [k, n] with fp32 operands: the median of `runs` timed dispatches. */
export function timeTile(ctx: GpuContext, tile: TileShape, shape: [number, number, number], runs = 5): Promise<number> {
  return timeProduct(ctx, { tile }, shape, runs);
}

/** GFLOP/s of the tensor-core kernel with `grid` on [m, k] @ [k, n], fp32 A and fp16 B. */
export function timeMma(ctx: GpuContext, grid: MmaGrid, shape: [number, number, number], runs = 5): Promise<number> {
  return timeProduct(ctx, { mma: grid }, shape, runs);
}

/** A timed product's kernel: the tiled one with a tile or the tensor-core one with a workgroup, and a deep plan. */
type Kernel = ({ tile: TileShape } | { mma: MmaGrid }) & { plan?: DeepPlan };

/** One dispatch of a timed product: its pipeline, uniforms, buffers by binding name, and grid. */
interface TimedStep {
  pipeline: GPUComputePipeline;
  values: Record<string, number>;
  buffers: Record<string, DeviceBuffer>;
  grid: [number, number, number];
}

async function timeProduct(ctx: GpuContext, kernel: Kernel, [m, k, n]: [number, number, number], runs: number): Promise<number> {
  // Dawn's null backend executes no commands: its timestamps never advance, and a readback returns
  // whatever its pooled staging buffer held before (another readback's bytes), so nothing is measured.
  if (ctx.backend === 'null') return 0;
  const half = 'mma' in kernel;
  const buffer = (label: string, bytes: number) =>
    ctx.createBuffer({ label, size: Math.ceil(bytes / 16) * 16, usage: storageUsage(), category: 'other' });
  const A = buffer('tune.a', m * k * 4);
  const B = buffer('tune.b', k * n * (half ? 2 : 4));
  const C = buffer('tune.c', m * n * 4);
  const unused = buffer('tune.unused', 16); // gelu(C), not asked for
  const packed = kernel.plan === 'packed' ? buffer('tune.packed', m * k * 4) : null;
  const steps = productSteps(ctx, kernel, [m, k, n], { A, B, C, H: unused, packed });
  const uniforms = ctx.createBuffer({
    label: 'tune.uniforms',
    size: 256 * steps.length,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    category: 'other',
  });
  const view = new DataView(new ArrayBuffer(256 * steps.length));
  const groups = steps.map((step, i) => {
    ctx.kernels.packUniforms(step.pipeline, step.values, new DataView(view.buffer, 256 * i, 256));
    return ctx.kernels.bindGroup(step.pipeline, step.buffers, {
      buffer: uniforms,
      offset: 256 * i,
      size: ctx.kernels.uniformBytes(step.pipeline),
    });
  });
  ctx.device.queue.writeBuffer(uniforms.gpu, 0, view.buffer);
  const querySet = ctx.device.createQuerySet({ type: 'timestamp', count: 2 * (runs + 1) });
  const resolve = ctx.createBuffer({
    label: 'tune.resolve',
    size: 16 * (runs + 1),
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    category: 'staging',
  });
  try {
    const encoder = ctx.device.createCommandEncoder({ label: 'tune' });
    for (let r = 0; r <= runs; r++) {
      const pass = encoder.beginComputePass({
        timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * r, endOfPassWriteIndex: 2 * r + 1 },
      });
      for (const [i, step] of steps.entries()) {
        pass.setPipeline(step.pipeline);
        pass.setBindGroup(0, groups[i]!);
        pass.dispatchWorkgroups(...step.grid);
      }
      pass.end();
    }
    encoder.resolveQuerySet(querySet, 0, 2 * (runs + 1), resolve.gpu, 0);
    ctx.submit([encoder.finish()]);
    const bytes = await ctx.transfers.readback(resolve, 0, 16 * (runs + 1));
    const ns = new BigUint64Array(bytes.buffer, bytes.byteOffset, 2 * (runs + 1));
    // The first run warms up; the median of the rest.
    const ms = Array.from({ length: runs }, (_, r) => Number(ns[2 * r + 3]! - ns[2 * r + 2]!) / 1e6).sort((x, y) => x - y);
    const median = ms[runs >> 1]!;
    // 0: the device's timestamps did not advance (Dawn's null backend), so nothing was measured.
    return median > 0 ? (2 * m * n * k) / (median * 1e6) : 0;
  } finally {
    querySet.destroy();
    for (const b of [A, B, C, unused, uniforms, resolve, packed]) b?.destroy();
  }
}

/**
 * The dispatches of C = A @ B with row-major operands, as the layers run it: on the tensor-core or
 * the tiled kernel, in the deep plan asked for (rows when none is). Operands are read a vec4 at a
 * time where the sizes allow, as the layers' products are.
 */
function productSteps(
  ctx: GpuContext,
  kernel: Kernel,
  [m, k, n]: [number, number, number],
  buffers: { A: DeviceBuffer; B: DeviceBuffer; C: DeviceBuffer; H: DeviceBuffer; packed: DeviceBuffer | null },
): TimedStep[] {
  const { A, B, C, H } = buffers;
  const operands = { A, B, C, bias: B, H, A4: A, B4: B };
  const values = { M: m, N: n, K: k, NB1: 1, A_RS: k, A_CS: 1, B_RS: n, B_CS: 1, C_RS: n, alpha: 1 };
  const quads = { A_VEC: k % 4 === 0 ? 1 : 0, B_VEC: n % 4 === 0 ? 1 : 0 };
  // One dispatch of the product, with some of its constants, uniforms and buffers replaced.
  const product = (
    constants: Record<string, number> = {},
    over: Record<string, number> = {},
    bound: Record<string, DeviceBuffer> = {},
  ): TimedStep => {
    let pipeline: GPUComputePipeline;
    let grid: [number, number, number];
    if ('mma' in kernel) {
      const f = ctx.subgroupMatrixOffered!;
      const mma = { B_DTYPE: 2, SG: ctx.subgroupMaxSize, GROUP_M: TILE_GROUP_M, ...quads, ...constants };
      pipeline = ctx.kernels.pipeline('matmul-mma', mmaEntry(kernel.mma), mma, mmaDefines(f, kernel.mma));
      grid = mmaWorkgroups(f, kernel.mma, m, n);
    } else {
      const t = kernel.tile;
      pipeline = ctx.kernels.pipeline('matmul-tiled', 'main', { ...tileConstants(t), ...quads, ...constants });
      grid = [Math.ceil(n / t.bn), Math.ceil(m / t.bm), 1];
    }
    return { pipeline, values: { ...values, ...over }, buffers: { ...operands, ...bound }, grid };
  };
  if (kernel.plan === 'packed') {
    const P = buffers.packed!;
    return [
      {
        pipeline: ctx.kernels.pipeline('transpose', 'main', {}),
        values: { rows: m, cols: k, src_off: 0, src_rs: k },
        buffers: { src: A, dst: P },
        grid: transposeWorkgroups(m, k),
      },
      product({ A_KFAST: 0, A_VEC: m % 4 === 0 ? 1 : 0 }, { A_RS: 1, A_CS: m }, { A: P, A4: P }),
    ];
  }
  if (kernel.plan === 'chunks') {
    // Chunks start at multiples of 4 of k, so A's and B's slots stay aligned.
    const { chunk, chunks } = deepChunks(k);
    return Array.from({ length: chunks }, (_, i) =>
      product({}, { K: Math.min(chunk, k - i * chunk), a_off: i * chunk, b_off: i * chunk * n, FLAGS: i > 0 ? 2 : 0 }),
    );
  }
  return [product()];
}

export interface TuneOptions {
  /** Where the cache file lives (default `cacheDir()`); null: neither read nor write one. */
  cacheDir?: string | null;
  /** Time the candidates even when the cache has an entry. */
  force?: boolean;
  candidates?: readonly TileShape[];
  /** Tuning shapes by class (tests use small ones). */
  shapes?: Partial<Record<ShapeClass, [number, number, number]>>;
  /** Called with a line per class as it is tuned. */
  progress?: (line: string) => void;
}

/** The adapter's tile shapes: from the cache when it has them, else timed now and cached. Needs timestamp queries. */
export async function tuneMatmul(ctx: GpuContext, options: TuneOptions = {}): Promise<MatmulTuning> {
  const dir = options.cacheDir === undefined ? cacheDir() : options.cacheDir;
  const path = dir === null ? null : join(dir, 'matmul-tiles.json');
  const key = tuningKey(ctx);
  const cache = path ? readCache(path) : { version: 1 as const, entries: {} };
  const hit = cache.entries[key];
  if (hit && !options.force)
    return {
      tiles: hit.tiles,
      gflops: hit.gflops,
      source: 'cache',
      cachePath: path,
      tunedAt: hit.tunedAt,
      mma: hit.mma ?? null,
      ...(hit.mmaGrids ? { mmaGrids: hit.mmaGrids, mmaGflops: hit.mmaGflops ?? {} } : {}),
      ...(hit.deepPlan ? { deepPlan: hit.deepPlan } : {}),
      ...(hit.mmaDeepPlan ? { mmaDeepPlan: hit.mmaDeepPlan } : {}),
      ...(hit.times ? { times: hit.times } : {}),
    };
  if (!ctx.hasTimestamps) throw new GpuError(`adapter '${ctx.adapterName}' has no timestamp queries: the matmul tiles cannot be tuned`);
  const times: TuningTimes = { tiles: {}, mma: {}, untimed: { tiles: {}, mma: {} } };
  const candidates: TileShape[] = [];
  for (const t of options.candidates ?? TILE_CANDIDATES) {
    const problem = tileProblem(ctx, t);
    if (problem) times.untimed.tiles[describeTile(t)] = `cannot run here (${problem})`;
    else candidates.push(t);
  }
  if (candidates.length === 0) throw new GpuError(`no matmul tile candidate fits adapter '${ctx.adapterName}'`);
  const tiles = { ...DEFAULT_TILES };
  const gflops: Partial<Record<ShapeClass, number>> = {};
  await warmUp(ctx, candidates[0]!, options.shapes?.large ?? TUNING_SHAPES.large);
  for (const cls of SHAPE_CLASSES) {
    const shape = options.shapes?.[cls] ?? TUNING_SHAPES[cls];
    const best = await fastest(candidates, (tile) => timeTile(ctx, tile, shape));
    times.tiles[cls] = timesByName(candidates.map(describeTile), best.all);
    if (best.gflops === 0) {
      options.progress?.(`matmul tiles, ${cls}: the timestamps did not advance; default tiles`);
      continue;
    }
    tiles[cls] = best.pick;
    gflops[cls] = Math.round(best.gflops * 10) / 10;
    options.progress?.(`matmul tiles, ${cls} (${shape.join(' x ')}): ${describeTile(best.pick)} at ${gflops[cls]} GFLOP/s`);
  }
  let deepPlan: DeepPlan = 'rows';
  if (gflops.deep) {
    const shape = options.shapes?.deep ?? TUNING_SHAPES.deep;
    const kernels = candidates.map((tile) => ({ tile }));
    const rows = { pick: { tile: tiles.deep }, gflops: gflops.deep };
    const deep = await tuneDeepPlan(ctx, kernels, (k) => describeTile(k.tile), rows, shape, options);
    [deepPlan, tiles.deep, gflops.deep] = [deep.plan, deep.pick.tile, deep.gflops];
    times.deepPlans = deep.times;
  }
  const tensorCores = ctx.subgroupMatrixOffered ? await tuneMma(ctx, options, times) : null;
  const mma = tensorCores === null ? null : tensorCores.grids !== null;
  const mmaFields = tensorCores?.grids
    ? { mmaGrids: tensorCores.grids, mmaGflops: tensorCores.gflops, ...(tensorCores.deepPlan ? { mmaDeepPlan: tensorCores.deepPlan } : {}) }
    : {};
  const tunedAt = new Date().toISOString();
  let cachePath = path;
  if (path && dir) {
    // A cache that cannot be written (a read-only home, a browser tab, whose launcher serves no
    // cache folder) costs the next run a tuning, not this one its result.
    try {
      mkdirSync(dir, { recursive: true });
      cache.entries[key] = { tiles, gflops, tunedAt, mma, ...mmaFields, deepPlan, times };
      writeFileAtomic(path, `${JSON.stringify(cache, null, 2)}\n`);
    } catch (error) {
      cachePath = null;
      options.progress?.(`matmul tiles not cached: ${(error as Error).message}`);
    }
  }
  return { tiles, gflops, source: 'tuned', cachePath, tunedAt, mma, ...mmaFields, deepPlan, times };
}

/**
 * The fastest plan for deep products, each plan with the tile or workgroup that suits it best (in
 * chunks, each product walks the k of a large one; packed, A is staged m-fast): every candidate
 * timed in `chunks` and in `packed` on `shape`, against `rows`, the deep class's choice in one
 * dispatch. Returns the plan, its candidate, its GFLOP/s and every timing by plan.
 */
async function tuneDeepPlan<K extends { tile: TileShape } | { mma: MmaGrid }>(
  ctx: GpuContext,
  candidates: readonly K[],
  name: (kernel: K) => string,
  rows: { pick: K; gflops: number },
  shape: [number, number, number],
  options: TuneOptions,
): Promise<{ plan: DeepPlan; pick: K; gflops: number; times: Partial<Record<DeepPlan, Record<string, number>>> }> {
  const times: Partial<Record<DeepPlan, Record<string, number>>> = {};
  let chosen = { plan: 'rows' as DeepPlan, pick: rows.pick, gflops: rows.gflops };
  for (const plan of DEEP_PLANS) {
    if (plan === 'rows') continue;
    const best = await fastest(candidates, (kernel) => timeProduct(ctx, { ...kernel, plan }, shape, 5));
    times[plan] = timesByName(candidates.map(name), best.all);
    const gflops = Math.round(best.gflops * 10) / 10;
    if (gflops > chosen.gflops) chosen = { plan, pick: best.pick, gflops };
  }
  const which = 'mma' in rows.pick ? 'tensor cores' : 'matmul tiles';
  options.progress?.(`${which}, deep plan (${shape.join(' x ')}): ${chosen.plan} with ${name(chosen.pick)} at ${chosen.gflops} GFLOP/s`);
  return { ...chosen, times };
}

/** GFLOP/s by candidate name, rounded as the choices' are. */
function timesByName(names: readonly string[], gflops: readonly number[]): Record<string, number> {
  return Object.fromEntries(names.map((name, i) => [name, Math.round(gflops[i]! * 10) / 10]));
}

/** GPU time the tuner spends on one product before it times any: a GPU at idle clocks ramps up meanwhile. */
const WARM_UP_MS = 300;

/**
 * Run `tile` on `shape` until about WARM_UP_MS of GPU time has passed (at most 40 timings), so that
 * the first candidates are not timed at the idle clocks (an H200 idles at 345 MHz of its 1980).
 * Stops at once where timestamps do not advance.
 */
async function warmUp(ctx: GpuContext, tile: TileShape, shape: [number, number, number]): Promise<void> {
  const gflop = (2 * shape[0] * shape[1] * shape[2]) / 1e9;
  let ms = 0;
  for (let i = 0; i < 40 && ms < WARM_UP_MS; i++) {
    const gflops = await timeTile(ctx, tile, shape);
    if (gflops === 0) return;
    ms += (6 * gflop * 1e3) / gflops; // timeTile runs the product 6 times
  }
}

/** Rounds over all candidates in `fastest`: a clock that drifts during one round is seen by the next. */
const ROUNDS = 2;

/**
 * The candidate with the highest GFLOP/s, each timed once per round with the rounds interleaved,
 * and its best round kept (the first among equals); `all`, every candidate's best round, in order.
 */
async function fastest<T>(
  candidates: readonly T[],
  time: (candidate: T) => Promise<number>,
): Promise<{ pick: T; gflops: number; all: number[] }> {
  const best = candidates.map(() => -1);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, candidate] of candidates.entries()) best[i] = Math.max(best[i]!, await time(candidate));
    if (best.every((g) => g === 0)) break; // the timestamps did not advance: nothing to compare
  }
  const i = best.indexOf(Math.max(...best));
  return { pick: candidates[i] as T, gflops: best[i]!, all: best };
}

/**
 * The tensor-core workgroups that compute the probe's product exactly, the fastest of them per
 * class with fp16 B; grids null when none does (16-bit matmuls then use the tiled kernel). Every
 * candidate's time, or why it was not timed, goes into `times`.
 */
async function tuneMma(
  ctx: GpuContext,
  options: TuneOptions,
  times: TuningTimes,
): Promise<{ grids: Record<ShapeClass, MmaGrid> | null; gflops: Partial<Record<ShapeClass, number>>; deepPlan?: DeepPlan }> {
  const shape = ctx.subgroupMatrixOffered!;
  const passed: MmaGrid[] = [];
  for (const grid of MMA_CANDIDATES) {
    const problem = mmaProblem(ctx, shape, ctx.subgroupMaxSize, grid);
    const untimed = problem
      ? `cannot run here (${problem})`
      : // A in both layouts: the packed deep plan stages an m-fast copy of it.
        (await probeSubgroupMatrix(ctx, grid)) && (await probeSubgroupMatrix(ctx, grid, false))
        ? null
        : 'computed a wrong product here';
    if (untimed === null) passed.push(grid);
    else {
      times.untimed.mma[describeMma(grid)] = untimed;
      options.progress?.(`tensor cores, ${describeMma(grid)}: ${untimed}, not used`);
    }
  }
  if (passed.length === 0) {
    options.progress?.('subgroup matrices: no tensor-core workgroup computed the right product here; 16-bit matmuls use the tiled kernel');
    return { grids: null, gflops: {} };
  }
  // Unmeasured classes keep the default where it passed, else the first that did.
  const passedDefault = (cls: ShapeClass) => passed.find((g) => describeMma(g) === describeMma(DEFAULT_MMA[cls]));
  const grids = Object.fromEntries(SHAPE_CLASSES.map((cls) => [cls, passedDefault(cls) ?? passed[0]!])) as Record<ShapeClass, MmaGrid>;
  const gflops: Partial<Record<ShapeClass, number>> = {};
  for (const cls of SHAPE_CLASSES) {
    const size = options.shapes?.[cls] ?? TUNING_SHAPES[cls];
    const best = await fastest(passed, (grid) => timeMma(ctx, grid, size));
    times.mma[cls] = timesByName(passed.map(describeMma), best.all);
    if (best.gflops === 0) continue;
    grids[cls] = best.pick;
    gflops[cls] = Math.round(best.gflops * 10) / 10;
    options.progress?.(`tensor cores, ${cls} (${size.join(' x ')}): ${describeMma(best.pick)} at ${gflops[cls]} GFLOP/s`);
  }
  if (!gflops.deep) return { grids, gflops };
  const deepShape = options.shapes?.deep ?? TUNING_SHAPES.deep;
  const kernels = passed.map((mma) => ({ mma }));
  const rows = { pick: { mma: grids.deep }, gflops: gflops.deep };
  const deep = await tuneDeepPlan(ctx, kernels, (k) => describeMma(k.mma), rows, deepShape, options);
  [grids.deep, gflops.deep] = [deep.pick.mma, deep.gflops];
  times.mmaDeepPlans = deep.times;
  return { grids, gflops, deepPlan: deep.plan };
}

/**
 * Run the tensor-core kernel with `grid` once on a product whose f16 inputs and f32 sums are exact
 * ([160, 80] @ [80, 136] of small multiples of 1/8: several workgroups, edges inside tiles, three
 * steps of 32 in k or two of 64) and compare every element with the host's: an experimental feature
 * is used only where it computed the right answer. `aKFast`: A stored row-major, else m-fast.
 * `twin`: run the kernel's plain twin instead, with these fragments and subgroups (tests).
 */
export async function probeSubgroupMatrix(
  ctx: GpuContext,
  grid: MmaGrid,
  aKFast = true,
  twin?: { shape: { m: number; n: number; k: number }; sg: number },
): Promise<boolean> {
  const shape = twin?.shape ?? ctx.subgroupMatrixOffered;
  if (!shape) return false;
  const [m, k, n] = [160, 80, 136];
  const a = Float32Array.from({ length: m * k }, (_, i) => ((i * 7) % 17) / 8 - 1);
  const bHalf = Float32Array.from({ length: k * n }, (_, i) => ((i * 5) % 13) / 8 - 0.75);
  const words = new Uint16Array(k * n);
  for (let i = 0; i < words.length; i++) words[i] = halfBits(bHalf[i]!);
  const buffer = (label: string, bytes: number) =>
    ctx.createBuffer({ label, size: Math.ceil(bytes / 16) * 16, usage: storageUsage(), category: 'other' });
  const A = buffer('probe.a', a.byteLength);
  const B = buffer('probe.b', words.byteLength);
  const C = buffer('probe.c', m * n * 4);
  // A[i][p] at i k + p row-major, at p m + i m-fast.
  ctx.transfers.upload(A, aKFast ? a : Float32Array.from({ length: m * k }, (_, e) => a[(e % m) * k + Math.floor(e / m)]!));
  ctx.transfers.upload(B, words);
  const uniforms = ctx.createBuffer({
    label: 'probe.uniforms',
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    category: 'other',
  });
  const unused = buffer('probe.unused', 16); // gelu(C), not asked for
  try {
    const pipeline = ctx.kernels.pipeline(
      twin ? 'matmul-mma-twin' : 'matmul-mma',
      mmaEntry(grid),
      { B_DTYPE: 2, SG: twin?.sg ?? ctx.subgroupMaxSize, GROUP_M: TILE_GROUP_M, A_VEC: 1, B_VEC: 1, A_KFAST: aKFast ? 1 : 0 },
      mmaDefines(shape, grid),
    );
    const view = new DataView(new ArrayBuffer(256));
    const strides = aKFast ? { A_RS: k, A_CS: 1 } : { A_RS: 1, A_CS: m };
    ctx.kernels.packUniforms(pipeline, { M: m, N: n, K: k, NB1: 1, ...strides, B_RS: n, B_CS: 1, C_RS: n, alpha: 1 }, view);
    ctx.device.queue.writeBuffer(uniforms.gpu, 0, view.buffer);
    const group = ctx.kernels.bindGroup(
      pipeline,
      { A, B, C, bias: B, H: unused, A4: A, B4: B },
      { buffer: uniforms, offset: 0, size: ctx.kernels.uniformBytes(pipeline) },
    );
    const encoder = ctx.device.createCommandEncoder({ label: 'probe' });
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(...mmaWorkgroups(shape, grid, m, n));
    pass.end();
    ctx.submit([encoder.finish()]);
    const got = await ctx.transfers.readFloat32(C, 0, m * n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let want = 0;
        for (let p = 0; p < k; p++) want += a[i * k + p]! * bHalf[p * n + j]!;
        if (got[i * n + j] !== want) return false;
      }
    return true;
  } catch {
    return false; // a shader or device error: the kernel does not run here
  } finally {
    for (const b of [A, B, C, uniforms, unused]) b.destroy();
  }
}

/** fp16 bits of a value that fp16 holds exactly. */
function halfBits(x: number): number {
  if (x === 0) return 0;
  const sign = x < 0 ? 0x8000 : 0;
  const exponent = Math.floor(Math.log2(Math.abs(x)));
  const mantissa = Math.round((Math.abs(x) / 2 ** exponent - 1) * 1024);
  return sign | ((exponent + 15) << 10) | mantissa;
}

export function describeTile(t: TileShape): string {
  return `${t.bm}x${t.bn}x${t.bk}, ${t.tm}x${t.tn} per invocation`;
}

/**
 * Every candidate the tuner timed, per kernel and shape class, fastest first, then those it left
 * untimed with why: the lines `webtron info --tuning` prints.
 */
export function tuningLines(tuning: MatmulTuning): string[] {
  const times = tuning.times;
  if (!times) {
    return [
      tuning.source === 'default'
        ? 'the matmul is not tuned here (default tiles): nothing was timed'
        : `no timings kept for this tuning (${tuning.cachePath ?? 'cache'}); delete that file to tune again and keep them`,
    ];
  }
  const lines: string[] = [];
  const section = (title: string, gflopsByName: Record<string, number>) => {
    const rows = Object.entries(gflopsByName).sort((a, b) => b[1] - a[1]);
    if (rows.length === 0) return;
    lines.push(`${title}:`);
    const width = Math.max(...rows.map(([name]) => name.length));
    for (const [name, gflops] of rows)
      lines.push(`  ${name.padEnd(width)}  ${gflops > 0 ? `${gflops} GFLOP/s` : 'not measured (the timestamps did not advance)'}`);
  };
  const table = (kernel: string, byClass: TuningTimes['tiles']) => {
    for (const cls of SHAPE_CLASSES) section(`${kernel}, ${cls}`, byClass[cls] ?? {});
  };
  const plans = (kernel: string, byPlan: TuningTimes['deepPlans']) => {
    for (const plan of DEEP_PLANS) section(`${kernel}, deep, ${plan}`, byPlan?.[plan] ?? {});
  };
  table('tiled', times.tiles);
  plans('tiled', times.deepPlans);
  table('tensor cores', times.mma);
  plans('tensor cores', times.mmaDeepPlans);
  for (const [kernel, untimed] of [
    ['tiled', times.untimed.tiles],
    ['tensor cores', times.untimed.mma],
  ] as const)
    for (const [name, why] of Object.entries(untimed)) lines.push(`${kernel}, not timed: ${name}: ${why}`);
  return lines;
}
