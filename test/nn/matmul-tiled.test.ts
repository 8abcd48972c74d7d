/**
 * The tiled matmul for hardware GPUs, run here on lavapipe: every tile candidate the tuner may pick,
 * operands in every layout (rows or columns contiguous, two-level batches, offsets), odd edges, bias,
 * alpha and accumulation, fp32 and 16-bit weights, staged in f32 and in f16, against the float64
 * reference; and the tuner's choice, cache and shape classes.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from '../../src/collectives/reduce.js';
import type { ParamDtype } from '../../src/ddp/layout.js';
import { GpuContext, type SubgroupMatrixShape } from '../../src/gpu/context.js';
import {
  DEEP_CHUNK_K,
  DEEP_PLANS,
  type DeepPlan,
  DEFAULT_MMA,
  DEFAULT_TILES,
  deepChunks,
  describeMma,
  describeTile,
  MMA_CANDIDATES,
  type MmaGrid,
  mmaDefines,
  mmaEntry,
  mmaProblem,
  probeSubgroupMatrix,
  SHAPE_CLASSES,
  type ShapeClass,
  shapeClass,
  TILE_CANDIDATES,
  TUNING_SHAPES,
  tileProblem,
  tuneMatmul,
  TILE_GROUP_M,
  tuningKey,
  tuningLines,
  type TileShape,
} from '../../src/gpu/matmul-tuner.js';
import { GpuTimer } from '../../src/gpu/timer.js';
import { Graph } from '../../src/nn/graph.js';
import type { Operand } from '../../src/nn/matmul.js';
import { matmulInPlan, mmaMatmul, type PlannedProduct, packedRanges, tiledMatmul } from '../../src/nn/matmul-tiled.js';
import type { Tensor } from '../../src/nn/tensor.js';
import { recordDispatches } from '../helpers/dispatches.js';
import { hashedUniform } from '../helpers/hash.js';
import { asParam, weightAndBias } from '../helpers/matmul-weights.js';
import { seeded } from '../helpers/seed.js';
import * as ref from './reference.js';

const SEED = seeded('nn/matmul-tiled.test.ts').seed;
let stream = 0;
const rand = (n: number, scale = 1) => hashedUniform(SEED, ++stream, n, scale);
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;

let ctx: GpuContext;
let noF16: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create({ matmulKernel: 'tiled' });
  noF16 = await GpuContext.create({ matmulKernel: 'tiled', disableFeatures: ['shader-f16'] });
});
afterAll(() => {
  ctx?.destroy();
  noF16?.destroy();
});

/** x as the f16 staging sees it: saturated at ±65504, rounded to nearest even. */
const toF16 = (x: number) => halfToFloat(floatToHalf(Math.max(-65504, Math.min(65504, x))));

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  nb0: number;
  nb1: number;
  off: number;
  /** The vec4 staging the tiled kernel must choose for A and B (A_VEC, B_VEC), when the case pins it. */
  quads?: [number, number];
}

type Kernel = ({ tile: TileShape } | { mma: 'matmul-mma' | 'matmul-mma-twin'; shape: SubgroupMatrixShape; grid: MmaGrid; sg: number }) & {
  plan?: DeepPlan;
};

/** The relative error allowed a product of depth k: fp32 sums' rounding grows about as the root of their length. */
const tolerance = (k: number) => 1e-6 * Math.max(1, Math.sqrt(k / 256));

/**
 * C = 0.5 A @ B (+ bias) (+ C) with `kernel`, checked element by element against float64, and the
 * kernels it dispatched: the one product's, or `dispatches(product's kernel)` (a deep plan's).
 */
