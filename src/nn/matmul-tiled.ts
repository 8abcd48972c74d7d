/**
 * The tiled matmul for hardware GPUs (shaders/matmul-tiled-body.wgsl): workgroup-memory tiles and a
 * register block per invocation, tile shapes from the adapter's tuning (src/gpu/matmul-tuner.ts).
 * 16-bit params stage in f16 where the device has shader-f16 (matmul-tiled-f16.wgsl states the
 * conversion rules), in f32 otherwise, and run on the tensor-core kernel (matmul-mma-body.wgsl)
 * where the adapter's subgroup matrices passed the tuner's probe.
 */
import type { SubgroupMatrixShape } from '../gpu/context.js';
import { GpuError } from '../gpu/errors.js';
import type { Binding } from '../gpu/kernels.js';
import {
  type DeepPlan,
  deepChunks,
  deepPlanFor,
  describeMma,
  describeTile,
  type MmaGrid,
  mmaDefines,
  mmaEntry,
  mmaFor,
  mmaProblem,
  mmaWorkgroups,
  PACKED_A_MAX_BYTES,
  shapeClass,
  TILE_GROUP_M,
  tileConstants,
  transposeWorkgroups,
  tileFor,
  tileProblem,
  type TileShape,
} from '../gpu/matmul-tuner.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { stridedOperands } from './matmul-operands.js';
import { aligned4, quadBinding } from './quads.js';
import { finishColumnSums, partials } from './split-sums.js';
import { paramCode, Tensor } from './tensor.js';

/**
 * Record C = alpha · A @ B (+ bias) (+ C) on the tiled kernel with `tile` (default: the adapter's
 * choice for the shape), 16-bit params on the tensor-core kernel where the adapter has subgroup
 * matrices; a deep product in `plan` (default: the adapter's choice for the kernel, `rows` where a
 * tile is given).
 */
export function tiledMatmul(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  c: Operand,
  options: MatmulOptions,
  tile?: TileShape,
  plan?: DeepPlan,
): void {
  const ctx = g.ctx;
  const shape = ctx.subgroupMatrix;
  // Profiles time a plan's dispatches under the class of the whole product.
  const cls = shapeClass(s.m, s.n, s.k);
  const deep = !tile && cls === 'deep';
  if (b.t.dtype !== 'float32' && shape && !tile) {
    const grid = mmaFor(ctx, s.m, s.n, s.k);
    matmulInPlan(g, s, a, b, options, plan ?? (deep ? deepPlanFor(ctx, 'mma') : 'rows'), (s1, a1, b1, o1) =>
      mmaMatmul(g, s1, a1, b1, c, o1, 'matmul-mma', shape, ctx.subgroupMaxSize, grid, cls),
    );
    return;
  }
  const problem = tile && tileProblem(ctx, tile);
  if (problem) throw new GpuError(`matmul tile ${describeTile(tile!)} cannot run here: ${problem}`);
  const t = tile ?? tileFor(ctx, s.m, s.n, s.k);
  const splits = tile ? 1 : splitsOfK(g, s, c, options, t);
  const how = plan ?? (deep ? deepPlanFor(ctx, 'tiled') : 'rows');
  if (splits > 1) {
    splitKMatmul(g, s, a, b, c, options, t, splits, how);
    return;
  }
  matmulInPlan(g, s, a, b, options, how, (s1, a1, b1, o1) => tiledDispatch(g, s1, a1, b1, c, o1, t, cls));
}

/** One product into a plan's C: C = alpha · A @ B (+ bias) (+ C) for this shape, these operands. */
export type PlannedProduct = (s: MatmulShape, a: Operand, b: Operand, options: MatmulOptions) => void;

/**
 * Record C = alpha · A @ B (+ bias) (+ C) as `plan` has it (matmul-tuner.ts, DEEP_PLANS), through
 * `product`; in one product where the plan cannot take it. `packedBytes`: the most bytes of A one
 * copy of the packed plan holds.
 */
export function matmulInPlan(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  options: MatmulOptions,
  plan: DeepPlan,
  product: PlannedProduct,
  packedBytes = PACKED_A_MAX_BYTES,
): void {
  if (plan === 'chunks' && inRanges(s, a, b, options, deepChunks(s.k), product)) return;
  if (plan === 'packed' && packed(g, s, a, b, options, product, packedBytes)) return;
  product(s, a, b, options);
}

/**
 * One product per range of k, the first writing C (or adding to it) with the bias, the rest adding
 * to it; `product` may take other operands for the range (`operands`). False, recording nothing,
 * where k is one range or gelu(C) is asked for (it needs the whole sum).
 */
function inRanges(
  s: MatmulShape,
  a: Operand,
  b: Operand,
  options: MatmulOptions,
  { chunk, chunks }: { chunk: number; chunks: number },
  product: PlannedProduct,
  operands: (k0: number, k: number) => Operand = (k0) => ({ ...a, off: (a.off ?? 0) + k0 * a.cs }),
): boolean {
  if (chunks < 2 || options.gelu) return false;
  for (let i = 0; i < chunks; i++) {
    const k0 = i * chunk;
    const k = Math.min(chunk, s.k - k0);
    product(
      { ...s, k },
      operands(k0, k),
      { ...b, off: (b.off ?? 0) + k0 * b.rs },
      {
        alpha: options.alpha,
        accumulate: i > 0 || options.accumulate,
        ...(i === 0 && options.bias ? { bias: options.bias } : {}),
      },
    );
  }
  return true;
}

