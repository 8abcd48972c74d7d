import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { GpuTimer } from '../../src/gpu/timer.js';
import type { GradDtype, ParamDtype, ParamSpec } from '../../src/ddp/layout.js';
import { attentionBlocks, dkvPasses } from '../../src/nn/attention.js';
import { Graph } from '../../src/nn/graph.js';
import { LocalParams } from '../../src/nn/params.js';
import {
  add,
  addLayerNorm,
  addRmsNorm,
  causalAttention,
  crossEntropy,
  IGNORED_TARGET,
  dropout,
  dropoutSeed,
  embedding,
  gelu,
  layerNorm,
  linearGelu,
  linear,
  matmulInto,
  repeatKv,
  rmsNorm,
  squaredRelu,
  swiglu,
} from '../../src/nn/ops.js';
import { tokenOrder } from '../../src/nn/split-sums.js';
import { documentInputs, documentStarts } from '../../src/nn/documents.js';
import { floatToBf16, bf16ToFloat, floatToHalf, halfToFloat } from '../../src/collectives/reduce.js';
import { recordDispatches } from '../helpers/dispatches.js';
import { hashedUniform } from '../helpers/hash.js';
import { seeded } from '../helpers/seed.js';
import * as ref from './reference.js';

const TOL = 1e-5;
// Fresh inputs on every run; the seed is in every failure message.
const SEED = seeded('nn/ops.test.ts').seed;
let stream = 0;
const rand = (n: number, scale = 1) => hashedUniform(SEED, ++stream, n, scale);
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;

let ctx: GpuContext;
// The hardware GPUs' reductions (GpuContext.reductionKernel), run here on the same adapter.
let splitCtx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
  splitCtx = await GpuContext.create({ reductionKernel: 'split', tuneMatmul: false });
});
afterAll(() => {
  ctx?.destroy();
  splitCtx?.destroy();
});

type Reductions = 'lane' | 'split';
const REDUCTIONS: readonly Reductions[] = ['lane', 'split'];
/** The context running `reductions`: lavapipe's own choice is lane. */
const on = (reductions: Reductions) => (reductions === 'split' ? splitCtx : ctx);

function params(specs: [string, number[]][], dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32', device = ctx) {
  const list: ParamSpec[] = specs.map(([name, shape]) => ({ name, shape, dtype, gradDtype }));
  return new LocalParams(device, list);
}

/**
 * A linear layer's params (w [inF, outF], or [outF, inF] when `transposed`, and b) set to random
 * values, with a random input of `rows` and a random output grad.
 */
function linearCase(
  rows: number,
  inF: number,
  outF: number,
  o: { transposed?: boolean; dtype?: ParamDtype; gradDtype?: GradDtype; device?: GpuContext } = {},
) {
  const p = params(
    [
      ['w', o.transposed ? [outF, inF] : [inF, outF]],
      ['b', [outF]],
    ],
    o.dtype,
    o.gradDtype,
    o.device,
  );
  const w = rand(inF * outF),
    b = rand(outF),
    x = rand(rows * inF),
    dy = rand(rows * outF);
  p.set(
    new Map([
      ['w', w],
      ['b', b],
    ]),
  );
  return { p, w, b, x, dy };
}

function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = TOL) {
  expect(got.length, msg(what)).toBe(want.length);
  expect(ref.relError(got, want), msg(what)).toBeLessThanOrEqual(tol);
}

/** Values as the GPU sees a param of `dtype` (rounded to nearest even for 16-bit). */
function rounded(v: Float32Array, dtype: ParamDtype): Float32Array {
  if (dtype === 'bfloat16') return v.map((x) => bf16ToFloat(floatToBf16(x)));
  if (dtype === 'float16') return v.map((x) => halfToFloat(floatToHalf(x)));
  return v;
}

