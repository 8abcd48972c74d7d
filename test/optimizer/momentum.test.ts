/**
 * The SGD and Lion kernels (shaders/momentum.wgsl) against the TypeScript reference that mirrors
 * them, and against torch.optim.SGD's states and a float64 Lion written from the paper
 * (test/fixtures/momentum-torch.json, from scripts/make-momentum-fixtures.py).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { MomentumKernel } from '../../src/optimizer/momentum.js';
import { type LionHyperParams, momentumReferenceStep, type SgdHyperParams } from '../../src/optimizer/momentum-math.js';
import { bf16Reference } from '../helpers/bf16.js';
import { float32Buffer } from '../helpers/gpu.js';
import { hashedUniform, relativeError } from '../helpers/hash.js';

interface FixtureCase {
  name: string;
  optimizer: 'sgd' | 'lion';
  lr: number;
  momentum?: number;
  betas?: [number, number];
  weight_decay: number;
  grad_scale: number;
  seed: number;
  states: { step: number; param: string; momentum_buffer?: string; exp_avg?: string }[];
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/momentum-torch.json', import.meta.url), 'utf8')) as {
  torch_version: string;
  length: number;
  steps: number;
  cases: FixtureCase[];
};

const decode = (b64: string) => {
  const bytes = Buffer.from(b64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
};

function hyperOf(c: FixtureCase): SgdHyperParams | LionHyperParams {
  return c.optimizer === 'sgd'
    ? { lr: c.lr, momentum: c.momentum!, weightDecay: c.weight_decay }
    : { lr: c.lr, beta1: c.betas![0], beta2: c.betas![1], weightDecay: c.weight_decay };
}

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

/** `steps` kernel steps beside the reference, grads fp32 or stored as bf16; both results. */
async function runBoth(
  optimizer: 'sgd' | 'lion',
  hyper: SgdHyperParams | LionHyperParams,
  length: number,
  seed: number,
  o: { steps?: number; bf16Grads?: boolean; maxBindingBytes?: number; gradScale?: number } = {},
) {
  const withState = optimizer === 'lion' || (hyper as SgdHyperParams).momentum !== 0;
  const param0 = hashedUniform(seed, 0, length, 1);
  const ref = { p: param0.slice(), m: withState ? new Float32Array(length) : null };
  const p = float32Buffer(ctx, 'p', param0);
  const g = float32Buffer(ctx, 'g', new Float32Array(length + 1));
  const m = withState ? float32Buffer(ctx, 'm', new Float32Array(length)) : null;
  const kernel = new MomentumKernel(
    ctx,
    optimizer,
    {
      param: { buffer: p },
      grad: { buffer: g, dtype: o.bf16Grads ? 'bfloat16' : 'float32' },
      state: m ? { buffer: m } : null,
      length,
    },
    o.maxBindingBytes ? { maxBindingBytes: o.maxBindingBytes } : {},
  );
  for (let t = 1; t <= (o.steps ?? 5); t++) {
    let grad = hashedUniform(seed, t, length, 0.5);
    if (o.bf16Grads) {
      // The kernel reads the bf16 words; the reference the same rounded values.
      grad = Float32Array.from(grad, bf16Reference);
      const words = Uint16Array.from(grad, (x) => new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16);
      ctx.transfers.upload(g, words.length % 2 ? Uint16Array.from([...words, 0]) : words);
    } else ctx.transfers.upload(g, grad);
    kernel.step(hyper, o.gradScale ?? 1);
    momentumReferenceStep(optimizer, hyper, ref.p, grad, ref.m, o.gradScale ?? 1);
  }
  const out = { p: await ctx.transfers.readFloat32(p, 0, length), m: m ? await ctx.transfers.readFloat32(m, 0, length) : null };
  const windows = kernel.windows.length;
  for (const b of [p, g, m]) b?.destroy();
  kernel.destroy();
  return { out, ref, windows };
}

const SGD: SgdHyperParams = { lr: 0.05, momentum: 0.9, weightDecay: 0.01 };
const LION: LionHyperParams = { lr: 1e-3, beta1: 0.95, beta2: 0.98, weightDecay: 0.1 };