async function check(
  device: GpuContext,
  c: Case,
  kernel: Kernel,
  dtype: ParamDtype,
  options: { bias: boolean; accumulate: boolean; dispatches?: (product: string) => string[]; packedBytes?: number },
) {
  const z = c.nb0 * c.nb1;
  const blockA = c.m * c.k;
  const blockB = c.k * c.n;
  // Values past f16's range in A check the saturation of the f16 staging.
  const aData = rand(c.off + z * blockA, 2);
  aData[c.off] = 70000;
  const bValues = rand(c.off + z * blockB);
  const biasValues = rand(c.n);
  const cInit = rand(z * c.m * c.n);
  const params = weightAndBias(device, bValues, biasValues, dtype);
  const g = new Graph(device);
  const calls = recordDispatches(g);
  const at = g.input(aData, [aData.length]);
  const ct = g.input(cInit, [cInit.length]);
  const aOp: Operand = c.transA
    ? { t: at, off: c.off, rs: 1, cs: c.m, b0: c.nb1 * blockA, b1: blockA }
    : { t: at, off: c.off, rs: c.k, cs: 1, b0: c.nb1 * blockA, b1: blockA };
  const bOp: Operand = c.transB
    ? { t: params.get('b'), off: c.off, rs: 1, cs: c.k, b0: c.nb1 * blockB, b1: blockB }
    : { t: params.get('b'), off: c.off, rs: c.n, cs: 1, b0: c.nb1 * blockB, b1: blockB };
  const shape = { m: c.m, n: c.n, k: c.k, nb0: c.nb0, nb1: c.nb1 };
  const cOp = { t: ct, rs: c.n, cs: 1, b0: c.nb1 * c.m * c.n, b1: c.m * c.n };
  const opts = { alpha: 0.5, accumulate: options.accumulate, ...(options.bias ? { bias: params.get('bias') } : {}) };
  if ('tile' in kernel && options.packedBytes === undefined) tiledMatmul(g, shape, aOp, bOp, cOp, opts, kernel.tile, kernel.plan);
  else {
    const product: PlannedProduct =
      'tile' in kernel
        ? (s1, a1, b1, o1) => tiledMatmul(g, s1, a1, b1, cOp, o1, kernel.tile)
        : (s1, a1, b1, o1) => mmaMatmul(g, s1, a1, b1, cOp, o1, kernel.mma, kernel.shape, kernel.sg, kernel.grid);
    matmulInPlan(g, shape, aOp, bOp, opts, kernel.plan ?? 'rows', product, options.packedBytes);
  }
  const got = await g.read(ct);
  // The tensor-core kernel and its twin always stage f16; the tiled one for 16-bit params with shader-f16.
  const f16 = 'mma' in kernel || (dtype !== 'float32' && device.hasF16);
  const product = 'mma' in kernel ? kernel.mma : f16 ? 'matmul-tiled-f16' : 'matmul-tiled';
  expect(calls.map((d) => d[0])).toEqual(options.dispatches?.(product) ?? [product]);
  const constants = calls.at(-1)![2];
  if (c.quads) expect([constants.A_VEC, constants.B_VEC]).toEqual(c.quads);
  // The reference sees what the kernel stages: f16 values in the f16 path, the params' own values otherwise.
  const stageA = (x: number) => (f16 ? toF16(x) : x);
  const stageB = (x: number) => (f16 ? toF16(x) : x);
  const bSeen = asParam(bValues, dtype);
  const biasSeen = asParam(biasValues, dtype);
  const want = new Float64Array(cInit.length);
  for (let b = 0; b < z; b++) {
    const A = Float64Array.from(aData.subarray(c.off + b * blockA, c.off + (b + 1) * blockA), stageA);
    const B = Float64Array.from(bSeen.subarray(c.off + b * blockB, c.off + (b + 1) * blockB), stageB);
    const prod = ref.matmul(c.transA ? ref.transpose(A, c.k, c.m) : A, c.transB ? ref.transpose(B, c.n, c.k) : B, c.m, c.k, c.n);
    for (let i = 0; i < prod.length; i++) {
      const e = b * c.m * c.n + i;
      want[e] = (options.accumulate ? cInit[e]! : 0) + 0.5 * prod[i]! + (options.bias ? biasSeen[i % c.n]! : 0);
    }
  }
  expect(ref.relError(got, want), msg(`${JSON.stringify(c)} ${JSON.stringify(kernel)} ${dtype}`)).toBeLessThanOrEqual(tolerance(c.k));
  g.release();
  params.destroy();
}

/** C = A @ B on the tiled kernel, with the adapter's choices, of random row-major A [m, k] and B [k, n]: C, and the float64 product. */
function randomProduct(g: Graph, m: number, k: number, n: number): { c: Tensor; want: ref.Vec } {
  const [a, b] = [rand(m * k), rand(k * n)];
  const c = g.input(new Float32Array(m * n), [m * n]);
  const operand = (t: Tensor, cols: number) => ({ t, rs: cols, cs: 1 });
  tiledMatmul(g, { m, n, k }, operand(g.input(a, [m * k]), k), operand(g.input(b, [k * n]), n), operand(c, n), {});
  return { c, want: ref.matmul(a, b, m, k, n) };
}

const plain: Case = { m: 37, n: 45, k: 29, transA: false, transB: false, nb0: 1, nb1: 1, off: 0 };

describe('tiled matmul: every tile candidate', () => {
  for (const tile of TILE_CANDIDATES) {
    it(`${tile.bm}x${tile.bn}x${tile.bk}, ${tile.tm}x${tile.tn} per invocation, edges in every direction`, async () => {
      if (tileProblem(ctx, tile)) {
        console.log(`skipped: tile ${JSON.stringify(tile)} does not fit lavapipe (${tileProblem(ctx, tile)})`);
        return;
      }
      await check(ctx, { ...plain, m: tile.bm + 5, n: tile.bn + 3, k: 2 * tile.bk + 1 }, { tile }, 'float32', {
        bias: true,
        accumulate: false,
      });
    });
  }
});

