/**
 * The precision-aware Adam kernel (main params and moments stored in 16 bits): one step at a time
 * against torch's AdamW fed the same rounded state, and step by step against the TypeScript reference
 * with the rounding done by the test's own float64 rounding (test/helpers/bf16.ts).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storageUsage, type DeviceBuffer, GpuContext } from '../../src/gpu/context.js';
import { AdamKernel, type StateDtype } from '../../src/optimizer/adam.js';
import { ADAMW_DEFAULTS, adamReferenceStep, type AdamHyperParams } from '../../src/optimizer/adam-math.js';
import { bf16Reference, fp16Reference } from '../helpers/bf16.js';
import { hashedUniform, relativeError } from '../helpers/hash.js';
import { float32Buffer } from '../helpers/gpu.js';

interface State {
  param: string;
  exp_avg: string;
  exp_avg_sq: string;
}
interface Case {
  name: string;
  param: StateDtype;
  exp_avg: StateDtype;
  exp_avg_sq: StateDtype;
  grad_scale: number;
  seed: number;
  steps: { step: number; before: State; after: State & { param_fp32: string } }[];
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/adam-precision-torch.json', import.meta.url), 'utf8')) as {
  torch_version: string;
  length: number;
  hyper: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
  cases: Case[];
};

const decode = (b64: string): Float32Array => {
  const bytes = Buffer.from(b64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
};

/** fp16's smallest step: subnormals are multiples of 2^-24. */
const FP16_TINY = 2 ** -24;

/** x rounded to `dtype` by the test's float64 rounding (exact for values already in it). */
const roundTo = (dtype: StateDtype) => (x: number) =>
  dtype === 'bfloat16' ? bf16Reference(x) : dtype === 'float16' ? fp16Reference(x) : Math.fround(x);

/** The 16-bit pattern of a value already representable in `dtype`, written from the formats' bit layouts. */
function bitsOf(x: number, dtype: 'bfloat16' | 'float16'): number {
  if (dtype === 'bfloat16') return new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16;
  if (x === 0) return Object.is(x, -0) ? 0x8000 : 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  if (e < -14) return sign | Math.round(a / 2 ** -24); // subnormal
  return sign | ((e + 15) << 10) | Math.round((a / 2 ** e - 1) * 1024);
}

function halfValue(bits: number, dtype: 'bfloat16' | 'float16'): number {
  if (dtype === 'bfloat16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  return sign * (e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15));
}

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

/** A buffer holding `values` (already representable in `dtype`) at element `offset`, the rest `fill`. */
function stateBuffer(g: GpuContext, dtype: StateDtype, values: Float32Array, offset = 0, fill = 0): DeviceBuffer {
  const n = offset + values.length + 4;
  if (dtype === 'float32') {
    const all = new Float32Array(n).fill(fill);
    all.set(values, offset);
    return float32Buffer(g, dtype, all, 'optimizer-state');
  }
  const words = new Uint16Array(n + (n % 2)).fill(bitsOf(fill, dtype));
  for (const [i, x] of values.entries()) words[offset + i] = bitsOf(x, dtype);
  const buffer = g.createBuffer({ label: dtype, size: words.byteLength, usage: storageUsage(), category: 'optimizer-state' });
  g.transfers.upload(buffer, words);
  return buffer;
}

async function readState(g: GpuContext, buffer: DeviceBuffer, dtype: StateDtype): Promise<Float32Array> {
  if (dtype === 'float32') return g.transfers.readFloat32(buffer);
  const bytes = await g.transfers.readback(buffer);
  return Float32Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2), (b) => halfValue(b, dtype));
}

/** Elements where `a` and `b` differ, each by at most one unit in the last place of `dtype` (a tie rounded the other way). */
function ulpsApart(a: Float32Array, b: Float32Array, dtype: StateDtype): { differ: number; worst: number } {
  const bits = dtype === 'float32' ? 24 : dtype === 'bfloat16' ? 8 : 11;
  let differ = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    differ += 1;
    const big = Math.max(Math.abs(a[i]!), Math.abs(b[i]!), 2 ** -126);
    const ulp = Math.max(2 ** (Math.floor(Math.log2(big)) - (bits - 1)), dtype === 'float16' ? FP16_TINY : 0);
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / ulp);
  }
  return { differ, worst };
}