/**
 * The ranges of k the packed plan copies A in: all of k where m x k fits `bytes`, else equal ranges
 * of a multiple of 4 that do. Null where not even 4 columns of A fit.
 */
export function packedRanges(m: number, k: number, bytes: number): { chunk: number; chunks: number } | null {
  const fit = Math.floor(bytes / (4 * m) / 4) * 4;
  if (k * m * 4 <= bytes) return { chunk: k, chunks: 1 };
  if (fit < 4) return null;
  const chunk = Math.ceil(k / Math.ceil(k / fit) / 4) * 4;
  return { chunk, chunks: Math.ceil(k / chunk) };
}

/**
 * The `packed` plan: A copied m-fast into a scratch of the runner (shaders/transpose.wgsl), then the
 * product reading the copy; an A larger than `bytes` (or a binding) a range of k at a time, each
 * range's product adding into C. False, recording nothing, where A is not k-fast, the product is
 * batched, or it takes several ranges and gelu(C) is asked for.
 */
function packed(g: Graph, s: MatmulShape, a: Operand, b: Operand, options: MatmulOptions, product: PlannedProduct, bytes: number): boolean {
  const ctx = g.ctx;
  const ranges = packedRanges(s.m, s.k, Math.min(bytes, ctx.limits.maxStorageBufferBindingSize));
  if (a.cs !== 1 || (s.nb0 ?? 1) * (s.nb1 ?? 1) > 1 || !ranges || (ranges.chunks > 1 && options.gelu)) return false;
  const A = a.t.binding(ctx);
  const copy = g.runner.scratch('packed-a', s.m * ranges.chunk * 4);
  const tag = shapeClass(s.m, s.n, s.k);
  // A's columns k0 .. k0 + k copied, as the operand that reads them.
  const copied = (k0: number, k: number): Operand => {
    const uniforms = { rows: s.m, cols: k, src_off: A.shift + (a.off ?? 0) + k0, src_rs: a.rs };
    g.runner.dispatch('transpose', 'main', {}, uniforms, { src: A.binding, dst: copy }, transposeWorkgroups(s.m, k), {}, tag);
    return { t: new Tensor(copy, 0, [s.m * k], 'float32'), rs: 1, cs: s.m };
  };
  if (ranges.chunks === 1) product(s, copied(0, s.k), b, options);
  else inRanges(s, a, b, options, ranges, product, copied);
  return true;
}

/** One dispatch of the tiled kernel with tile `t`, profiled under `tag`. */
function tiledDispatch(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  c: Operand,
  options: MatmulOptions,
  t: TileShape,
  tag: string,
): void {
  const ctx = g.ctx;
  const half = b.t.dtype !== 'float32';
  const { uniforms, bindings, gelu } = stridedOperands(g, s, a, b, c, options);
  const slots = vec4Slots(g, s, a, b);
  g.runner.dispatch(
    half && ctx.hasF16 ? 'matmul-tiled-f16' : 'matmul-tiled',
    'main',
    { ...tileConstants(t), B_DTYPE: paramCode(b.t, 'matmul B'), ...slots.constants },
    uniforms,
    { ...bindings, H: gelu ?? g.runner.writableDummy, ...slots.bindings },
    [Math.ceil(s.n / t.bn), Math.ceil(s.m / t.bm), (s.nb0 ?? 1) * (s.nb1 ?? 1)],
    {},
    tag,
  );
}

/** Tiles of C that fill a large GPU (about 8 workgroups on each of 132 cores): fewer are split along k. */
const SPLIT_K_TILES = 1024;
/** The shortest k a split takes. */
const SPLIT_K_MIN = 64;
/** The most bytes of partials a split product takes (GPT-2 small's qkv weight grad: 28 MiB). */
const SPLIT_K_MAX_BYTES = 32 * 2 ** 20;

/**
 * Into how many ranges of k to split C += A @ B (1: none). With split reductions, an accumulated
 * product whose C has few tiles and whose k is long (a weight grad: k is the tokens, C the weight)
 * runs as a batch of products over ranges of k into partials, which colsum.finish4 adds into C: a
 * 768 x 768 weight's grad is 144 tiles of 64 x 64, too few for a GPU, each walking all 8,192 tokens.
 */
function splitsOfK(g: Graph, s: MatmulShape, c: Operand, options: MatmulOptions, t: TileShape): number {
  const tiles = Math.ceil(s.m / t.bm) * Math.ceil(s.n / t.bn);
  const plain = (s.nb0 ?? 1) * (s.nb1 ?? 1) === 1 && options.accumulate && !options.bias && !options.gelu;
  const contiguous = c.rs === s.n && (s.m * s.n) % 4 === 0;
  if (g.ctx.reductionKernel !== 'split' || !plain || !contiguous || tiles * 2 > SPLIT_K_TILES) return 1;
  let splits = 1;
  for (let n = 2; n <= 16 && tiles * splits < SPLIT_K_TILES; n *= 2) {
    if (s.k % n === 0 && s.k / n >= SPLIT_K_MIN && n * s.m * s.n * 4 <= SPLIT_K_MAX_BYTES) splits = n;
  }
  return splits;
}