describe('linear', () => {
  // Split bias grads: 100 rows in chunks of 15 (the last of 10), and 130 column quads in three blocks.
  for (const [rows, inF, outF, transposed, reductions] of [
    [7, 5, 9, false, 'lane'],
    [13, 33, 17, true, 'lane'],
    [64, 48, 130, false, 'lane'],
    [3, 1, 1, false, 'lane'],
    [6, 8, 12, false, 'lane'],
    [100, 24, 36, false, 'split'],
    [40, 8, 520, true, 'split'],
    [13, 33, 17, false, 'split'],
  ] as const) {
    it(`rows ${rows}, ${inF} -> ${outF}${transposed ? ', weight [out, in]' : ''}, ${reductions} reductions`, async () => {
      const device = on(reductions);
      const { p, w, b, x, dy } = linearCase(rows, inF, outF, { transposed, device });
      const g = new Graph(device);
      const used = entriesOf(g, 'colsum');
      const xt = g.input(x, [rows, inF], 'x', true);
      const y = linear(g, xt, p.get('w'), p.get('b'), { transposed });
      g.backwardFrom(y, dy);
      const wIO = transposed ? ref.transpose(w, outF, inF) : w;
      const want = ref.linear(x, wIO, b, rows, inF, outF, dy);
      expectClose(await g.read(y), want.y, 'y');
      expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
      const dw = await p.read('w', true);
      expectClose(dw, transposed ? ref.transpose(want.dw, inF, outF) : want.dw, 'dw');
      expectClose(await p.read('b', true), want.db, 'db');
      // The bias grad's column sums: four columns per invocation where the width is a multiple of 4,
      // split into chunks of rows and a finishing pass on split reductions.
      const wide = reductions === 'split' ? ['part', 'finish4'] : ['main4'];
      expect(used).toEqual(outF % 4 === 0 ? wide : ['main']);
      g.release();
      p.destroy();
    });
  }

  // A weight grad (k = the rows) with few tiles of C: on the tiled kernel with split reductions it
  // runs as a batch of 16 products over ranges of k (64 rows each) and a finishing sum into the grad.
  it('split-K weight grads on the tiled kernel: rows 1024, 24 -> 40, accumulated twice', async () => {
    const [rows, inF, outF] = [1024, 24, 40];
    const device = await GpuContext.create({ matmulKernel: 'tiled', reductionKernel: 'split', tuneMatmul: false });
    try {
      const { p, w, b, x, dy } = linearCase(rows, inF, outF, { device });
      const grids: number[][] = [];
      for (let pass = 0; pass < 2; pass++) {
        const g = new Graph(device);
        const tiled = recordDispatches(g, ([shader, , , , , grid]) =>
          shader === 'matmul-tiled' && Array.isArray(grid) ? grid : undefined,
        );
        const xt = g.input(x, [rows, inF], 'x', true);
        g.backwardFrom(linear(g, xt, p.get('w'), p.get('b')), dy);
        await g.read(g.gradOf(xt));
        grids.push(...tiled);
        g.release();
      }
      const want = ref.linear(x, w, b, rows, inF, outF, dy);
      // Two backward passes: the grads hold twice one pass's.
      expectClose(
        await p.read('w', true),
        want.dw.map((v) => 2 * v),
        'dw',
      );
      expectClose(
        await p.read('b', true),
        want.db.map((v) => 2 * v),
        'db',
      );
      expect(
        grids.map((z) => z[2]!).sort((u, v) => u - v),
        msg('batches of the matmuls (forward, dx, dw) per pass'),
      ).toEqual([1, 1, 1, 1, 16, 16]);
      p.destroy();
    } finally {
      device.destroy();
    }
  });

  // An MLP's fc layer with its GELU fused: against linear then GELU in float64, on every matmul kernel.
  // Where the kernel has the epilogue (texture and tiled) no GELU forward runs; the backward's first
  // pass is gelu'(pre) with the bias grad's column sums for vec4-wide layers.
  // The tiled kernel also with split reductions, as hardware GPUs run it.
  for (const [kernel, reductions] of [
    ['texture', 'lane'],
    ['tiled', 'lane'],
    ['buffer', 'lane'],
    ['tiled', 'split'],
  ] as const) {
    for (const [rows, inF, outF] of [
      [70, 64, 256],
      [9, 8, 13],
    ] as const) {
      it(`linearGelu on the ${kernel} kernel, ${reductions} reductions: rows ${rows}, ${inF} -> ${outF}`, async () => {
        const device = await GpuContext.create({ matmulKernel: kernel, tuneMatmul: false, reductionKernel: reductions });
        try {
          const p = new LocalParams(device, [
            { name: 'w', shape: [inF, outF], dtype: 'float32', gradDtype: 'float32' },
            { name: 'b', shape: [outF], dtype: 'float32', gradDtype: 'float32' },
          ]);
          const w = rand(inF * outF),
            b = rand(outF),
            x = rand(rows * inF, 2),
            dy = rand(rows * outF);
          p.set(
            new Map([
              ['w', w],
              ['b', b],
            ]),
          );
          const g = new Graph(device);
          const used = entriesOf(g, 'gelu');
          const sums = entriesOf(g, 'colsum');
          const xt = g.input(x, [rows, inF], 'x', true);
          const h = linearGelu(g, xt, p.get('w'), p.get('b'));
          g.backwardFrom(h, dy);
          const pre = ref.linear(x, w, b, rows, inF, outF, new Float64Array(rows * outF)).y;
          const act = ref.gelu(pre, dy);
          const want = ref.linear(x, w, b, rows, inF, outF, act.dx);
          expectClose(await g.read(h), act.y, 'h');
          expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
          expectClose(await p.read('w', true), want.dw, 'dw');
          expectClose(await p.read('b', true), want.db, 'db');
          const fusedForward = kernel === 'tiled' || (kernel === 'texture' && inF % 64 === 0 && outF % 64 === 0);
          const wide = outF % 4 === 0;
          const bias = reductions === 'split' ? 'backward_bias_part' : 'backward_bias4';
          expect(used).toEqual([...(fusedForward ? [] : [wide ? 'forward4' : 'forward']), ...(wide ? [bias] : ['backward'])]);
          // The bias grad's sums: in the GELU pass where it is vec4-wide (finished in a second pass when
          // split: finish4, which split-K products also end with), else by column sums after it.
          expect(sums.filter((e) => e !== 'finish4')).toEqual(wide ? [] : ['main']);
          if (wide) expect(sums.includes('finish4')).toBe(reductions === 'split');
          g.release();
          p.destroy();
        } finally {
          device.destroy();
        }
      });
    }
  }

  it('accumulates into the grad buffer across two backward passes', async () => {
    const [rows, inF, outF] = [5, 6, 7];
    const p = params([['w', [inF, outF]]]);
    const w = rand(inF * outF),
      x1 = rand(rows * inF),
      x2 = rand(rows * inF),
      dy = rand(rows * outF);
    p.set(new Map([['w', w]]));
    for (const x of [x1, x2]) {
      const g = new Graph(ctx);
      g.backwardFrom(linear(g, g.input(x, [rows, inF]), p.get('w')), dy);
      g.release();
    }
    const want = ref.linear(x1, w, null, rows, inF, outF, dy).dw.map((v, i) => v + ref.linear(x2, w, null, rows, inF, outF, dy).dw[i]!);
    expectClose(await p.read('w', true), want, 'accumulated dw');
    p.destroy();
  });

  for (const [dtype, gradDtype] of [
    ['bfloat16', 'float32'],
    ['float16', 'float16'],
    ['bfloat16', 'bfloat16'],
  ] as const) {
    it(`reads ${dtype} params and writes ${gradDtype} grads`, async () => {
      const [rows, inF, outF] = [9, 10, 11];
      const { p, w, b, x, dy } = linearCase(rows, inF, outF, { dtype, gradDtype });
      const g = new Graph(ctx);
      const y = linear(g, g.input(x, [rows, inF]), p.get('w'), p.get('b'));
      g.backwardFrom(y, dy);
      const want = ref.linear(x, rounded(w, dtype), rounded(b, dtype), rows, inF, outF, dy);
      expectClose(await g.read(y), want.y, `y from ${dtype} params`);
      // 16-bit grads are the fp32 grads rounded once: within half an ulp (2^-11 of fp16's, 2^-8 of bf16's).
      const halfUlp = { float32: 0, float16: 2 ** -11, bfloat16: 2 ** -8 }[gradDtype];
      const round = gradDtype === 'float16' ? (x: number) => halfToFloat(floatToHalf(x)) : (x: number) => bf16ToFloat(floatToBf16(x));
      const tol = gradDtype === 'float32' ? TOL : 4 * halfUlp;
      expectClose(await p.read('w', true), want.dw, `dw (${gradDtype})`, tol);
      expectClose(await p.read('b', true), want.db, `db (${gradDtype})`, tol);
      if (gradDtype !== 'float32') {
        const dw = await p.read('w', true);
        expect(
          [...dw].every((v, i) => v === round(want.dw[i]!) || Math.abs(v - want.dw[i]!) <= halfUlp * Math.abs(want.dw[i]!) * 1.01 + 1e-7),
          msg(`${gradDtype} grads within half an ulp of fp32`),
        ).toBe(true);
        // A second micro-batch's backward adds to what the first left: the sum rounded once more.
        const first = await p.read('b', true);
        const g2 = new Graph(ctx);
        g2.backwardFrom(linear(g2, g2.input(x, [rows, inF]), p.get('w'), p.get('b')), dy);
        const twice = await p.read('b', true);
        g2.release();
        expect(
          [...twice].every((v, i) => Math.abs(v - (first[i]! + want.db[i]!)) <= halfUlp * Math.abs(first[i]! + want.db[i]!) * 1.01 + 1e-7),
          msg(`${gradDtype} grads accumulate: within half an ulp of the first grads plus the second`),
        ).toBe(true);
      }
      g.release();
      p.destroy();
    });
  }
});