describe('tiled matmul: layouts, batches, dtypes', () => {
  const tile: TileShape = { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 };
  const layouts: [string, Partial<Case>][] = [
    ['A and B along their rows', {}],
    ['A stored k-major', { transA: true }],
    ['B stored n-major', { transB: true }],
    ['both transposed, batched 2 x 3, at an offset', { transA: true, transB: true, nb0: 2, nb1: 3, off: 5 }],
    ['one row, one column', { m: 1, n: 1, k: 7 }],
  ];
  for (const [name, over] of layouts) {
    it(`${name}, accumulate`, async () => {
      await check(ctx, { ...plain, ...over }, { tile }, 'float32', { bias: false, accumulate: true });
    });
  }
  // Sizes and offsets in multiples of 4: whole slots load as vec4s (A_VEC, B_VEC), with edges
  // inside the tiles and past them.
  const aligned: Case = { m: 36, n: 44, k: 28, transA: false, transB: false, nb0: 1, nb1: 1, off: 0 };
  const quadLayouts: [string, Partial<Case>][] = [
    ['A and B along their rows', { quads: [1, 1] }],
    ['A stored k-major, B n-major, batched 2 x 2, at an offset', { transA: true, transB: true, nb0: 2, nb1: 2, off: 8, quads: [1, 1] }],
    ['an odd offset: element by element', { off: 3, quads: [0, 0] }],
  ];
  for (const [name, over] of quadLayouts) {
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      it(`vec4 slots: ${name}, ${dtype} weights, bias, accumulate`, async () => {
        await check(ctx, { ...aligned, ...over }, { tile }, dtype, { bias: true, accumulate: true });
      });
    }
  }
  it(`tiles taken in groups of ${TILE_GROUP_M} tile rows: 20 rows (two groups and a partial one) by 4 columns, batched`, async () => {
    await check(ctx, { ...plain, m: 32 * 19 + 7, n: 32 * 3 + 5, k: 20, nb0: 2 }, { tile }, 'float32', { bias: true, accumulate: true });
  });
  it('vec4 slots with a 128 x 128 x 32 tile: several slots per invocation and k steps', async () => {
    const big: TileShape = { bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 };
    await check(ctx, { ...aligned, m: 132, n: 136, k: 100, quads: [1, 1] }, { tile: big }, 'float32', { bias: false, accumulate: false });
  });
  for (const dtype of ['bfloat16', 'float16'] as const) {
    it(`${dtype} weights and bias, staged in f16 (A saturated at 65504)`, async () => {
      await check(ctx, { ...plain, transB: true }, { tile }, dtype, { bias: true, accumulate: true });
    });
    it(`${dtype} weights and bias without shader-f16: staged in f32`, async () => {
      await check(noF16, plain, { tile }, dtype, { bias: true, accumulate: false });
    });
  }
});

