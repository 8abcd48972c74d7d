/**
 * The texture matmul (CPU drivers): every layout the linear layers hand it (A rows or A stored
 * k-major, B rows or B stored n-major), B in fp32, bf16 and fp16, bias, alpha, accumulation, edges
 * past a tile, operands at offsets inside their buffers, against the float64 reference; and which
 * kernel ran, including the operands it must leave to the buffer kernel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext, matmulKernelFromEnv } from '../../src/gpu/context.js';
import type { ParamDtype } from '../../src/ddp/layout.js';
import { Graph } from '../../src/nn/graph.js';
import { matmulInto, type Operand } from '../../src/nn/matmul.js';
import { LocalParams } from '../../src/nn/params.js';
import { bf16ToFloat, floatToBf16, floatToHalf, halfToFloat } from '../../src/collectives/reduce.js';
import { hashedUniform } from '../helpers/hash.js';
import { seeded } from '../helpers/seed.js';
import * as ref from './reference.js';

const SEED = seeded('nn/matmul-texture.test.ts').seed;
let stream = 0;
const rand = (n: number) => hashedUniform(SEED, ++stream, n, 1);
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create({ matmulKernel: 'texture' });
});
afterAll(() => ctx?.destroy());

/** The shaders `g` dispatches from now on. */
function shadersOf(g: Graph): string[] {
  const used: string[] = [];
  const dispatch = g.runner.dispatch.bind(g.runner);
  g.runner.dispatch = (...args: Parameters<typeof dispatch>) => {
    used.push(args[0]);
    return dispatch(...args);
  };
  return used;
}

function rounded(v: Float32Array, dtype: ParamDtype): Float32Array {
  if (dtype === 'bfloat16') return v.map((x) => bf16ToFloat(floatToBf16(x)));
  if (dtype === 'float16') return v.map((x) => halfToFloat(floatToHalf(x)));
  return v;
}

interface Case {
  name: string;
  m: number;
  n: number;
  k: number;
  /** A stored k-major (row stride along m), B stored n-major. */
  transA: boolean;
  transB: boolean;
  /** Elements between the rows of each stored operand (≥ the row length). */
  strideA: number;
  strideB: number;
  /** Elements before each operand in its buffer. */
  offset: number;
  dtype: ParamDtype;
  bias: boolean;
  accumulate: boolean;
}

const base = { transA: false, transB: false, offset: 0, dtype: 'float32' as ParamDtype, bias: false, accumulate: false };
const cases: Case[] = [
  { ...base, name: 'one tile exactly', m: 32, n: 64, k: 64, strideA: 64, strideB: 64 },
  { ...base, name: 'rows and columns past a tile, bias, overwrite', m: 37, n: 68, k: 12, strideA: 64, strideB: 128, bias: true },
  { ...base, name: 'A stored k-major (dW = xᵀ dy)', m: 40, n: 72, k: 20, strideA: 64, strideB: 128, transA: true, accumulate: true },
  { ...base, name: 'B stored n-major (dx = dy Wᵀ)', m: 33, n: 20, k: 64, strideA: 64, strideB: 64, transB: true, accumulate: true },
  { ...base, name: 'both transposed', m: 64, n: 36, k: 8, strideA: 64, strideB: 64, transA: true, transB: true },
  { ...base, name: 'operands at an offset in their buffers', m: 5, n: 8, k: 4, strideA: 64, strideB: 64, offset: 128, accumulate: true },
  { ...base, name: 'B in bf16 with a bf16 bias', m: 35, n: 40, k: 16, strideA: 64, strideB: 128, dtype: 'bfloat16', bias: true },
  { ...base, name: 'B in fp16, stored n-major', m: 9, n: 12, k: 128, strideA: 128, strideB: 128, dtype: 'float16', transB: true },
];