describe('SGD and Lion kernels against the TypeScript reference', () => {
  for (const [name, optimizer, hyper] of [
    ['SGD with momentum', 'sgd', SGD],
    ['SGD without momentum (no state)', 'sgd', { ...SGD, momentum: 0 }],
    ['Lion', 'lion', LION],
  ] as const) {
    for (const length of [1, 3, 8, 1031]) {
      it(`${name}, length ${length}, clipped grads`, async () => {
        const { out, ref } = await runBoth(optimizer, hyper, length, length + 17, { gradScale: 0.75 });
        expect(relativeError(out.p, ref.p)).toBeLessThanOrEqual(1e-6);
        if (ref.m) expect(relativeError(out.m!, ref.m)).toBeLessThanOrEqual(1e-6);
        // Not a no-op: the params moved.
        expect(relativeError(out.p, hashedUniform(length + 17, 0, length, 1))).toBeGreaterThan(1e-5);
      });
    }

    it(`${name}: bf16 grads read as stored, in many windows`, async () => {
      const { out, ref, windows } = await runBoth(optimizer, hyper, 5003, 99, { bf16Grads: true, maxBindingBytes: 4096 });
      expect(windows).toBeGreaterThan(3);
      expect(relativeError(out.p, ref.p)).toBeLessThanOrEqual(1e-6);
      if (ref.m) expect(relativeError(out.m!, ref.m)).toBeLessThanOrEqual(1e-6);
    });
  }
});

describe(`SGD against torch ${fixture.torch_version}, Lion against a float64 reference from the paper`, () => {
  it('the fixtures cover >= 100 steps, both optimizers, SGD with and without momentum', () => {
    expect(fixture.steps).toBeGreaterThanOrEqual(100);
    expect(new Set(fixture.cases.map((c) => c.optimizer))).toEqual(new Set(['sgd', 'lion']));
    expect(new Set(fixture.cases.filter((c) => c.optimizer === 'sgd').map((c) => c.momentum === 0))).toEqual(new Set([true, false]));
  });

  for (const c of fixture.cases) {
    it(`${c.name} (${fixture.steps} steps)`, async () => {
      const { length } = fixture;
      const hyper = hyperOf(c);
      const withState = c.optimizer === 'lion' || c.momentum !== 0;
      const p = float32Buffer(ctx, 'p', hashedUniform(c.seed, 0, length, 1));
      const g = float32Buffer(ctx, 'g', new Float32Array(length));
      const m = withState ? float32Buffer(ctx, 'm', new Float32Array(length)) : null;
      const host = { p: hashedUniform(c.seed, 0, length, 1), m: withState ? new Float32Array(length) : null };
      const kernel = new MomentumKernel(ctx, c.optimizer, { param: { buffer: p }, grad: { buffer: g }, state: m && { buffer: m }, length });
      const states = new Map(c.states.map((s) => [s.step, s]));
      for (let t = 1; t <= fixture.steps; t++) {
        const grad = hashedUniform(c.seed, t, length, c.grad_scale);
        ctx.transfers.upload(g, grad);
        kernel.step(hyper);
        momentumReferenceStep(c.optimizer, hyper, host.p, grad, host.m);
        const want = states.get(t);
        if (!want) continue;
        const ours = { p: await ctx.transfers.readFloat32(p), m: m ? await ctx.transfers.readFloat32(m) : null };
        const wantP = decode(want.param);
        if (c.optimizer === 'sgd') {
          expect(relativeError(ours.p, wantP), `GPU params at step ${t}`).toBeLessThanOrEqual(1e-6);
          expect(relativeError(host.p, wantP), `TS reference params at step ${t}`).toBeLessThanOrEqual(1e-6);
        } else {
          // Lion moves each param by lr a step, whatever the grad: fp32 rounds p twice a step (the
          // decay, the update), an error that adds up, ≤ t ulps of |p|, against the float64
          // reference. A wrong sign anywhere would be 2·lr off, far above it.
          expect(2 * c.lr).toBeGreaterThan(10 * t * 2 ** -23);
          for (const [who, values] of [
            ['GPU', ours.p],
            ['TS reference', host.p],
          ] as const) {
            const worst = Math.max(...values.map((x, i) => Math.abs(x - wantP[i]!) / Math.max(1, Math.abs(wantP[i]!))));
            expect(worst, `${who} params at step ${t}`).toBeLessThanOrEqual(t * 2 ** -23);
          }
        }
        const moment = want.momentum_buffer ?? want.exp_avg;
        expect(moment === undefined, 'a moment exactly where the optimizer keeps one').toBe(!withState);
        if (moment !== undefined) expect(relativeError(ours.m!, decode(moment)), `GPU moment at step ${t}`).toBeLessThanOrEqual(1e-6);
      }
      for (const b of [p, g, m]) b?.destroy();
      kernel.destroy();
    });
  }
});