// Deep products (k of 2,048 and more) in the plans the tuner chooses between: k in chunks that add
// into C, and A copied m-fast first; and the products a plan cannot take, run in one dispatch.
describe('tiled matmul: deep plans', () => {
  const tile: TileShape = { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 };
  const odd: Case = { ...plain, k: 2053, off: 1 };
  const aligned: Case = { m: 36, n: 44, k: 2052, transA: false, transB: false, nb0: 1, nb1: 1, off: 0, quads: [1, 1] };
  const chunks = (product: string) => Array<string>(deepChunks(odd.k).chunks).fill(product);
  it('splits k into ranges of at most DEEP_CHUNK_K, multiples of 4 but the last', () => {
    for (const k of [2048, 2053, 3072, 8192, 50304]) {
      const { chunk, chunks } = deepChunks(k);
      expect(chunk % 4, `k ${k}`).toBe(0);
      expect(chunk, `k ${k}`).toBeLessThanOrEqual(DEEP_CHUNK_K);
      expect((chunks - 1) * chunk < k && chunks * chunk >= k, `k ${k}: ${chunks} of ${chunk}`).toBe(true);
    }
    expect(deepChunks(1024)).toEqual({ chunk: 1024, chunks: 1 });
  });
  for (const dtype of ['float32', 'bfloat16'] as const) {
    it(`chunks: ${dtype} weights, bias written by the first chunk, element by element at an offset`, async () => {
      expect(deepChunks(odd.k).chunks).toBe(3);
      await check(ctx, odd, { tile, plan: 'chunks' }, dtype, { bias: true, accumulate: false, dispatches: chunks });
    });
    it(`chunks: ${dtype} weights, bias, accumulate, vec4 slots`, async () => {
      await check(ctx, aligned, { tile, plan: 'chunks' }, dtype, { bias: true, accumulate: true, dispatches: chunks });
    });
    it(`packed: ${dtype} weights, bias, element by element at an offset`, async () => {
      await check(ctx, odd, { tile, plan: 'packed' }, dtype, {
        bias: true,
        accumulate: false,
        dispatches: (product) => ['transpose', product],
      });
    });
    it(`packed: ${dtype} weights, bias, accumulate, vec4 slots`, async () => {
      await check(ctx, aligned, { tile, plan: 'packed' }, dtype, {
        bias: true,
        accumulate: true,
        dispatches: (product) => ['transpose', product],
      });
    });
  }
  // The tensor-core kernel's plans through its twin (subgroups of 32, as on NVIDIA).
  const twin = { mma: 'matmul-mma-twin' as const, shape: { m: 16, n: 16, k: 16 }, grid: DEFAULT_MMA.large, sg: 32 };
  it('tensor-core twin, chunks: fp16 weights, bias, accumulate, vec4 slots', async () => {
    await check(ctx, aligned, { ...twin, plan: 'chunks' }, 'float16', { bias: true, accumulate: true, dispatches: chunks });
  });
  it('tensor-core twin, packed: bf16 weights, bias, element by element at an offset', async () => {
    await check(ctx, odd, { ...twin, plan: 'packed' }, 'bfloat16', {
      bias: true,
      accumulate: false,
      dispatches: (product) => ['transpose', product],
    });
  });
  it('packed: copies A a range of k at a time where the whole copy would be too large', () => {
    const MiB = 2 ** 20;
    expect(packedRanges(8192, 3072, 128 * MiB)).toEqual({ chunk: 3072, chunks: 1 }); // GPT-2 small's mlp.proj
    for (const [m, k, bytes] of [
      [8192, 50304, 128 * MiB], // GPT-2 small's head input grad: 1.5 GiB of dlogits
      [37, 2053, 37 * 4 * 600],
      [1000, 4099, 1000 * 4 * 8],
    ] as const) {
      const { chunk, chunks } = packedRanges(m, k, bytes)!;
      const what = `${m} x ${k} in ${bytes} bytes: ${chunks} of ${chunk}`;
      expect(chunk % 4 === 0 && m * chunk * 4 <= bytes && chunks > 1, what).toBe(true);
      expect((chunks - 1) * chunk < k && chunks * chunk >= k, what).toBe(true);
    }
    expect(packedRanges(1000, 4099, 1000 * 4 * 3)).toBeNull();
  });
  for (const dtype of ['float32', 'float16'] as const) {
    it(`packed, a range of k at a time: ${dtype} weights, bias, accumulate, element by element at an offset`, async () => {
      const bytes = odd.m * 4 * 600;
      const { chunks } = packedRanges(odd.m, odd.k, bytes)!;
      expect(chunks).toBe(4);
      await check(ctx, odd, { tile, plan: 'packed' }, dtype, {
        bias: true,
        accumulate: true,
        packedBytes: bytes,
        dispatches: (product) => Array<string[]>(chunks).fill(['transpose', product]).flat(),
      });
    });
  }
  it('packed, a range of k at a time: gelu(C) asked for, which needs the whole sum, runs in one dispatch', async () => {
    const g = new Graph(ctx);
    const [m, k, n] = [20, 40, 12];
    const [a, b] = [rand(m * k), rand(k * n)];
    const [c, h] = [g.input(new Float32Array(m * n), [m * n]), g.input(new Float32Array(m * n), [m * n])];
    const used: string[] = [];
    const product: PlannedProduct = (s1, a1, b1, o1) => {
      used.push(`${s1.k}`);
      tiledMatmul(g, s1, a1, b1, { t: c, rs: n, cs: 1 }, o1, tile);
    };
    const A = { t: g.input(a, [m * k]), rs: k, cs: 1 };
    const B = { t: g.input(b, [k * n]), rs: n, cs: 1 };
    matmulInPlan(g, { m, n, k }, A, B, { gelu: h }, 'packed', product, m * 4 * 8);
    expect(used).toEqual([`${k}`]);
    expect(ref.relError(await g.read(c), ref.matmul(a, b, m, k, n)), msg('gelu, packed in ranges')).toBeLessThan(1e-6);
    g.release();
  });
  // A weight grad with few tiles of C splits k over a batch of products (hardware GPUs' split
  // reductions); with the chunks plan each split's range of k goes in chunks too. Checked by
  // Freivalds' identity: C v = A (B v) for random v, without the 1e9 multiply-adds of C itself.
  it('chunks inside split-K: a weight grad of 16,512 rows into 65 x 1012, accumulated', async () => {
    const device = await GpuContext.create({ matmulKernel: 'tiled', reductionKernel: 'split', tuneMatmul: false });
    try {
      device.matmulTuning = { ...device.matmulTuning, deepPlan: 'chunks' };
      const [m, n, k] = [65, 1012, 16 * 1032];
      expect(shapeClass(m, n, k)).toBe('deep');
      const g = new Graph(device);
      const batches = recordDispatches(g, ([shader, , , , , grid]) => (shader === 'matmul-tiled' && Array.isArray(grid) ? grid[2] : 0));
      // dW += xᵀ dy: x [k, m] read m-fast, dy [k, n].
      const [x, dy, c0] = [rand(k * m), rand(k * n), rand(m * n)];
      const c = g.input(c0, [m * n]);
      tiledMatmul(
        g,
        { m, n, k },
        { t: g.input(x, [k * m]), rs: 1, cs: m },
        { t: g.input(dy, [k * n]), rs: n, cs: 1 },
        { t: c, rs: n, cs: 1 },
        { accumulate: true },
      );
      const got = await g.read(c);
      // Two products over 16 ranges of 1,032 rows in two chunks of 516, then the sum into C.
      expect(batches, msg('dispatches')).toEqual([16, 16, 0]);
      for (let trial = 0; trial < 2; trial++) {
        const v = rand(n);
        const dyv = Array.from({ length: k }, (_, r) => dy.subarray(r * n, (r + 1) * n).reduce((t, d, j) => t + d * v[j]!, 0));
        const want = new Float64Array(m);
        const cv = new Float64Array(m);
        for (let i = 0; i < m; i++) {
          for (let r = 0; r < k; r++) want[i]! += x[r * m + i]! * dyv[r]!;
          for (let j = 0; j < n; j++) {
            want[i]! += c0[i * n + j]! * v[j]!;
            cv[i]! += got[i * n + j]! * v[j]!;
          }
        }
        expect(ref.relError(cv, want), msg(`C v, trial ${trial}`)).toBeLessThan(tolerance(k));
      }
      g.release();
    } finally {
      device.destroy();
    }
  });
  it('packed: an A already m-fast, or batched, runs in one dispatch', async () => {
    await check(ctx, { ...odd, transA: true }, { tile, plan: 'packed' }, 'float32', { bias: true, accumulate: true });
    await check(ctx, { ...odd, nb0: 2 }, { tile, plan: 'packed' }, 'float32', { bias: false, accumulate: true });
  });
  it("follows the adapter's tuning for deep products only, when no tile is given", async () => {
    const tuning = ctx.matmulTuning;
    try {
      for (const plan of DEEP_PLANS) {
        ctx.matmulTuning = { ...tuning, deepPlan: plan };
        for (const [m, k, n] of [
          [272, 2052, 264],
          [272, 64, 264],
        ] as const) {
          const g = new Graph(ctx);
          const used = recordDispatches(g, ([shader]) => shader);
          const { c, want: product } = randomProduct(g, m, k, n);
          expect(ref.relError(await g.read(c), product), msg(`${plan}, k ${k}`)).toBeLessThan(tolerance(k));
          const deep = shapeClass(m, n, k) === 'deep';
          const products = !deep || plan === 'rows' ? 1 : plan === 'chunks' ? deepChunks(k).chunks : 2;
          expect(used, `${plan}, k ${k}`).toEqual(
            plan === 'packed' && deep ? ['transpose', 'matmul-tiled'] : Array(products).fill('matmul-tiled'),
          );
          g.release();
        }
      }
    } finally {
      ctx.matmulTuning = tuning;
    }
  });
});