describe('texture matmul against the float64 reference', () => {
  for (const c of cases) {
    it(c.name, async () => {
      // Stored A: m rows of k (or k rows of m) with rows strideA apart, after `offset` elements.
      const aRows = c.transA ? c.k : c.m;
      const bRows = c.transB ? c.n : c.k;
      const aData = rand(c.offset + aRows * c.strideA);
      const bValues = rand(c.offset + bRows * c.strideB);
      const biasValues = rand(c.n);
      const cInit = rand(c.m * c.n);
      // B and the bias as params of the case's dtype (B first in its buffer: the offset is part of B).
      const params = new LocalParams(ctx, [
        { name: 'b', shape: [bValues.length], dtype: c.dtype, gradDtype: 'float32' },
        { name: 'bias', shape: [c.n], dtype: c.dtype, gradDtype: 'float32' },
      ]);
      params.set(
        new Map([
          ['b', bValues],
          ['bias', biasValues],
        ]),
      );
      const g = new Graph(ctx);
      const used = shadersOf(g);
      const at = g.input(aData, [aData.length]);
      const ct = g.input(cInit, [cInit.length]);
      const aOp: Operand = c.transA ? { t: at, off: c.offset, rs: 1, cs: c.strideA } : { t: at, off: c.offset, rs: c.strideA, cs: 1 };
      const bOp: Operand = c.transB
        ? { t: params.get('b'), off: c.offset, rs: 1, cs: c.strideB }
        : { t: params.get('b'), off: c.offset, rs: c.strideB, cs: 1 };
      matmulInto(
        g,
        { m: c.m, n: c.n, k: c.k },
        aOp,
        bOp,
        { t: ct, rs: c.n, cs: 1 },
        {
          alpha: 0.75,
          accumulate: c.accumulate,
          ...(c.bias ? { bias: params.get('bias') } : {}),
        },
      );
      const got = await g.read(ct);
      expect(used).toEqual([
        c.dtype === 'float32' ? 'matmul-texture' : c.dtype === 'bfloat16' ? 'matmul-texture-bf16' : 'matmul-texture-f16',
      ]);
      // The reference from the stored layouts, read element by element.
      const bSeen = rounded(bValues, c.dtype);
      const biasSeen = rounded(biasValues, c.dtype);
      const A = new Float64Array(c.m * c.k);
      const B = new Float64Array(c.k * c.n);
      for (let i = 0; i < c.m; i++)
        for (let p = 0; p < c.k; p++) A[i * c.k + p] = aData[c.offset + (c.transA ? p * c.strideA + i : i * c.strideA + p)]!;
      for (let p = 0; p < c.k; p++)
        for (let j = 0; j < c.n; j++) B[p * c.n + j] = bSeen[c.offset + (c.transB ? j * c.strideB + p : p * c.strideB + j)]!;
      const prod = ref.matmul(A, B, c.m, c.k, c.n);
      const want = new Float64Array(c.m * c.n);
      for (let i = 0; i < c.m; i++)
        for (let j = 0; j < c.n; j++) {
          const e = i * c.n + j;
          want[e] = (c.accumulate ? cInit[e]! : 0) + 0.75 * prod[e]! + (c.bias ? biasSeen[j]! : 0);
        }
      expect(ref.relError(got, want), msg(c.name)).toBeLessThanOrEqual(1e-6);
      g.release();
      params.destroy();
    });
  }
});