describe('embedding', () => {
  it.each(REDUCTIONS)('token + position lookup, scatter-add backward with repeated ids, %s reductions', async (reductions) => {
    const [batch, t, c, vocab] = [3, 5, 7, 11];
    const device = on(reductions);
    const p = params(
      [
        ['wte', [vocab, c]],
        ['wpe', [t + 2, c]],
      ],
      'float32',
      'float32',
      device,
    );
    const wte = rand(vocab * c),
      wpe = rand((t + 2) * c),
      dy = rand(batch * t * c);
    const ids = Uint32Array.from({ length: batch * t }, (_, i) => (i * 7 + SEED) % 4); // few distinct ids: many repeats
    p.set(
      new Map([
        ['wte', wte],
        ['wpe', wpe],
      ]),
    );
    const g = new Graph(device);
    const used = entriesOf(g, 'embedding');
    const y = embedding(g, g.input(ids, [batch, t], 'ids'), p.get('wte'), p.get('wpe'));
    g.backwardFrom(y, dy);
    expect(used).toEqual(['forward', reductions === 'split' ? 'backward_tokens_sorted' : 'backward_tokens', 'backward_positions']);
    const want = ref.embedding(ids, wte, wpe, batch, t, c, dy, vocab);
    expectClose(await g.read(y), want.y, 'y');
    expectClose(await p.read('wte', true), want.dwte, 'dwte');
    expectClose(await p.read('wpe', true), want.dwpe, 'dwpe');
    g.release();
    p.destroy();
  });

  it.each(REDUCTIONS)(
    "positions in documents (--reset-position-ids) look up and add up by each row's position, %s reductions",
    async (reductions) => {
      const [batch, t, c, vocab, eod] = [3, 9, 6, 7, 0];
      const device = on(reductions);
      const p = params(
        [
          ['wte', [vocab, c]],
          ['wpe', [t, c]],
        ],
        'float32',
        'float32',
        device,
      );
      const wte = rand(vocab * c),
        wpe = rand(t * c),
        dy = rand(batch * t * c);
      // End-of-document tokens at varying places, back to back and at a sample's end.
      const ids = Uint32Array.from({ length: batch * t }, (_, i) => ((i * 5 + SEED) % 3 === 0 || i === 10 || i === 17 ? eod : 1 + (i % 6)));
      p.set(
        new Map([
          ['wte', wte],
          ['wpe', wpe],
        ]),
      );
      const g = new Graph(device);
      g.documents = documentInputs(g, documentStarts(ids, t, eod), t, { positions: true, attention: false });
      const positions = g.integerInput(g.documents.positions!)!;
      expect(new Set(positions).size, msg('positions repeat across documents')).toBeLessThan(t);
      const used = entriesOf(g, 'embedding');
      const y = embedding(g, g.input(ids, [batch, t], 'ids'), p.get('wte'), p.get('wpe'));
      g.backwardFrom(y, dy);
      const scatter = reductions === 'split' ? 'backward_tokens_sorted' : 'backward_tokens';
      expect(used).toEqual(['forward', scatter, scatter]);
      const want = ref.embedding(ids, wte, wpe, batch, t, c, dy, vocab, positions);
      expectClose(await g.read(y), want.y, 'y');
      expectClose(await p.read('wte', true), want.dwte, 'dwte');
      expectClose(await p.read('wpe', true), want.dwpe, 'dwpe');
      g.release();
      p.destroy();
    },
  );

  it("split: the token grads equal the lane form's to the bit (the same additions in the same order)", async () => {
    const [batch, t, c, vocab] = [4, 33, 12, 50];
    // Repeats, tokens never seen, and ids past the table (clamped to its last row by both forms).
    const ids = Uint32Array.from({ length: batch * t }, (_, i) => ((i * 13 + SEED) % 23) * 2 + (i % 29 === 0 ? 60 : 0));
    const wte = rand(vocab * c),
      wpe = rand(t * c),
      dy = rand(batch * t * c),
      start = rand(batch * t * c);
    const grads: Float32Array[] = [];
    for (const reductions of REDUCTIONS) {
      const p = params(
        [
          ['wte', [vocab, c]],
          ['wpe', [t, c]],
        ],
        'float32',
        'float32',
        on(reductions),
      );
      p.set(
        new Map([
          ['wte', wte],
          ['wpe', wpe],
        ]),
      );
      // A first backward leaves a grad to add to (as a tied head's matmul does), then the one compared.
      for (let pass = 0; pass < 2; pass++) {
        const g = new Graph(on(reductions));
        const y = embedding(g, g.input(pass === 0 ? ids.map((_, i) => i % vocab) : ids, [batch, t], 'ids'), p.get('wte'), p.get('wpe'));
        g.backwardFrom(y, pass === 0 ? start : dy);
        await g.read(y);
        g.release();
      }
      grads.push(await p.read('wte', true));
      p.destroy();
    }
    const differing = grads[0]!.findIndex((v, i) => !Object.is(v, grads[1]![i]));
    expect(differing, msg('first element where split and lane differ')).toBe(-1);
  });

  it("tokenOrder sorts rows by token, stably, with each token's start", () => {
    const ids = Uint32Array.from({ length: 40 }, (_, i) => ((i * 7 + SEED) % 9) + (i === 5 ? 100 : 0));
    const vocab = 12;
    const { index, distinct } = tokenOrder(ids, vocab);
    const token = (r: number) => Math.min(ids[r]!, vocab - 1);
    const rows = [...ids.keys()].sort((a, b) => token(a) - token(b) || a - b);
    const tokens = [...new Set(rows.map(token))];
    expect(distinct).toBe(tokens.length);
    expect([...index.subarray(0, ids.length)], msg('sorted rows')).toEqual(rows);
    expect([...index.subarray(ids.length + distinct + 1)]).toEqual(tokens);
    const starts = tokens.map((v) => rows.findIndex((r) => token(r) === v));
    expect([...index.subarray(ids.length, ids.length + distinct + 1)]).toEqual([...starts, ids.length]);
  });
});

describe('squared ReLU', () => {
  it('y = max(x, 0)², dx += dy · 2 max(x, 0), zeros and negatives included', async () => {
    const n = 1001; // past a workgroup of 256, not a multiple of 4
    const x = rand(n, 2);
    for (let i = 0; i < n; i += 7) x[i] = 0;
    const dy = rand(n);
    const g = new Graph(ctx);
    const xt = g.input(x, [n], 'x', true);
    const y = squaredRelu(g, xt);
    g.backwardFrom(y, dy);
    const r = Array.from(x, (v) => Math.max(v, 0));
    expectClose(
      await g.read(y),
      r.map((v) => v * v),
      'y',
    );
    expectClose(
      await g.read(g.gradOf(xt)),
      r.map((v, i) => dy[i]! * 2 * v),
      'dx',
    );
    expect(x.filter((v) => v < 0).length, 'negatives cover about half').toBeGreaterThan(n / 4);
    g.release();
  });
});