// The tensor-core kernel for 16-bit params: its staging, fragment layout and epilogue through the
// plain twin here (in subgroups of 32, as on NVIDIA), the subgroup-matrix kernel itself where the
// adapter offers subgroup matrices.
describe('tensor-core matmul', () => {
  const fragment: SubgroupMatrixShape = { m: 16, n: 16, k: 16 };
  const large: MmaGrid = { sgr: 4, sgc: 2, fr: 2, fc: 4, ks: 2, pad: 0 };
  const cases: [string, Partial<Case>, ParamDtype, MmaGrid][] = [
    ['bf16 weights, edges past a tile, k past a step', { m: 70, n: 67, k: 40 }, 'bfloat16', large],
    [
      'fp16 weights stored n-major, A k-major, batched, at an offset',
      { transA: true, transB: true, nb0: 2, nb1: 2, off: 3 },
      'float16',
      { ...large, pad: 8 },
    ],
    [
      `tiles in groups of ${TILE_GROUP_M} rows: 11 tile rows (a group and a partial one) by 3 columns`,
      { m: 64 * 10 + 9, n: 64 * 2 + 4, k: 36 },
      'float16',
      { sgr: 2, sgc: 1, fr: 2, fc: 4, ks: 2, pad: 8 },
    ],
  ];
  for (const [name, over, dtype, grid] of cases) {
    it(`twin: ${name}`, async () => {
      await check(ctx, { ...plain, ...over }, { mma: 'matmul-mma-twin', shape: fragment, grid, sg: 32 }, dtype, {
        bias: true,
        accumulate: true,
      });
    });
    it(`subgroup matrices: ${name}`, async () => {
      const shape = ctx.subgroupMatrixOffered;
      if (!shape) {
        console.log(`skipped: adapter '${ctx.adapterName}' offers no f16 subgroup matrices; the twin above runs its staging and epilogue`);
        return;
      }
      await check(ctx, { ...plain, ...over }, { mma: 'matmul-mma', shape, grid, sg: ctx.subgroupMaxSize }, dtype, {
        bias: true,
        accumulate: true,
      });
    });
  }
  it("the tuner's exactness probe passes the twin with A row-major and m-fast (the packed plan's copy)", async () => {
    for (const grid of [large, DEFAULT_MMA.small]) {
      const shape = mmaProblem(ctx, fragment, 32, grid, true) === null ? fragment : { m: 8, n: 8, k: 8 };
      for (const aKFast of [true, false]) {
        expect(await probeSubgroupMatrix(ctx, grid, aKFast, { shape, sg: 32 }), `${describeMma(grid)}, A k-fast ${aKFast}`).toBe(true);
      }
    }
  });
  // Every candidate workgroup, in 16 x 16 x 16 fragments where this adapter's limits take it, else
  // in 8 x 8 x 8 ones (the same code in a quarter of the workgroup memory).
  const slots = (grid: MmaGrid, f: number): Partial<Case> => ({
    m: 2 * grid.fr * grid.sgr * f - 12,
    n: 2 * grid.fc * grid.sgc * f - 8,
    k: 100,
    quads: [1, 1],
  });
  for (const grid of MMA_CANDIDATES) {
    it(`twin: vec4 slots, ${describeMma(grid)}, two tiles each way with edges`, async () => {
      const shape = mmaProblem(ctx, fragment, 32, grid, true) === null ? fragment : { m: 8, n: 8, k: 8 };
      if (shape !== fragment)
        console.log(`${describeMma(grid)}: 8 x 8 x 8 fragments (16 x 16 x 16 ones exceed adapter '${ctx.adapterName}')`);
      await check(ctx, { ...plain, ...slots(grid, shape.m) }, { mma: 'matmul-mma-twin', shape, grid, sg: 32 }, 'float16', {
        bias: true,
        accumulate: true,
      });
    });
    it(`subgroup matrices: vec4 slots, ${describeMma(grid)}, two tiles each way with edges`, async () => {
      const shape = ctx.subgroupMatrixOffered;
      const problem = shape ? mmaProblem(ctx, shape, ctx.subgroupMaxSize, grid) : 'no f16 subgroup matrices offered';
      if (!shape || problem) {
        console.log(
          `skipped: ${describeMma(grid)} cannot run on adapter '${ctx.adapterName}' (${problem}); the twin above runs its staging and epilogue`,
        );
        return;
      }
      await check(ctx, { ...plain, ...slots(grid, shape.m) }, { mma: 'matmul-mma', shape, grid, sg: ctx.subgroupMaxSize }, 'float16', {
        bias: true,
        accumulate: true,
      });
    });
  }
});

