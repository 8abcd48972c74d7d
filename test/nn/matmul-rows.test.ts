/**
 * The few-rows matmul (a decoder step's products): 1 to 8 rows, columns and depths off the quads,
 * B read along n, along k and element by element, A read along k and strided, two-level batches at
 * offsets, bias, alpha and accumulation, fp32 and 16-bit weights, with this adapter's lanes and with
 * a GPU's k split (the reduction through workgroup memory), against the float64 reference; and
 * matmulInto's routing by row count.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ParamDtype } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { Graph } from '../../src/nn/graph.js';
import { matmulInto, type Operand } from '../../src/nn/matmul.js';
import { type RowsLanes, rowsLimit, rowsMatmul } from '../../src/nn/matmul-rows.js';
import { recordDispatches } from '../helpers/dispatches.js';
import { hashedUniform } from '../helpers/hash.js';
import { asParam, weightAndBias } from '../helpers/matmul-weights.js';
import { seeded } from '../helpers/seed.js';
import * as ref from './reference.js';

const SEED = seeded('nn/matmul-rows.test.ts').seed;
let stream = 0;
const rand = (n: number) => hashedUniform(SEED, ++stream, n, 1);
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

interface Case {
  m: number;
  n: number;
  k: number;
  /** A stored k-major (its column stride is m), B stored n-major (B read along k). */
  transA: boolean;
  transB: boolean;
  /** Extra elements after each stored row of B (a padded row: no vec4 reads when it breaks the quads). */
  padB: number;
  nb0: number;
  nb1: number;
  off: number;
  dtype: ParamDtype;
  bias: boolean;
  accumulate: boolean;
  /** The B_MODE and A_VEC the kernel must pick, where the case pins them. */
  modes?: [number, number];
}

const base: Case = {
  m: 1,
  n: 64,
  k: 64,
  transA: false,
  transB: false,
  padB: 0,
  nb0: 1,
  nb1: 1,
  off: 0,
  dtype: 'float32',
  bias: false,
  accumulate: false,
};

const cases: [string, Case][] = [
  ['one row, B read along n as vec4s, A along k as vec4s, bias', { ...base, bias: true, modes: [1, 1] }],
  ['one row, B read along k as vec4s (a tied head), accumulate', { ...base, n: 40, k: 96, transB: true, accumulate: true, modes: [2, 1] }],
  ['3 rows, columns and depth off the quads (element by element)', { ...base, m: 3, n: 13, k: 30, bias: true, modes: [0, 0] }],
  ['5 rows, B read along k, depth off the quads, A k-major', { ...base, m: 5, n: 37, k: 7, transA: true, transB: true, modes: [0, 0] }],
  ['8 rows, padded B rows of 4 more (still quads)', { ...base, m: 8, n: 24, k: 40, padB: 4, bias: true, modes: [1, 1] }],
  ['2 rows, padded B rows of 3 more (element by element)', { ...base, m: 2, n: 24, k: 40, padB: 3, modes: [0, 1] }],
  [
    'batches (2 x 3) at an offset, B along k',
    { ...base, m: 1, n: 20, k: 16, nb0: 2, nb1: 3, off: 8, transB: true, accumulate: true, modes: [2, 1] },
  ],
  ['bf16 weights and bias', { ...base, m: 1, n: 48, k: 72, dtype: 'bfloat16', bias: true, modes: [0, 1] }],
  ['fp16 weights read along k, 4 rows', { ...base, m: 4, n: 30, k: 50, dtype: 'float16', transB: true, bias: true, modes: [0, 0] }],
];

/**
 * A GPU's splits of k (the lanes of a quad add up through workgroup memory), run here on cases that
 * cover both lane orders, vec4 and element reads, the depth's tail and batches: each combination is
 * another pipeline, seconds of compile on a CPU driver.
 */
const SPLITS: [string, RowsLanes, number[]][] = [
  ['64 lanes, k split 4', { wg: 64, ks: 4 }, [0, 2]],
  ['64 lanes, k split 16', { wg: 64, ks: 16 }, [1, 6]],
];