describe('layernorm', () => {
  // Widths that are a multiple of 4 take the vec4 entry points (params as vec4s when fp32), others
  // the element-wise ones; 16-bit params are read element by element either way.
  // Split reductions: a workgroup of 64 lanes per row (280 wide: some lanes take two vec4s), the
  // params' grads in chunks of rows (100 rows: chunks of 15, the last of 10).
  for (const [rows, c, dtype, reductions] of [
    [1, 1, 'float32', 'lane'],
    [5, 3, 'float32', 'lane'],
    [17, 65, 'float32', 'lane'],
    [9, 12, 'float32', 'lane'],
    [40, 128, 'float32', 'lane'],
    [7, 20, 'bfloat16', 'lane'],
    [100, 128, 'float32', 'split'],
    [9, 280, 'float32', 'split'],
    [7, 20, 'bfloat16', 'split'],
    [17, 65, 'float32', 'split'],
  ] as const) {
    it(`${rows} rows of ${c}, ${dtype} params, ${reductions} reductions`, async () => {
      const device = on(reductions);
      const p = params(
        [
          ['w', [c]],
          ['b', [c]],
        ],
        dtype,
        'float32',
        device,
      );
      const w = rand(c, 2),
        b = rand(c),
        dy = rand(rows * c);
      const x = rand(rows * c, 3).map((v, i) => v + (i % 3)); // non-zero means
      p.set(
        new Map([
          ['w', w],
          ['b', b],
        ]),
      );
      const g = new Graph(device);
      const used = entriesOf(g, 'layernorm');
      const sums = entriesOf(g, 'colsum');
      const xt = g.input(x, [rows, c], 'x', true);
      const y = layerNorm(g, xt, p.get('w'), p.get('b'));
      g.backwardFrom(y, dy);
      const want = ref.layerNorm(x, rounded(w, dtype), rounded(b, dtype), rows, c, dy);
      expectClose(await g.read(y), want.y, 'y');
      if (c > 1) expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
      expectClose(await p.read('w', true), want.dw, 'dw');
      expectClose(await p.read('b', true), want.db, 'db');
      const suffix = c % 4 === 0 ? '4' : '';
      const split = reductions === 'split' && c % 4 === 0;
      // Split: a workgroup per row, and the params' grads in chunks of rows.
      const rows4 = split ? '_rows4' : suffix;
      expect(used).toEqual([`forward${rows4}`, `backward_input${rows4}`, split ? 'backward_params_part' : `backward_params${suffix}`]);
      // Split: one finishing pass for each grad.
      expect(sums).toEqual(split ? ['finish4', 'finish4'] : []);
      g.release();
      p.destroy();
    });
  }
});

// A residual add fused into the layernorm after it: s = a + b and layernorm(s) in one pass, the
// backward that of add then layerNorm (s's grad handed to a, added to b's).
describe('RMSNorm', () => {
  // The layernorm's kernels in their RMS form: the same entry points, without mean or bias.
  for (const [rows, c, dtype, reductions] of [
    [5, 3, 'float32', 'lane'],
    [40, 128, 'float32', 'lane'],
    [7, 20, 'bfloat16', 'lane'],
    [100, 128, 'float32', 'split'],
    [17, 65, 'float32', 'split'],
  ] as const) {
    it(`${rows} rows of ${c}, ${dtype} params, ${reductions} reductions`, async () => {
      const device = on(reductions);
      const p = params([['w', [c]]], dtype, 'float32', device);
      const w = rand(c, 2),
        dy = rand(rows * c);
      const x = rand(rows * c, 3).map((v, i) => v + (i % 3));
      p.set(new Map([['w', w]]));
      const g = new Graph(device);
      const used = entriesOf(g, 'layernorm');
      const xt = g.input(x, [rows, c], 'x', true);
      const y = rmsNorm(g, xt, p.get('w'));
      g.backwardFrom(y, dy);
      const want = ref.rmsNorm(x, rounded(w, dtype), rows, c, dy);
      expectClose(await g.read(y), want.y, 'y');
      expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
      expectClose(await p.read('w', true), want.dw, 'dw');
      expect(used).toHaveLength(3);
      g.release();
      p.destroy();
    });
  }

  for (const [rows, c, reductions] of [
    [40, 128, 'lane'],
    [9, 13, 'lane'],
    [12, 600, 'split'],
  ] as const) {
    it(`after a residual add: ${rows} rows of ${c}, ${reductions} reductions`, async () => {
      const device = on(reductions);
      const p = params([['w', [c]]], 'float32', 'float32', device);
      const w = rand(c, 2),
        ds = rand(rows * c);
      const a = rand(rows * c, 3);
      const b = rand(rows * c);
      p.set(new Map([['w', w]]));
      const g = new Graph(device);
      const used = entriesOf(g, 'layernorm');
      const at = g.input(a, [rows, c], 'a', true);
      const bt = g.input(b, [rows, c], 'b', true);
      const { sum, y } = addRmsNorm(g, at, bt, p.get('w'));
      g.backwardFrom(add(g, sum, y), ds);
      const s = a.map((v, i) => v + b[i]!);
      const want = ref.rmsNorm(s, w, rows, c, ds);
      expectClose(await g.read(y), want.y, 'y');
      const dsum = want.dx.map((v, i) => v + ds[i]!);
      expectClose(await g.read(g.gradOf(at)), dsum, 'da');
      expectClose(await g.read(g.gradOf(bt)), dsum, 'db');
      expectClose(await p.read('w', true), want.dw, 'dw');
      expect(used[0]).toBe(c % 4 !== 0 ? 'forward' : reductions === 'split' ? 'add_forward_rows4' : 'add_forward4');
      g.release();
      p.destroy();
    });
  }
});

describe('SwiGLU', () => {
  // f a multiple of 4 takes the vec4 entry points.
  for (const [rows, f] of [
    [5, 3],
    [9, 8],
    [33, 20],
  ] as const) {
    it(`${rows} rows of 2 × ${f}`, async () => {
      const x = rand(rows * 2 * f, 4);
      const dy = rand(rows * f);
      const g = new Graph(ctx);
      const used = entriesOf(g, 'swiglu');
      const xt = g.input(x, [rows, 2 * f], 'x', true);
      const y = swiglu(g, xt);
      expect(y.shape).toEqual([rows, f]);
      g.backwardFrom(y, dy);
      const want = ref.swiglu(x, rows, f, dy);
      expectClose(await g.read(y), want.y, 'y');
      expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
      expect(used).toEqual(f % 4 === 0 ? ['forward4', 'backward4'] : ['forward', 'backward']);
      g.release();
    });
  }
});