// Lavapipe cannot run the subgroup-matrix kernel, but Dawn's null backend offers the feature and
// validates WGSL (types, builtins, uniformity) at pipeline creation without running anything.
describe('tensor-core kernel on the null backend', () => {
  it('passes WGSL validation in every operand layout and param dtype, and with every candidate workgroup', async () => {
    const nul = await GpuContext.create({ backend: 'null', tuneMatmul: false });
    try {
      expect(nul.device.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName)).toBe(true);
      const fragment = { m: 16, n: 16, k: 16 };
      const errors: string[] = [];
      for (const [aVec, bVec, aKFast, bNFast] of [
        [1, 1, 1, 1],
        [0, 0, 0, 0],
        [0, 1, 1, 0],
      ])
        for (const bDtype of [0, 1, 2]) {
          nul.device.pushErrorScope('validation');
          nul.kernels.pipeline(
            'matmul-mma',
            'main',
            { B_DTYPE: bDtype, SG: nul.subgroupMaxSize, A_VEC: aVec!, B_VEC: bVec!, A_KFAST: aKFast!, B_NFAST: bNFast! },
            mmaDefines(fragment, { sgr: 2, sgc: 1, fr: 2, fc: 4, ks: 2, pad: 8 }),
          );
          const error = await nul.device.popErrorScope();
          if (error) errors.push(error.message);
        }
      // Every candidate in 8 x 8 x 8 fragments, or 4 x 4 x 4 where those do not fit: the null
      // device's 16 KiB of workgroup memory holds none of the larger ones at 16 x 16 x 16.
      // Workgroups are a multiple of its largest subgroup.
      for (const grid of MMA_CANDIDATES) {
        const sg = (grid.sgr * grid.sgc * 32) % nul.subgroupMaxSize === 0 ? 32 : nul.subgroupMaxSize;
        const small = [8, 4].map((e) => ({ m: e, n: e, k: e })).find((f) => mmaProblem(nul, f, sg, grid) === null);
        expect(small, describeMma(grid)).toBeDefined();
        if (!small) continue;
        nul.device.pushErrorScope('validation');
        nul.kernels.pipeline('matmul-mma', mmaEntry(grid), { SG: sg, B_DTYPE: 2, A_VEC: 1, B_VEC: 1 }, mmaDefines(small, grid));
        const error = await nul.device.popErrorScope();
        if (error) errors.push(`${describeMma(grid)}: ${error.message}`);
      }
      expect(errors).toEqual([]);
    } finally {
      nul.destroy();
    }
  });
});