describe('operands the texture kernel cannot copy run on the buffer kernel', () => {
  for (const [name, aStride, aOffset, k] of [
    ['a row stride that is not 256 bytes', 68, 0, 8],
    ['an offset that is not a whole texel', 64, 2, 8],
    ['k not a multiple of 4', 64, 0, 6],
  ] as const) {
    it(name, async () => {
      const [m, n] = [7, 64];
      const aData = rand(aOffset + m * aStride);
      const bData = rand(k * n);
      const g = new Graph(ctx);
      const used = shadersOf(g);
      const at = g.input(aData, [aData.length]);
      const bt = g.input(bData, [bData.length]);
      const ct = g.tensor([m * n], 'c');
      matmulInto(g, { m, n, k }, { t: at, off: aOffset, rs: aStride, cs: 1 }, { t: bt, rs: n, cs: 1 }, { t: ct, rs: n, cs: 1 });
      const got = await g.read(ct);
      expect(
        used.every((s) => s.startsWith('matmul') && !s.startsWith('matmul-texture')),
        used.join(),
      ).toBe(true);
      const A = new Float64Array(m * k);
      for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) A[i * k + p] = aData[aOffset + i * aStride + p]!;
      expect(ref.relError(got, ref.matmul(A, bData, m, k, n)), msg(name)).toBeLessThanOrEqual(1e-6);
      g.release();
    });
  }

  it('batched products (attention) stay on the buffer kernel', async () => {
    const [m, n, k] = [8, 64, 64];
    const g = new Graph(ctx);
    const used = shadersOf(g);
    const at = g.input(rand(2 * m * k), [2 * m * k]);
    const bt = g.input(rand(2 * k * n), [2 * k * n]);
    const ct = g.tensor([2 * m * n], 'c');
    matmulInto(
      g,
      { m, n, k, nb0: 2 },
      { t: at, rs: k, cs: 1, b0: m * k },
      { t: bt, rs: n, cs: 1, b0: k * n },
      { t: ct, rs: n, cs: 1, b0: m * n },
    );
    await g.read(ct);
    expect(used.some((s) => s.startsWith('matmul-texture'))).toBe(false);
    g.release();
  });
});

describe('scratch textures', () => {
  it('a larger product after a smaller one in the same submission: both right, the scratch grown once', async () => {
    const fresh = await GpuContext.create({ matmulKernel: 'texture' });
    const g = new Graph(fresh);
    const shapes = [
      [8, 64, 16],
      [70, 128, 96],
    ] as const;
    const outs = shapes.map(([m, n, k]) => {
      const a = rand(m * 64 * Math.ceil(k / 64));
      const b = rand(k * n);
      const at = g.input(a, [a.length]);
      const bt = g.input(b, [b.length]);
      const ct = g.tensor([m * n], 'c');
      matmulInto(g, { m, n, k }, { t: at, rs: 64 * Math.ceil(k / 64), cs: 1 }, { t: bt, rs: n, cs: 1 }, { t: ct, rs: n, cs: 1 });
      return { a, b, ct, m, n, k };
    });
    for (const { a, b, ct, m, n, k } of outs) {
      const stride = 64 * Math.ceil(k / 64);
      const A = new Float64Array(m * k);
      for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) A[i * k + p] = a[i * stride + p]!;
      expect(ref.relError(await g.read(ct), ref.matmul(A, b, m, k, n)), msg(`${m}x${n}x${k}`)).toBeLessThanOrEqual(1e-6);
    }
    // One texture per role and format, each as large as the largest request.
    expect(fresh.scratch.bytes).toBe((96 / 4) * 70 * 16 + (128 / 4) * 96 * 16);
    expect(fresh.memoryReport().live.other).toBeGreaterThanOrEqual(fresh.scratch.bytes);
    g.release();
    fresh.destroy();
  });

  it('lavapipe chooses the texture kernel, and the choice can be overridden', async () => {
    const chosen = await GpuContext.create();
    try {
      expect(chosen.matmulKernel).toBe(!chosen.software ? 'tiled' : chosen.subgroupsOfExactly8 ? 'texture' : 'buffer');
      expect(matmulKernelFromEnv({ WEBTRON_MATMUL: 'tiled' })).toBe('tiled');
      expect(matmulKernelFromEnv({})).toBeUndefined();
      expect(() => matmulKernelFromEnv({ WEBTRON_MATMUL: 'fast' })).toThrow(
        /^WEBTRON_MATMUL must be one of buffer, texture, tiled, got 'fast'$/,
      );
    } finally {
      chosen.destroy();
    }
  });
});