describe('grouped-query attention: k and v repeated for their query heads', () => {
  for (const [batch, t, heads, groups, hd] of [
    [2, 5, 4, 2, 3],
    [1, 7, 6, 1, 4],
    [3, 2, 4, 4, 2],
  ] as const) {
    it(`B ${batch}, T ${t}, ${heads} heads in ${groups} groups of width ${hd}`, async () => {
      const width = (heads + 2 * groups) * hd;
      const c = heads * hd;
      const rep = heads / groups;
      const x = rand(batch * t * width);
      const dy = rand(batch * t * 3 * c);
      const g = new Graph(ctx);
      const xt = g.input(x, [batch, t, width], 'qkv', true);
      const y = repeatKv(g, xt, heads, groups);
      g.backwardFrom(y, dy);
      // Written out: column j of the repeated row takes q's column j, or the column of its head's group.
      const want = new Float64Array(batch * t * 3 * c);
      const dx = new Float64Array(batch * t * width);
      for (let r = 0; r < batch * t; r++) {
        for (let j = 0; j < 3 * c; j++) {
          const part = Math.floor(j / c);
          const head = Math.floor((j % c) / hd);
          const src = part === 0 ? j : c + (part - 1) * groups * hd + Math.floor(head / rep) * hd + (j % hd);
          want[r * 3 * c + j] = x[r * width + src]!;
          dx[r * width + src]! += dy[r * 3 * c + j]!;
        }
      }
      expectClose(await g.read(y), want, 'y');
      expectClose(await g.read(g.gradOf(xt)), dx, 'dx');
      g.release();
    });
  }
});

describe('residual add + layernorm', () => {
  for (const [rows, c, reductions] of [
    [40, 128, 'lane'],
    [9, 13, 'lane'],
    [40, 128, 'split'],
    [12, 600, 'split'],
  ] as const) {
    it(`${rows} rows of ${c}, ${reductions} reductions`, async () => {
      const device = on(reductions);
      const p = params(
        [
          ['w', [c]],
          ['b', [c]],
        ],
        'float32',
        'float32',
        device,
      );
      const w = rand(c, 2),
        bias = rand(c),
        ds = rand(rows * c);
      const a = rand(rows * c, 3).map((v, i) => v + (i % 3));
      const b = rand(rows * c);
      p.set(
        new Map([
          ['w', w],
          ['b', bias],
        ]),
      );
      const g = new Graph(device);
      const used = entriesOf(g, 'layernorm');
      const at = g.input(a, [rows, c], 'a', true);
      const bt = g.input(b, [rows, c], 'b', true);
      const { sum, y } = addLayerNorm(g, at, bt, p.get('w'), p.get('b'));
      // The stream continues past the layernorm too: out = s + y, so both s and y get d out.
      const out = add(g, sum, y);
      g.backwardFrom(out, ds);
      const s = a.map((v, i) => v + b[i]!);
      const want = ref.layerNorm(s, w, bias, rows, c, ds);
      expectClose(await g.read(sum), s, 's');
      expectClose(await g.read(y), want.y, 'y');
      // d s = d out (through the next add) + layernorm's dx; a and b get it all.
      const dsum = want.dx.map((v, i) => v + ds[i]!);
      expectClose(await g.read(g.gradOf(at)), dsum, 'da');
      expectClose(await g.read(g.gradOf(bt)), dsum, 'db');
      expectClose(await p.read('w', true), want.dw, 'dw');
      expectClose(await p.read('b', true), want.db, 'dbias');
      expect(used[0]).toBe(c % 4 !== 0 ? 'forward' : reductions === 'split' ? 'add_forward_rows4' : 'add_forward4');
      g.release();
      p.destroy();
    });
  }
});

/** The entry points of `shader` that `g` dispatches from now on, in order. */
function entriesOf(g: Graph, shader: string): string[] {
  return recordDispatches(g, ([s, entry]) => (s === shader ? entry : undefined));
}