describe('matmul profile', () => {
  it('times each tiled product under its kernel and shape class, the products unchanged', async () => {
    if (!ctx.hasTimestamps) return console.log('skipped: this adapter has no timestamp queries');
    const g = new Graph(ctx);
    const timer = new GpuTimer(ctx, 16);
    g.runner.timer = timer;
    g.runner.timePerKernel = true;
    const want: string[] = [];
    const products: [Tensor, ref.Vec][] = [];
    // A large and a deep product (C of 272 x 272 is past the small class).
    for (const [m, k, n] of [
      [272, 64, 272],
      [272, 2048, 272],
    ] as const) {
      const { c, want: product } = randomProduct(g, m, k, n);
      want.push(`matmul-tiled.main [${shapeClass(m, n, k)}]`);
      products.push([c, product]);
    }
    for (const [c, product] of products) expect(ref.relError(await g.read(c), product), msg('product')).toBeLessThan(1e-5);
    const { ms, passes } = await timer.read();
    expect(want).toEqual(['matmul-tiled.main [large]', 'matmul-tiled.main [deep]']);
    expect(passes).toBe(2);
    expect(Object.keys(ms).sort()).toEqual([...want].sort());
    timer.destroy();
    g.release();
  });
});

describe('matmul tuner', () => {
  it('classes shapes by the size and narrowness of C', () => {
    expect(shapeClass(256, 256, 4096)).toBe('small');
    expect(shapeClass(4096, 64, 64)).toBe('narrow');
    expect(shapeClass(64, 4096, 64)).toBe('narrow');
    expect(shapeClass(1024, 1024, 64)).toBe('large');
    expect(shapeClass(1024, 1024, 2047)).toBe('large');
    expect(shapeClass(768, 3072, 8192)).toBe('deep'); // a weight grad: k is the batch's tokens
    expect(shapeClass(256, 256, 8192)).toBe('small');
    expect(shapeClass(4096, 64, 8192)).toBe('narrow');
    // Each class is timed on a product of its own class.
    for (const cls of SHAPE_CLASSES) {
      const [m, k, n] = TUNING_SHAPES[cls];
      expect(shapeClass(m, n, k)).toBe(cls);
    }
  });

  it('times the candidates once, keeps the fastest per class in the cache, and reads it back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webtron-tune-'));
    try {
      const candidates = TILE_CANDIDATES.slice(0, 2);
      const shapes: Record<ShapeClass, [number, number, number]> = {
        small: [64, 64, 64],
        narrow: [128, 32, 64],
        large: [128, 128, 64],
        deep: [128, 2056, 64], // three chunks of k in the chunks plan
      };
      const lines: string[] = [];
      const tuned = await tuneMatmul(ctx, { cacheDir: dir, candidates, shapes: { ...shapes }, progress: (l) => lines.push(l) });
      expect(tuned.source).toBe('tuned');
      expect(lines).toHaveLength(SHAPE_CLASSES.length + 1); // and the deep plan's
      for (const cls of SHAPE_CLASSES) {
        expect(candidates).toContainEqual(tuned.tiles[cls]);
        expect(tuned.gflops[cls]).toBeGreaterThan(0);
        // Every candidate's time is kept, and the choice is the fastest of them (deep's, below).
        const times = tuned.times!.tiles[cls]!;
        expect(Object.keys(times).sort()).toEqual(candidates.map(describeTile).sort());
        if (cls === 'deep') continue;
        expect(times[describeTile(tuned.tiles[cls])]).toBe(tuned.gflops[cls]);
        expect(Math.max(...Object.values(times))).toBe(tuned.gflops[cls]);
      }
      // Deep products: every candidate timed in every plan (rows: the class's own times), and the
      // fastest pair of plan and tile chosen.
      const byPlan = { rows: tuned.times!.tiles.deep!, ...tuned.times!.deepPlans };
      expect(Object.keys(byPlan).sort()).toEqual([...DEEP_PLANS].sort());
      for (const times of Object.values(byPlan)) expect(Object.keys(times).sort()).toEqual(candidates.map(describeTile).sort());
      expect(byPlan[tuned.deepPlan!]![describeTile(tuned.tiles.deep)]).toBe(tuned.gflops.deep);
      expect(Math.max(...Object.values(byPlan).flatMap((times) => Object.values(times)))).toBe(tuned.gflops.deep);
      expect(lines.at(-1)).toBe(
        `matmul tiles, deep plan (128 x 2056 x 64): ${tuned.deepPlan} with ${describeTile(tuned.tiles.deep)} at ${tuned.gflops.deep} GFLOP/s`,
      );
      expect(tuned.times!.mma).toEqual({}); // no subgroup matrices on this adapter
      // `webtron info --tuning`'s lines: each class's candidates, fastest first.
      const shown = tuningLines(tuned);
      const large = shown.indexOf('tiled, large:');
      // The fastest first; the chosen tile among those at its (rounded) speed, which two can share.
      expect(shown[large + 1]).toMatch(new RegExp(` ${tuned.gflops.large} GFLOP/s$`));
      expect(shown.slice(large + 1, large + 1 + candidates.length)).toContainEqual(
        expect.stringMatching(new RegExp(`^  ${describeTile(tuned.tiles.large)} +${tuned.gflops.large} GFLOP/s$`)),
      );
      expect(shown).toHaveLength((SHAPE_CLASSES.length + DEEP_PLANS.length - 1) * (1 + candidates.length));
      expect(shown).toContain('tiled, deep, chunks:');
      const file = JSON.parse(readFileSync(join(dir, 'matmul-tiles.json'), 'utf8'));
      expect(Object.keys(file.entries)).toEqual([tuningKey(ctx)]);
      // The second call reads the cache without timing anything, the timings with it.
      const again = await tuneMatmul(ctx, { cacheDir: dir, candidates: [], progress: (l) => lines.push(l) });
      expect(again.source).toBe('cache');
      expect(again.tiles).toEqual(tuned.tiles);
      expect(again.times).toEqual(tuned.times);
      expect(again.deepPlan).toBe(tuned.deepPlan);
      expect(lines).toHaveLength(SHAPE_CLASSES.length + 1);
      // A cache entry written before timings were kept says so, and how to get them.
      delete file.entries[tuningKey(ctx)].times;
      writeFileSync(join(dir, 'matmul-tiles.json'), JSON.stringify(file));
      const older = await tuneMatmul(ctx, { cacheDir: dir, candidates: [] });
      expect(older.times).toBeUndefined();
      expect(tuningLines(older)).toEqual([
        `no timings kept for this tuning (${join(dir, 'matmul-tiles.json')}); delete that file to tune again and keep them`,
      ]);
      // A damaged cache is timed again and rewritten, not trusted.
      writeFileSync(join(dir, 'matmul-tiles.json'), '{ not json');
      const redone = await tuneMatmul(ctx, { cacheDir: dir, candidates, shapes: { ...shapes } });
      expect(redone.source).toBe('tuned');
      // A cache folder that cannot be made: the tiles are still this run's, and a line says why.
      const blocked = join(dir, 'matmul-tiles.json', 'below-a-file');
      const unwritten: string[] = [];
      const uncached = await tuneMatmul(ctx, { cacheDir: blocked, candidates, shapes: { ...shapes }, progress: (l) => unwritten.push(l) });
      expect([uncached.source, uncached.cachePath]).toEqual(['tuned', null]);
      expect(unwritten.at(-1)).toMatch(/^matmul tiles not cached: .*ENOTDIR/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lists every candidate's time fastest first per kernel and class, then those left untimed", () => {
    // A tuning as a GPU with tensor cores leaves it (this adapter has none to time).
    const [a, b] = [DEFAULT_MMA.small, { ...DEFAULT_MMA.small, pad: 8 }].map(describeMma) as [string, string];
    const tile = describeTile(TILE_CANDIDATES[0]!);
    const lines = tuningLines({
      tiles: DEFAULT_TILES,
      gflops: { large: 12 },
      source: 'tuned',
      cachePath: null,
      mmaGrids: DEFAULT_MMA,
      times: {
        tiles: { large: { [tile]: 12 } },
        mma: { small: { [a]: 9.5, [b]: 30.25 }, large: { [a]: 0 } },
        deepPlans: { chunks: { [tile]: 20 }, packed: { [tile]: 0 } },
        mmaDeepPlans: { packed: { [a]: 8 } },
        untimed: { tiles: {}, mma: { '4x2 subgroups': 'computed a wrong product here' } },
      },
    });
    const w = Math.max(a.length, b.length);
    expect(lines).toEqual([
      'tiled, large:',
      `  ${tile}  12 GFLOP/s`,
      'tiled, deep, chunks:',
      `  ${tile}  20 GFLOP/s`,
      'tiled, deep, packed:',
      `  ${tile}  not measured (the timestamps did not advance)`,
      'tensor cores, small:',
      `  ${b.padEnd(w)}  30.25 GFLOP/s`,
      `  ${a.padEnd(w)}  9.5 GFLOP/s`,
      'tensor cores, large:',
      `  ${a}  not measured (the timestamps did not advance)`,
      'tensor cores, deep, packed:',
      `  ${a}  8 GFLOP/s`,
      'tensor cores, not timed: 4x2 subgroups: computed a wrong product here',
    ]);
    expect(tuningLines({ tiles: DEFAULT_TILES, gflops: {}, source: 'default', cachePath: null })).toEqual([
      'the matmul is not tuned here (default tiles): nothing was timed',
    ]);
  });

  it('keys the cache by the adapter, its driver and the kernel source', () => {
    const key = tuningKey(ctx);
    expect(key).toContain(ctx.found.info.description);
    expect(key.split('|').at(-1)).toMatch(/^[0-9a-f]{16}$/);
  });
});