async function check(c: Case, lanes: RowsLanes | undefined, what: string) {
  const z = c.nb0 * c.nb1;
  const [aRows, aCols] = c.transA ? [c.k, c.m] : [c.m, c.k];
  const [bRows, bCols] = c.transB ? [c.n, c.k] : [c.k, c.n];
  const bStride = bCols + c.padB;
  const blockA = aRows * aCols;
  const blockB = bRows * bStride;
  const aData = rand(c.off + z * blockA);
  const bValues = rand(c.off + z * blockB);
  const biasValues = rand(c.n);
  const cInit = rand(z * c.m * c.n);
  const params = weightAndBias(ctx, bValues, biasValues, c.dtype);
  const g = new Graph(ctx);
  const calls = recordDispatches(g);
  const at = g.input(aData, [aData.length]);
  const ct = g.input(cInit, [cInit.length]);
  const batchA = { b0: c.nb1 * blockA, b1: blockA };
  const batchB = { b0: c.nb1 * blockB, b1: blockB };
  const aOp: Operand = c.transA ? { t: at, off: c.off, rs: 1, cs: c.m, ...batchA } : { t: at, off: c.off, rs: c.k, cs: 1, ...batchA };
  const bOp: Operand = c.transB
    ? { t: params.get('b'), off: c.off, rs: 1, cs: bStride, ...batchB }
    : { t: params.get('b'), off: c.off, rs: bStride, cs: 1, ...batchB };
  const cOp: Operand = { t: ct, rs: c.n, cs: 1, b0: c.nb1 * c.m * c.n, b1: c.m * c.n };
  const options = { alpha: 0.5, accumulate: c.accumulate, ...(c.bias ? { bias: params.get('bias') } : {}) };
  rowsMatmul(g, { m: c.m, n: c.n, k: c.k, nb0: c.nb0, nb1: c.nb1 }, aOp, bOp, cOp, options, lanes);
  const got = await g.read(ct);
  expect(calls.map((d) => d[0])).toEqual(['matmul-rows']);
  const constants = calls[0]![2];
  if (c.modes) expect([constants.B_MODE, constants.A_VEC], what).toEqual(c.modes);
  const bSeen = asParam(bValues, c.dtype);
  const biasSeen = asParam(biasValues, c.dtype);
  const want = new Float64Array(cInit.length);
  for (let b = 0; b < z; b++) {
    const A = new Float64Array(c.m * c.k);
    const B = new Float64Array(c.k * c.n);
    for (let i = 0; i < c.m; i++)
      for (let p = 0; p < c.k; p++) A[i * c.k + p] = aData[c.off + b * blockA + (c.transA ? p * c.m + i : i * c.k + p)]!;
    for (let p = 0; p < c.k; p++)
      for (let j = 0; j < c.n; j++) B[p * c.n + j] = bSeen[c.off + b * blockB + (c.transB ? j * bStride + p : p * bStride + j)]!;
    const prod = ref.matmul(A, B, c.m, c.k, c.n);
    for (let e = 0; e < prod.length; e++) {
      const at = b * c.m * c.n + e;
      want[at] = (c.accumulate ? cInit[at]! : 0) + 0.5 * prod[e]! + (c.bias ? biasSeen[e % c.n]! : 0);
    }
  }
  expect(ref.relError(got, want), msg(what)).toBeLessThanOrEqual(1e-6);
  g.release();
  params.destroy();
}

describe('few-rows matmul against the float64 reference', () => {
  for (const [name, c] of cases) it(`${name}; this adapter's lanes`, () => check(c, undefined, name));
  for (const [split, lanes, picked] of SPLITS)
    for (const i of picked) {
      const [name, c] = cases[i]!;
      it(`${name}; ${split}`, () => check(c, lanes, `${name}; ${split}`));
    }
});

describe('matmulInto', () => {
  it("runs products of up to rowsLimit rows on the few-rows kernel and taller ones on the adapter's", async () => {
    const [n, k] = [32, 16];
    const limit = rowsLimit(ctx);
    for (const m of [1, limit, limit + 1]) {
      const [a, b] = [rand(m * k), rand(k * n)];
      const g = new Graph(ctx);
      const shaders = recordDispatches(g, ([shader]) => shader);
      const ct = g.tensor([m * n], 'c');
      matmulInto(
        g,
        { m, n, k },
        { t: g.input(a, [m * k]), rs: k, cs: 1 },
        { t: g.input(b, [k * n]), rs: n, cs: 1 },
        { t: ct, rs: n, cs: 1 },
      );
      expect(ref.relError(await g.read(ct), ref.matmul(a, b, m, k, n)), msg(`m ${m}`)).toBeLessThanOrEqual(1e-6);
      expect(shaders.includes('matmul-rows'), `m ${m}: ${shaders.join()}`).toBe(m <= limit);
      g.release();
    }
  });
});