describe('elementwise', () => {
  // Lengths that are a multiple of 4 take the vec4 kernels, others the element-wise ones.
  it.each([
    [1001, ['forward', 'backward']],
    [1024, ['forward4', 'backward4']],
  ])('GELU (tanh form) forward and backward, including large |x| (n = %i: %j)', async (n, entries) => {
    const x = rand(n, 6);
    x[0] = 40;
    x[1] = -40;
    x[2] = 0;
    const dy = rand(n);
    const g = new Graph(ctx);
    const used = entriesOf(g, 'gelu');
    const xt = g.input(x, [n], 'x', true);
    const y = gelu(g, xt);
    g.backwardFrom(y, dy);
    const want = ref.gelu(x, dy);
    expectClose(await g.read(y), want.y, 'y');
    expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
    expect(used).toEqual(entries);
    g.release();
  });

  it('timePerKernel times each dispatch in its own pass under its kernel, the results unchanged', async () => {
    if (!ctx.hasTimestamps) return console.log('skipped: this adapter has no timestamp queries');
    const n = 1024;
    const x = rand(n, 6);
    const dy = rand(n);
    const g = new Graph(ctx);
    const timer = new GpuTimer(ctx, 64);
    g.runner.timer = timer;
    g.runner.timePerKernel = true;
    const kernels = recordDispatches(g, ([shader, entry]) => `${shader}.${entry}`);
    const xt = g.input(x, [n], 'x', true);
    const y = gelu(g, xt);
    g.backwardFrom(y, dy);
    const want = ref.gelu(x, dy);
    expectClose(await g.read(y), want.y, 'y');
    expectClose(await g.read(g.gradOf(xt)), want.dx, 'dx');
    const { ms, passes, dropped } = await timer.read();
    expect(kernels.length).toBeGreaterThanOrEqual(2);
    expect(passes).toBe(kernels.length);
    expect(dropped).toBe(0);
    expect(Object.keys(ms).sort()).toEqual([...new Set(kernels)].sort());
    for (const t of Object.values(ms)) expect(t).toBeGreaterThanOrEqual(0);
    timer.destroy();
    g.release();
  });

  // y = (a + b) + a. Forward: one vec4 sum per add where aligned, else two adds into zeros.
  // Backward: the outer add hands its grad to a + b (shared, nothing dispatched) and adds it to a's
  // new grad; the inner add adds its grad to a's (which has one now) and to b's.
  it.each([
    [37, ['add_f32', 'add_f32', 'add_f32', 'add_f32', 'add_f32', 'add_f32', 'add_f32']],
    [36, ['sum_f32_4', 'sum_f32_4', 'add_f32_4', 'add_f32_4', 'add_f32_4']],
  ])('residual add sends the grad to both inputs, and to one input used twice (n = %i: %j)', async (n, entries) => {
    const a = rand(n),
      b = rand(n),
      dy = rand(n);
    const g = new Graph(ctx);
    const used = entriesOf(g, 'accumulate');
    const at = g.input(a, [n], 'a', true);
    const bt = g.input(b, [n], 'b', true);
    const y = add(g, add(g, at, bt), at);
    g.backwardFrom(y, dy);
    expectClose(
      await g.read(y),
      a.map((v, i) => 2 * v + b[i]!),
      'y',
    );
    expectClose(
      await g.read(g.gradOf(at)),
      dy.map((v) => 2 * v),
      'da',
    );
    expectClose(await g.read(g.gradOf(bt)), dy, 'db');
    expect(used).toEqual(entries);
    g.release();
  });

  it('a residual add passes its grad on to a graph input that had none, and later grads still add to it', async () => {
    const n = 24;
    const [x, b1, b2, dy] = [rand(n), rand(n), rand(n), rand(n)];
    const g = new Graph(ctx);
    const xt = g.input(x, [n], 'x', true);
    const b1t = g.input(b1, [n], 'b1', true);
    // x feeds gelu and then the first add. Backward runs the add first: x gets the add's grad
    // buffer, and gelu's backward adds to it afterwards.
    const h = gelu(g, xt);
    const y = add(g, add(g, xt, b1t), add(g, h, g.input(b2, [n], 'b2')));
    g.backwardFrom(y, dy);
    const viaGelu = ref.gelu(x, dy).dx;
    expectClose(
      await g.read(g.gradOf(xt)),
      dy.map((v, i) => v + viaGelu[i]!),
      'dx',
    );
    expectClose(await g.read(g.gradOf(b1t)), dy, 'db1');
    expectClose(
      await g.read(y),
      x.map((v, i) => v + b1[i]! + ref.gelu(x, dy).y[i]! + b2[i]!),
      'y',
    );
    g.release();
  });

  it("a child graph: its released buffers serve the next child by size, never its parent; only the parent's own grads are adopted", async () => {
    const n = 24;
    const before = ctx.memoryReport().live.activations;
    const g = new Graph(ctx);
    const x = g.input(rand(n), [n], 'x', true);
    const first = g.child();
    const a = first.tensor([n], 'a');
    const b = first.tensor([n * 2], 'b');
    first.release();
    // The next child takes the same buffers by exact size; the parent takes new ones.
    const second = g.child();
    expect(second.tensor([n * 2], 'b2').buffer).toBe(b.buffer);
    expect(second.tensor([n], 'a2').buffer).toBe(a.buffer);
    expect(second.tensor([n], 'c').buffer).not.toBe(a.buffer);
    expect(g.tensor([n], 'mine').buffer).not.toBe(a.buffer);
    // A child's buffer goes back to the spares: the parent must not take it as a grad of its own.
    expect(g.adoptGrad(x, second.tensor([n], 'd'))).toBe(false);
    expect(g.adoptGrad(x, g.tensor([n], 'dx'))).toBe(true);
    expect(g.adoptGrad(x, g.tensor([n], 'dx2'))).toBe(false); // x has a grad now
    second.release();
    g.release();
    // Every buffer of the family went back to the pool with the parent, the children's spares too.
    expect(ctx.memoryReport().live.activations).toBe(before);
  });

  it('dropout keeps elements by the counter-based hash, scales by 1/(1-p), and is the identity in eval', async () => {
    const n = 4099;
    const p = 0.3;
    const x = rand(n),
      dy = rand(n);
    const g = new Graph(ctx, { seed: SEED });
    const xt = g.input(x, [n], 'x', true);
    const y = dropout(g, xt, p);
    g.backwardFrom(y, dy);
    const seed = dropoutSeed(SEED, 0);
    // One sample (the graph's default): key = pcg(seed ^ pcg(0)), element i at offset i.
    const key = ref.pcg((seed ^ ref.pcg(0)) >>> 0);
    const keep = Array.from({ length: n }, (_, i) => (ref.pcg((key ^ i) >>> 0) >>> 8) / 2 ** 24 >= p);
    const yWant = x.map((v, i) => (keep[i] ? v / (1 - p) : 0));
    expectClose(await g.read(y), yWant, 'y');
    expectClose(
      await g.read(g.gradOf(xt)),
      dy.map((v, i) => (keep[i] ? v / (1 - p) : 0)),
      'dx',
    );
    const kept = keep.filter(Boolean).length / n;
    expect(Math.abs(kept - (1 - p)), msg('kept fraction')).toBeLessThan(0.03);
    g.release();
    const e = new Graph(ctx, { training: false });
    const xe = e.input(x, [n], 'x');
    expect(dropout(e, xe, p)).toBe(xe);
    e.release();
  });

  it("a sample's dropout mask is the same in a micro-batch of two and on its own (it is keyed by the global sample index)", async () => {
    const m = 1001;
    const p = 0.5;
    const x = rand(2 * m);
    const pair = new Graph(ctx, { seed: SEED, samples: { first: 10, count: 2 } });
    const both = await pair.read(dropout(pair, pair.input(x, [2, m], 'x'), p));
    pair.release();
    const single = new Graph(ctx, { seed: SEED, samples: { first: 11, count: 1 } });
    const second = await single.read(dropout(single, single.input(x.slice(m), [1, m], 'x'), p));
    single.release();
    expect(Array.from(second)).toEqual(Array.from(both.subarray(m)));
    // And another sample's mask differs.
    expect(Array.from(both.subarray(0, m)).map((v) => v === 0)).not.toEqual(Array.from(second).map((v) => v === 0));
  });
});

