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
import type { Tensor } from '../../src/nn/tensor.js';
import { LocalParams } from '../../src/nn/params.js';
import { recordDispatches } from '../helpers/dispatches.js';
import { hashedUniform } from '../helpers/hash.js';
import { asParam, weightAndBias } from '../helpers/matmul-weights.js';
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
  return recordDispatches(g, ([shader]) => shader);
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
  { ...base, name: 'operands at an offset in their buffers', m: 13, n: 8, k: 4, strideA: 64, strideB: 64, offset: 128, accumulate: true },
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
      const params = weightAndBias(ctx, bValues, biasValues, c.dtype);
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
      const bSeen = asParam(bValues, c.dtype);
      const biasSeen = asParam(biasValues, c.dtype);
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
      const [m, n] = [11, 64];
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
});

// The attention's products: q, k and v of every head are blocks of one copy of qkv [B, T, 3C], the
// probabilities [B, H, T, T] one copy read straight and transposed.
describe('batched products: blocks of one copy per tensor', () => {
  const [batch, t, c, heads] = [2, 64, 128, 2];
  const hd = c / heads;
  const qkvOp = (tensor: Tensor, part: number, rowIsTime: boolean): Operand =>
    rowIsTime
      ? { t: tensor, off: part * c, rs: 3 * c, cs: 1, b0: t * 3 * c, b1: hd }
      : { t: tensor, off: part * c, rs: 1, cs: 3 * c, b0: t * 3 * c, b1: hd };
  const ref3 = (data: Float32Array, b: number, h: number, part: number) => {
    const out = new Float64Array(t * hd);
    for (let i = 0; i < t; i++) for (let d = 0; d < hd; d++) out[i * hd + d] = data[b * t * 3 * c + i * 3 * c + part * c + h * hd + d]!;
    return out;
  };

  it('S = q kᵀ and Y = S v per (batch, head), with one copy of qkv for all three', async () => {
    const qkv = rand(batch * t * 3 * c);
    const g = new Graph(ctx);
    const used = shadersOf(g);
    const qt = g.input(qkv, [batch, t, 3 * c], 'qkv');
    const st = g.tensor([batch, heads, t, t], 's');
    const yt = g.tensor([batch, t, c], 'y');
    const bh = { nb0: batch, nb1: heads };
    const sOp: Operand = { t: st, rs: t, cs: 1, b0: heads * t * t, b1: t * t };
    matmulInto(g, { m: t, n: t, k: hd, ...bh }, qkvOp(qt, 0, true), qkvOp(qt, 1, false), sOp);
    matmulInto(g, { m: t, n: hd, k: t, ...bh }, sOp, qkvOp(qt, 2, true), { t: yt, rs: c, cs: 1, b0: t * c, b1: hd });
    // qkv copied once for both products (q, k and then v), the scores once after they are written.
    const copies = { made: g.runner.copies.made, reused: g.runner.copies.reused };
    const s = await g.read(st);
    const y = await g.read(yt);
    expect(used).toEqual(['matmul-texture', 'matmul-texture']);
    expect(copies).toEqual({ made: 2, reused: 2 });
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < heads; h++) {
        const sWant = ref.matmul(ref3(qkv, b, h, 0), ref.transpose(ref3(qkv, b, h, 1), t, hd), t, hd, t);
        const sGot = s.subarray((b * heads + h) * t * t, (b * heads + h + 1) * t * t);
        expect(ref.relError(sGot, sWant), msg(`s ${b} ${h}`)).toBeLessThanOrEqual(1e-6);
        const yWant = ref.matmul(sGot, ref3(qkv, b, h, 2), t, t, hd);
        const yGot = new Float64Array(t * hd);
        for (let i = 0; i < t; i++) for (let d = 0; d < hd; d++) yGot[i * hd + d] = y[b * t * c + i * c + h * hd + d]!;
        expect(ref.relError(yGot, yWant), msg(`y ${b} ${h}`)).toBeLessThanOrEqual(1e-6);
      }
    g.release();
  });

  it('heads narrower than a tile (32 columns) run on the buffer kernel', async () => {
    const narrowHeads = 2 * heads;
    const g = new Graph(ctx);
    const used = shadersOf(g);
    const qt = g.input(rand(batch * t * 3 * c), [batch, t, 3 * c], 'qkv');
    const pt = g.input(rand(batch * narrowHeads * t * t), [batch, narrowHeads, t, t], 'p');
    const yt = g.tensor([batch, t, c], 'y');
    const probs: Operand = { t: pt, rs: t, cs: 1, b0: narrowHeads * t * t, b1: t * t };
    const v: Operand = { t: qt, off: 2 * c, rs: 3 * c, cs: 1, b0: t * 3 * c, b1: 32 };
    matmulInto(g, { m: t, n: 32, k: t, nb0: batch, nb1: narrowHeads }, probs, v, { t: yt, rs: c, cs: 1, b0: t * c, b1: 32 });
    await g.read(yt);
    expect(
      used.some((name) => name.startsWith('matmul-texture')),
      used.join(),
    ).toBe(false);
    g.release();
  });

  it('a copy is made again after the tensor is written, and not reused across a submit', async () => {
    const [m, n, k] = [32, 64, 64];
    const x = rand(m * k);
    const w = rand(k * n);
    const g = new Graph(ctx);
    const xt = g.input(x, [m, k], 'x');
    const wt = g.input(w, [k, n], 'w');
    const y1 = g.tensor([m, n], 'y1');
    const y2 = g.tensor([m, n], 'y2');
    const mm = (out: Tensor) => matmulInto(g, { m, n, k }, { t: xt, rs: k, cs: 1 }, { t: wt, rs: n, cs: 1 }, { t: out, rs: n, cs: 1 });
    mm(y1);
    expect([g.runner.copies.made, g.runner.copies.reused]).toEqual([2, 0]);
    // Overwrite x on the GPU (y1 into it): its copy is stale, w's is not.
    matmulInto(g, { m, n: k, k: n }, { t: y1, rs: n, cs: 1 }, { t: wt, rs: 1, cs: n }, { t: xt, rs: k, cs: 1 });
    mm(y2);
    const counts = [g.runner.copies.made, g.runner.copies.reused];
    const [got1, got2, x2] = [await g.read(y1), await g.read(y2), await g.read(xt)];
    expect(counts).toEqual([4, 2]); // y1, then x again; w reused by both later products
    expect(ref.relError(got1, ref.matmul(x, w, m, k, n)), msg('y1')).toBeLessThanOrEqual(1e-6);
    expect(ref.relError(got2, ref.matmul(x2, w, m, k, n)), msg('y2 from the new x')).toBeLessThanOrEqual(1e-6);
    // After the reads (submits), nothing is reused.
    mm(y1);
    expect([g.runner.copies.made, g.runner.copies.reused]).toEqual([2, 0]);
    g.release();
  });

  it('a param is copied once for the graph: its copy outlives a submit, not the graph, and a write to it', async () => {
    const [m, n, k] = [32, 64, 64];
    const params = new LocalParams(ctx, [{ name: 'w', shape: [k, n], dtype: 'float32', gradDtype: 'float32' }]);
    params.set(new Map([['w', rand(k * n)]]));
    const w = params.get('w');
    const g = new Graph(ctx);
    const x = g.input(rand(m * k), [m, k], 'x');
    const y = g.tensor([m, n], 'y');
    const forward = () => matmulInto(g, { m, n, k }, { t: x, rs: k, cs: 1 }, { t: w, rs: n, cs: 1 }, { t: y, rs: n, cs: 1 });
    forward();
    expect([g.runner.copies.made, g.runner.copies.reused]).toEqual([2, 0]);
    g.runner.flush();
    // dx = dy Wᵀ after a submit: W's copy is still there; dy is new.
    const dx = g.tensor([m, k], 'dx');
    matmulInto(g, { m, n: k, k: n }, { t: y, rs: n, cs: 1 }, { t: w, rs: 1, cs: n }, { t: dx, rs: k, cs: 1 });
    expect([g.runner.copies.made, g.runner.copies.reused]).toEqual([1, 1]);
    g.runner.flush();
    // The graph overwrites the param (as nothing in training does): the copy is made again.
    g.runner.clearBuffer(w.buffer);
    forward();
    expect([g.runner.copies.made, g.runner.copies.reused]).toEqual([2, 0]);
    const got = await g.read(y);
    expect(Array.from(got).every((v) => v === 0)).toBe(true);
    g.release();
    params.destroy();
  });

  it("a runner's textures go back to the pool on submit, and the next graph leases the same ones", async () => {
    const fresh = await GpuContext.create({ matmulKernel: 'texture' });
    try {
      const run = async () => {
        const g = new Graph(fresh);
        const at = g.input(rand(70 * 128), [70, 128]);
        const bt = g.input(rand(128 * 64), [128, 64]);
        const ct = g.tensor([70, 64], 'c');
        matmulInto(g, { m: 70, n: 64, k: 128 }, { t: at, rs: 128, cs: 1 }, { t: bt, rs: 64, cs: 1 }, { t: ct, rs: 64, cs: 1 });
        await g.read(ct);
        g.release();
      };
      await run();
      const held = fresh.scratch.bytes;
      expect(held).toBe((128 / 4) * 70 * 16 + (64 / 4) * 128 * 16);
      await run();
      expect(fresh.scratch.bytes).toBe(held);
      expect(fresh.memoryReport().live.other).toBeGreaterThanOrEqual(held);
    } finally {
      fresh.destroy();
    }
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