describe(`precision-aware Adam against torch ${fixture.torch_version}'s AdamW on the same rounded state`, () => {
  const hyper: AdamHyperParams = {
    lr: fixture.hyper.lr,
    beta1: fixture.hyper.betas[0],
    beta2: fixture.hyper.betas[1],
    eps: fixture.hyper.eps,
    weightDecay: fixture.hyper.weight_decay,
    decoupled: true,
    maximize: false,
  };
  for (const c of fixture.cases) {
    it(`${c.name}: steps ${c.steps.map((s) => s.step).join(', ')}`, async () => {
      const length = fixture.length;
      for (const s of c.steps) {
        const p = stateBuffer(ctx, c.param, decode(s.before.param));
        const m = stateBuffer(ctx, c.exp_avg, decode(s.before.exp_avg));
        const v = stateBuffer(ctx, c.exp_avg_sq, decode(s.before.exp_avg_sq));
        const g = float32Buffer(ctx, 'g', hashedUniform(c.seed, s.step, length, c.grad_scale));
        const kernel = new AdamKernel(ctx, {
          param: { buffer: p, dtype: c.param },
          grad: { buffer: g },
          expAvg: { buffer: m, dtype: c.exp_avg },
          expAvgSq: { buffer: v, dtype: c.exp_avg_sq },
          length,
        });
        kernel.step(hyper, s.step);
        const ours = {
          param: (await readState(ctx, p, c.param)).subarray(0, length),
          exp_avg: (await readState(ctx, m, c.exp_avg)).subarray(0, length),
          exp_avg_sq: (await readState(ctx, v, c.exp_avg_sq)).subarray(0, length),
        };
        const at = `step ${s.step}`;
        if (c.param === 'float32') {
          expect(relativeError(ours.param, decode(s.after.param_fp32)), `param at ${at}`).toBeLessThanOrEqual(1e-6);
        }
        // Stored values are torch's rounded ones, but for a value that torch's fp32 arithmetic and
        // the kernel's put one fp32 ulp apart across a rounding tie: one 16-bit ulp, rarely.
        for (const key of ['param', 'exp_avg', 'exp_avg_sq'] as const) {
          const dtype = c[key];
          const want = decode(s.after[key]);
          if (dtype === 'float32') {
            expect(relativeError(ours[key], want), `${key} at ${at}`).toBeLessThanOrEqual(1e-6);
            continue;
          }
          const { differ, worst } = ulpsApart(ours[key], want, dtype);
          expect(worst, `${key} at ${at}: ulps of ${dtype}`).toBeLessThanOrEqual(1);
          expect(differ, `${key} at ${at}: elements off by an ulp`).toBeLessThanOrEqual(3);
        }
        expect(relativeError(ours.param, decode(s.before.param)), 'the step moved the params').toBeGreaterThan(1e-6);
        kernel.destroy();
        for (const b of [p, m, v, g]) b.destroy();
      }
    });
  }
});

describe('precision-aware Adam against the TypeScript reference: windows, unaligned offsets, the tail', () => {
  // The last: fp16 main params and bf16 grads (--main-params-dtype fp16 --main-grads-dtype bf16).
  const combos: [StateDtype, StateDtype, StateDtype, 'float32' | 'bfloat16'][] = [
    ['float32', 'bfloat16', 'bfloat16', 'float32'],
    ['float16', 'float16', 'bfloat16', 'float32'],
    ['bfloat16', 'float32', 'float16', 'float32'],
    ['float16', 'bfloat16', 'float32', 'bfloat16'],
  ];
  for (const [pd, md, vd, gd] of combos) {
    it(`param ${pd}, exp_avg ${md}, exp_avg_sq ${vd}, grads ${gd}: 256 B offset alignment, 4 KiB bindings, 5 steps`, async () => {
      const strict = await GpuContext.create({ limits: { minStorageBufferOffsetAlignment: 256 } });
      const length = 4099; // windows of 1024 elements and a 3-element tail
      const offsets = { param: 36, expAvg: 4, expAvgSq: 260, grad: 132 };
      const seed = 77;
      const ref = {
        p: Float32Array.from(hashedUniform(seed, 1000, length, 1), roundTo(pd)),
        m: new Float32Array(length),
        v: new Float32Array(length),
      };
      const p = stateBuffer(strict, pd, ref.p, offsets.param, 7);
      const m = stateBuffer(strict, md, ref.m, offsets.expAvg, 7);
      const v = stateBuffer(strict, vd, ref.v, offsets.expAvgSq, 7);
      const g = stateBuffer(strict, gd, new Float32Array(length), offsets.grad, 7);
      const kernel = new AdamKernel(
        strict,
        {
          param: { buffer: p, offset: offsets.param, dtype: pd },
          grad: { buffer: g, offset: offsets.grad, dtype: gd },
          expAvg: { buffer: m, offset: offsets.expAvg, dtype: md },
          expAvgSq: { buffer: v, offset: offsets.expAvgSq, dtype: vd },
          length,
        },
        { maxBindingBytes: 4096 },
      );
      expect(kernel.windows.length).toBeGreaterThan(3);
      const hyper = { ...ADAMW_DEFAULTS, lr: 1e-2, weightDecay: 0.1 };
      const operands = [
        ['p', p, offsets.param, ref.p, pd],
        ['m', m, offsets.expAvg, ref.m, md],
        ['v', v, offsets.expAvgSq, ref.v, vd],
      ] as const;
      for (let t = 1; t <= 5; t++) {
        // bf16 grads: the kernel reads them as stored, the reference the same rounded values.
        const grad = Float32Array.from(hashedUniform(seed, t, length, 0.5), roundTo(gd));
        if (gd === 'float32') strict.transfers.upload(g, grad, offsets.grad * 4);
        else
          strict.transfers.upload(
            g,
            Uint16Array.from(grad, (x) => bitsOf(x, gd)),
            offsets.grad * 2,
          );
        kernel.step(hyper, t);
        adamReferenceStep(hyper, t, ref.p, grad, ref.m, ref.v);
        for (const [key, buffer, offset, want, dtype] of operands) {
          const all = await readState(strict, buffer, dtype);
          const ours = all.subarray(offset, offset + length);
          for (let i = 0; i < length; i++) want[i] = roundTo(dtype)(want[i]!);
          if (dtype === 'float32') expect(relativeError(ours, want), `${key} at step ${t}`).toBeLessThanOrEqual(1e-6);
          else expect(ulpsApart(ours, want, dtype).worst, `${key} at step ${t}: ulps of ${dtype}`).toBeLessThanOrEqual(1);
          // The neighbours are untouched.
          expect(
            Array.from(all.subarray(0, offset)).every((x) => x === 7),
            `${key} before`,
          ).toBe(true);
          expect(
            Array.from(all.subarray(offset + length, offset + length + 4)).every((x) => x === 7),
            `${key} after`,
          ).toBe(true);
          // The next step starts from the kernel's state on both sides: every comparison is of one step.
          want.set(ours);
        }
      }
      kernel.destroy();
      strict.destroy();
    });
  }
});