describe('causal self-attention', () => {
  let fusedCtx: GpuContext;
  let unfused: GpuContext;
  beforeAll(async () => {
    fusedCtx = await GpuContext.create({ attentionKernel: 'fused' });
    unfused = await GpuContext.create({ attentionKernel: 'unfused' });
  });
  afterAll(() => {
    fusedCtx?.destroy();
    unfused?.destroy();
  });
  for (const [batch, t, c, heads] of [
    [1, 1, 4, 1],
    [2, 5, 12, 3],
    [3, 17, 16, 2],
    [2, 12, 8, 2],
    [2, 64, 32, 4],
    [1, 70, 128, 2],
    // Head dims that are not whole vec4s (5), and whose key block is not a power of two (96: 20 rows).
    // Heads of at most 8 run the row loops as hardware does (a constant count), wider ones as lavapipe does.
    [2, 9, 10, 2],
    [1, 40, 192, 2],
  ] as const) {
    for (const kernel of ['fused', 'unfused'] as const) {
      it(`${kernel}: B ${batch}, T ${t}, C ${c}, ${heads} heads`, async () => {
        const qkv = rand(batch * t * 3 * c, 2),
          dy = rand(batch * t * c);
        const device = kernel === 'fused' ? fusedCtx : unfused;
        expect(device.attentionKernel).toBe(kernel);
        const g = new Graph(device);
        const used = entriesOf(g, kernel === 'fused' ? 'attention' : 'softmax');
        const qt = g.input(qkv, [batch, t, 3 * c], 'qkv', true);
        const y = causalAttention(g, qt, heads);
        g.backwardFrom(y, dy);
        const want = ref.attention(qkv, batch, t, c, heads, dy);
        expectClose(await g.read(y), want.y, 'y');
        expectClose(await g.read(g.gradOf(qt)), want.dqkv, 'dqkv');
        // Heads past 56 take the key-side backward in two passes (dv, then dk).
        const dkv = dkvPasses(c / heads).map(() => 'backward_dkv');
        expect(dkv.length).toBe(c / heads > 56 ? 2 : 1);
        if (kernel === 'fused') expect(used).toEqual(['forward', 'backward_d', 'backward_dq', ...dkv]);
        // Rows of whole quads take the vec4 softmax.
        else expect(used).toEqual(t % 4 === 0 ? ['forward4', 'backward4'] : ['forward', 'backward']);
        g.release();
      });
    }
  }

  // --reset-attention-mask: each query sees the keys of its own document only. Documents of 1 to
  // about 20 tokens (an end-of-document token at a sample's start and end, and two back to back)
  // cross the fused kernel's query and key blocks, and whole key workgroups end before later queries;
  // heads of 8 (rows unrolled), 64 (the key side in two passes) and 5 (not whole vec4s).
  for (const [batch, t, c, heads] of [
    [2, 64, 32, 4],
    [1, 70, 128, 2],
    [2, 9, 10, 2],
  ] as const) {
    for (const kernel of ['fused', 'unfused'] as const) {
      it(`${kernel}, in documents: B ${batch}, T ${t}, C ${c}, ${heads} heads`, async () => {
        const eod = 9;
        const draws = hashedUniform(SEED, t, batch * t, 1); // in [-1, 1): about one in eight below -0.76
        const ids = Uint32Array.from({ length: batch * t }, (_, i) =>
          draws[i]! < -0.76 || i % t === 0 || i % t === t - 1 || i === 3 || i === 4 ? eod : 1,
        );
        const qkv = rand(batch * t * 3 * c, 2),
          dy = rand(batch * t * c);
        const device = kernel === 'fused' ? fusedCtx : unfused;
        const g = new Graph(device);
        g.documents = documentInputs(g, documentStarts(ids, t, eod), t, { positions: false, attention: true });
        const starts = g.integerInput(g.documents.starts!)!;
        expect(Math.max(...starts), msg('documents start after the first token')).toBeGreaterThan(1);
        const qt = g.input(qkv, [batch, t, 3 * c], 'qkv', true);
        const y = causalAttention(g, qt, heads);
        g.backwardFrom(y, dy);
        const want = ref.attention(qkv, batch, t, c, heads, dy, starts);
        expectClose(await g.read(y), want.y, 'y');
        expectClose(await g.read(g.gradOf(qt)), want.dqkv, 'dqkv');
        // The masks matter: attention over the whole sample differs.
        expect(ref.relError(await g.read(y), ref.attention(qkv, batch, t, c, heads, dy).y)).toBeGreaterThan(0.05);
        g.release();
      });
    }
  }

  // The fused kernel draws its dropout masks as the dropout op does on the unfused path's
  // probabilities: with the same graph seed and samples the two agree, forward and backward.
  // Lavapipe runs wide heads with the row loops' count from the uniforms; the constant-count form a
  // GPU runs for them passes Dawn's WGSL validation on its null backend.
  it("the hardware form of wide heads (64, 96) passes WGSL validation on Dawn's null backend", async () => {
    const nul = await GpuContext.create({ backend: 'null', tuneMatmul: false });
    try {
      const errors: string[] = [];
      for (const hd of [64, 96])
        for (const [entry, constants] of [
          ['forward', {}],
          ['forward', { DOCS: 1 }],
          ['backward_d', {}],
          ['backward_dq', {}],
          ['backward_dq', { DOCS: 1 }],
          ...[1, 2, 3].flatMap((DKV) => [['backward_dkv', { DKV }] as const, ['backward_dkv', { DKV, DOCS: 1 }] as const]),
        ] as const) {
          nul.device.pushErrorScope('validation');
          const { br, bc } = attentionBlocks(hd, false, nul.limits.maxComputeWorkgroupStorageSize);
          nul.kernels.pipeline('attention', entry, constants, { HD: hd, HD4: Math.ceil(hd / 4), BR: br, BC: bc, UNROLLED: 1 });
          const error = await nul.device.popErrorScope();
          if (error) errors.push(`${hd} ${entry}: ${error.message}`);
        }
      expect(errors).toEqual([]);
    } finally {
      nul.destroy();
    }
  });

  for (const c of [16, 128])
    it(`with attention dropout, fused and unfused drop the same probabilities (heads of ${c / 2}: the key-side backward in ${dkvPasses(c / 2).length === 1 ? 'one pass' : 'two passes'})`, async () => {
      const [batch, t, heads, p] = [2, 19, 2, 0.3];
      const qkv = rand(batch * t * 3 * c, 2);
      const dy = rand(batch * t * c);
      // Within documents (--reset-attention-mask) as well: the masks and the dropout together.
      const ids = Uint32Array.from({ length: batch * t }, (_, i) => (i % 7 === 3 ? 0 : 1));
      const run = async (device: GpuContext) => {
        const g = new Graph(device, { seed: SEED, samples: { first: 5, count: batch } });
        g.documents = documentInputs(g, documentStarts(ids, t, 0), t, { positions: false, attention: c === 128 });
        const qt = g.input(qkv, [batch, t, 3 * c], 'qkv', true);
        // A dropout call before the attention's, as the embedding's: the attention takes the next seed.
        dropout(g, g.input(rand(4), [4], 'x'), 0.5);
        const y = causalAttention(g, qt, heads, p);
        g.backwardFrom(y, dy);
        const out = { y: await g.read(y), dqkv: await g.read(g.gradOf(qt)), calls: g.dropoutCalls };
        g.release();
        return out;
      };
      const fused = await run(fusedCtx);
      const plain = await run(unfused);
      expect(fused.calls).toBe(plain.calls);
      expectClose(fused.y, plain.y, 'y with dropout');
      expectClose(fused.dqkv, plain.dqkv, 'dqkv with dropout');
      // Dropout did something: the output differs from attention without it.
      const none = ref.attention(qkv, batch, t, c, heads, dy, c === 128 ? documentStarts(ids, t, 0) : undefined);
      expect(ref.relError(fused.y, none.y)).toBeGreaterThan(0.05);
    });
});

describe('cross-entropy', () => {
  // Split: a workgroup of 256 per row (2 classes leave most lanes empty; 700, three logits per lane).
  for (const [rows, v, reductions] of [
    [1, 2, 'lane'],
    [13, 81, 'lane'],
    [64, 257, 'lane'],
    [1, 2, 'split'],
    [13, 700, 'split'],
    [64, 257, 'split'],
  ] as const) {
    it(`${rows} rows over ${v} classes, ${reductions} reductions`, async () => {
      const logits = rand(rows * v, 8);
      logits[0] = 60; // large logits stay finite
      if (v > 300) logits[v + 299] = 70; // a row's max late in it: the running sums rescale
      const targets = Uint32Array.from({ length: rows }, (_, i) => (i * 31 + SEED) % v);
      const g = new Graph(on(reductions));
      const used = entriesOf(g, 'cross-entropy');
      const lt = g.input(logits, [rows, v], 'logits', true);
      const loss = crossEntropy(g, lt, g.input(targets, [rows], 'targets'));
      g.backward(loss);
      const want = ref.crossEntropy(logits, targets, rows, v);
      expect(used).toEqual([reductions === 'split' ? 'rows_split' : 'rows', 'mean', 'backward']);
      expectClose(await g.read(loss), [want.loss], 'loss');
      expectClose(await g.read(g.gradOf(lt)), want.dlogits, 'dlogits');
      g.release();
    });
  }

  // Masked rows (IGNORED_TARGET): some of them (more rows than the mean's 256 lanes), and all of them.
  for (const [rows, v, reductions, masked] of [
    [300, 17, 'lane', 'some'],
    [300, 17, 'split', 'some'],
    [5, 9, 'lane', 'all'],
    [5, 9, 'split', 'all'],
  ] as const) {
    it(`${rows} rows over ${v} classes, ${masked} masked, ${reductions} reductions`, async () => {
      const logits = rand(rows * v, 8);
      const targets = Uint32Array.from({ length: rows }, (_, i) =>
        masked === 'all' || (i * 7 + SEED) % 5 === 0 ? IGNORED_TARGET : (i * 31 + SEED) % v,
      );
      const g = new Graph(on(reductions));
      const lt = g.input(logits, [rows, v], 'logits', true);
      const loss = crossEntropy(g, lt, g.input(targets, [rows], 'targets'));
      g.backward(loss);
      const want = ref.crossEntropy(logits, targets, rows, v);
      const dlogits = await g.read(g.gradOf(lt));
      expectClose(await g.read(loss), [want.loss], 'loss');
      expectClose(dlogits, want.dlogits, 'dlogits');
      // A masked row's grad is exactly 0; a mean over the unmasked rows only is what the reference says.
      for (let r = 0; r < rows; r++)
        if (targets[r] === IGNORED_TARGET) expect(dlogits.subarray(r * v, (r + 1) * v).every((x) => x === 0)).toBe(true);
      if (masked === 'all') expect(Array.from(await g.read(loss))).toEqual([0]);
      g.release();
    });
  }
});