/**
 * C += A @ B as `splits` products over equal ranges of k, batched in one dispatch into a scratch of
 * partials, then summed into C in split order.
 */
function splitKMatmul(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  c: Operand,
  options: MatmulOptions,
  t: TileShape,
  splits: number,
  plan: DeepPlan,
): void {
  const kc = s.k / splits;
  const mn = s.m * s.n;
  const split = { chunk: kc, chunks: splits };
  const parts = partials(g, split, mn / 4);
  const into = new Tensor(parts, 0, [splits * mn], 'float32');
  tiledMatmul(
    g,
    { m: s.m, n: s.n, k: kc, nb0: splits, nb1: 1 },
    { ...a, b0: kc * a.cs, b1: 0 },
    { ...b, b0: kc * b.rs, b1: 0 },
    { t: into, rs: s.n, cs: 1, b0: mn, b1: 0 },
    { alpha: options.alpha },
    t,
    plan, // each split's range of k in chunks, where the plan has them (packed takes no batches)
  );
  const C = c.t.binding(g.ctx);
  finishColumnSums(g, parts, split, mn / 4, { stride4: mn / 4, off4: 0 }, C.binding, C.shift + (c.off ?? 0));
}

/**
 * Record the product on the tensor-core kernel (shaders/matmul-mma.wgsl) or its plain twin
 * (matmul-mma-twin.wgsl, for adapters without subgroup matrices: tests), with fragments of `shape`,
 * subgroups of `subgroupSize` lanes and `grid` subgroups per workgroup; profiled under `tag` (its
 * shape class unless a plan's product).
 */
export function mmaMatmul(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  c: Operand,
  options: MatmulOptions,
  shader: 'matmul-mma' | 'matmul-mma-twin',
  shape: SubgroupMatrixShape,
  subgroupSize: number,
  grid: MmaGrid,
  tag = shapeClass(s.m, s.n, s.k),
): void {
  const problem = mmaProblem(g.ctx, shape, subgroupSize, grid, shader === 'matmul-mma-twin');
  if (problem) throw new GpuError(`tensor-core matmul with ${describeMma(grid)} cannot run here: ${problem}`);
  const { uniforms, bindings, gelu } = stridedOperands(g, s, a, b, c, options);
  const slots = vec4Slots(g, s, a, b);
  g.runner.dispatch(
    shader,
    mmaEntry(grid),
    { B_DTYPE: paramCode(b.t, 'matmul B'), SG: subgroupSize, GROUP_M: TILE_GROUP_M, ...slots.constants },
    uniforms,
    { ...bindings, H: gelu ?? g.runner.writableDummy, ...slots.bindings },
    mmaWorkgroups(shape, grid, s.m, s.n, (s.nb0 ?? 1) * (s.nb1 ?? 1)),
    mmaDefines(shape, grid),
    tag,
  );
}

/**
 * How the tiled and tensor-core kernels read each operand: in slots of 4 elements along the
 * dimension it is contiguous in (A_KFAST, B_NFAST), one vec4 load per slot (A_VEC, B_VEC) where every
 * slot starts 16-byte aligned and lies wholly inside or outside the matrix. fp32 operands are then
 * bound again as vec4s (A4, B4); 16-bit B reads a slot as two aligned words of its own binding.
 */
function vec4Slots(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
): { constants: Record<string, number>; bindings: Record<'A4' | 'B4', Binding> } {
  const ctx = g.ctx;
  const A = a.t.binding(ctx);
  const B = b.t.binding(ctx);
  const aStart = A.shift + (a.off ?? 0);
  const bStart = B.shift + (b.off ?? 0);
  const aKFast = a.cs === 1;
  const bNFast = b.cs === 1;
  const aQuads = aKFast ? aligned4(s.k, aStart, a.rs, a.b0, a.b1) : a.rs === 1 && aligned4(s.m, aStart, a.cs, a.b0, a.b1);
  const bQuads = bNFast ? aligned4(s.n, bStart, b.rs, b.b0, b.b1) : b.rs === 1 && aligned4(s.k, bStart, b.cs, b.b0, b.b1);
  const half = b.t.dtype !== 'float32';
  const A4 = aQuads ? quadBinding(g, a.t, A) : null;
  const B4 = bQuads && !half ? quadBinding(g, b.t, B) : null;
  return {
    constants: { A_KFAST: aKFast ? 1 : 0, B_NFAST: bNFast ? 1 : 0, A_VEC: A4 ? 1 : 0, B_VEC: B4 || (bQuads && half) ? 1 : 0 },
    bindings: { A4: A4 ?? g.runner.dummy, B4: B4 ?? g.runner.dummy },
  };
}