// Every combination of A along k (vec4 or element-wise) and B along n / along k / strided, C stored
// as vec4s (n a multiple of 4) or element-wise, accumulated into or overwritten, with two-level
// batches, offsets and odd edges, against the float64 reference; run with A's rows shared through
// subgroups (where the adapter has them) and loaded by every invocation. Every case has more than 8
// rows: fewer run on the few-rows kernel (matmul-rows.test.ts).
function matmulReadPaths(device: () => GpuContext) {
  const cases: { name: string; m: number; n: number; k: number; transA: boolean; transB: boolean; off: number; acc: boolean }[] = [
    { name: 'A rows, B rows (vec4 all)', m: 9, n: 12, k: 8, transA: false, transB: false, off: 0, acc: true },
    { name: 'A rows, B rows, C overwritten as vec4s', m: 9, n: 12, k: 8, transA: false, transB: false, off: 0, acc: false },
    { name: 'A rows, B columns (vec4 along k)', m: 10, n: 7, k: 12, transA: false, transB: true, off: 0, acc: true },
    { name: 'A columns, B rows', m: 13, n: 16, k: 9, transA: true, transB: false, off: 0, acc: true },
    { name: 'A columns, B columns', m: 15, n: 5, k: 4, transA: true, transB: true, off: 0, acc: true },
    { name: 'odd sizes and an odd offset (element-wise)', m: 11, n: 11, k: 13, transA: false, transB: false, off: 1, acc: true },
    { name: 'odd sizes, C overwritten element-wise', m: 11, n: 11, k: 13, transA: false, transB: false, off: 1, acc: false },
    { name: 'offset 4, vec4 paths', m: 12, n: 8, k: 8, transA: false, transB: true, off: 4, acc: true },
    { name: 'row blocks of 16 or 32, the last moved back, k tail', m: 37, n: 10, k: 7, transA: true, transB: false, off: 0, acc: true },
    { name: 'fewer rows than a block, columns past the edge', m: 20, n: 6, k: 5, transA: false, transB: false, off: 0, acc: true },
    { name: 'columns past the edge, C as vec4s', m: 12, n: 36, k: 5, transA: false, transB: false, off: 0, acc: true },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const [nb0, nb1] = [2, 3];
      const z = nb0 * nb1;
      const aData = rand(c.off + z * c.m * c.k),
        bData = rand(c.off + z * c.k * c.n),
        acc = rand(z * c.m * c.n);
      const g = new Graph(device());
      const cVec = recordDispatches(g, (call) => call[2].C_VEC);
      const at = g.input(aData, [aData.length]);
      const bt = g.input(bData, [bData.length]);
      const ct = g.input(acc, [acc.length]);
      // Batch (z0, z1) of A is the z0·nb1 + z1-th block; inside it A is [m, k] or stored transposed [k, m].
      const blockA = c.m * c.k,
        blockB = c.k * c.n;
      const aOp = c.transA
        ? { t: at, off: c.off, rs: 1, cs: c.m, b0: nb1 * blockA, b1: blockA }
        : { t: at, off: c.off, rs: c.k, cs: 1, b0: nb1 * blockA, b1: blockA };
      const bOp = c.transB
        ? { t: bt, off: c.off, rs: 1, cs: c.k, b0: nb1 * blockB, b1: blockB }
        : { t: bt, off: c.off, rs: c.n, cs: 1, b0: nb1 * blockB, b1: blockB };
      matmulInto(
        g,
        { m: c.m, n: c.n, k: c.k, nb0, nb1 },
        aOp,
        bOp,
        { t: ct, rs: c.n, cs: 1, b0: nb1 * c.m * c.n, b1: c.m * c.n },
        { accumulate: c.acc, alpha: 0.5 },
      );
      expect(cVec).toEqual([c.n % 4 === 0 ? 1 : 0]);
      const want = new Float64Array(acc.length);
      for (let b = 0; b < z; b++) {
        const A = aData.subarray(c.off + b * blockA, c.off + (b + 1) * blockA);
        const B = bData.subarray(c.off + b * blockB, c.off + (b + 1) * blockB);
        const prod = ref.matmul(c.transA ? ref.transpose(A, c.k, c.m) : A, c.transB ? ref.transpose(B, c.n, c.k) : B, c.m, c.k, c.n);
        for (let i = 0; i < prod.length; i++) want[b * c.m * c.n + i] = (c.acc ? acc[b * c.m * c.n + i]! : 0) + 0.5 * prod[i]!;
      }
      expectClose(await g.read(ct), want, c.name);
      g.release();
    });
  }
}

describe("matmul read paths (the adapter's rows per invocation)", () => {
  matmulReadPaths(() => ctx);
});

// The other block height than the adapter's default (16 on hardware, 32 on a CPU driver).
describe('matmul read paths with the other rows per invocation', () => {
  let other: GpuContext;
  beforeAll(async () => {
    other = await GpuContext.create({ matmulRows: ctx.matmulRows === 32 ? 16 : 32 });
  });
  afterAll(() => other?.destroy());
  it('uses the other block height', () => {
    expect(other.matmulRows).not.toBe(ctx.matmulRows);
  });
  matmulReadPaths(() => other);
});

describe('matmul read paths without subgroups', () => {
  let plain: GpuContext;
  beforeAll(async () => {
    plain = await GpuContext.create({ disableFeatures: ['subgroups' as GPUFeatureName] });
  });
  afterAll(() => plain?.destroy());
  it('runs the kernel that loads A in every invocation', () => {
    expect(plain.hasSubgroupsOf8).toBe(false);
  });
  matmulReadPaths(() => plain);
});
