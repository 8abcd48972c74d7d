import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { AdamKernel } from '../../src/optimizer/adam.js';
import { ADAM_DEFAULTS, ADAMW_DEFAULTS, adamReferenceStep, type AdamHyperParams } from '../../src/optimizer/adam-math.js';
import { hashedUniform, relativeError } from '../helpers/hash.js';
import { float32Buffer } from '../helpers/gpu.js';

interface TorchState {
  step: number;
  param: string;
  exp_avg: string;
  exp_avg_sq: string;
}
interface TorchCase {
  name: string;
  optimizer: 'Adam' | 'AdamW';
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  maximize: boolean;
  grad_scale: number;
  seed: number;
  states: TorchState[];
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/adam-torch.json', import.meta.url), 'utf8')) as {
  torch_version: string;
  length: number;
  steps: number;
  cases: TorchCase[];
};

function decode(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

function hyperOf(c: TorchCase): AdamHyperParams {
  return {
    lr: c.lr,
    beta1: c.betas[0],
    beta2: c.betas[1],
    eps: c.eps,
    weightDecay: c.weight_decay,
    decoupled: c.optimizer === 'AdamW',
    maximize: c.maximize,
  };
}

const TOLERANCE = 1e-6;

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

/** Run `steps` GPU Adam steps with per-step grads from `gradOf` and the TS reference beside it. */
async function runBoth(
  length: number,
  hyper: AdamHyperParams,
  steps: number,
  seed: number,
  opts: { maxBindingBytes?: number; workgroupSize?: number; itemsPerThread?: number } = {},
) {
  const param0 = hashedUniform(seed, 1000, length, 1);
  const ref = { p: param0.slice(), m: new Float32Array(length), v: new Float32Array(length) };
  const p = float32Buffer(ctx, 'p', param0, 'main-params');
  const g = float32Buffer(ctx, 'g', new Float32Array(length), 'grads');
  const m = float32Buffer(ctx, 'm', new Float32Array(length), 'optimizer-state');
  const v = float32Buffer(ctx, 'v', new Float32Array(length), 'optimizer-state');
  const kernel = new AdamKernel(
    ctx,
    { param: { buffer: p }, grad: { buffer: g }, expAvg: { buffer: m }, expAvgSq: { buffer: v }, length },
    opts,
  );
  for (let t = 1; t <= steps; t++) {
    const grad = hashedUniform(seed, t, length, 0.5);
    ctx.transfers.upload(g, grad);
    kernel.step(hyper, t);
    adamReferenceStep(hyper, t, ref.p, grad, ref.m, ref.v);
  }
  const out = {
    p: await ctx.transfers.readFloat32(p, 0, length),
    m: await ctx.transfers.readFloat32(m, 0, length),
    v: await ctx.transfers.readFloat32(v, 0, length),
  };
  const windows = kernel.windows.length;
  for (const b of [p, g, m, v]) b.destroy();
  kernel.destroy();
  return { out, ref, windows };
}

describe('Adam kernel against the TypeScript reference', () => {
  const hypers: [string, AdamHyperParams][] = [
    ['adamw defaults', ADAMW_DEFAULTS],
    ['adam defaults', ADAM_DEFAULTS],
    ['adam with L2', { ...ADAM_DEFAULTS, lr: 1e-2, weightDecay: 0.1 }],
    ['adamw maximize', { ...ADAMW_DEFAULTS, lr: 3e-3, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.2, maximize: true }],
  ];
  for (const length of [1, 3, 4, 4097]) {
    for (const [name, hyper] of hypers) {
      it(`length ${length}, ${name}`, async () => {
        const { out, ref } = await runBoth(length, hyper, 5, length * 7 + hyper.lr * 1e4);
        expect(relativeError(out.p, ref.p)).toBeLessThanOrEqual(TOLERANCE);
        expect(relativeError(out.m, ref.m)).toBeLessThanOrEqual(TOLERANCE);
        expect(relativeError(out.v, ref.v)).toBeLessThanOrEqual(TOLERANCE);
        // The step really moved the params (a no-op kernel would fail the line above only by luck).
        expect(relativeError(out.p, hashedUniform(length * 7 + hyper.lr * 1e4, 1000, length, 1))).toBeGreaterThan(1e-6);
      });
    }
  }

  it('many small windows and a 2-D grid of more than 65535 workgroups', async () => {
    // 4 KiB bindings: 1024 elements per window; 1-invocation workgroups: 75001 vec4 workgroups.
    const many = await runBoth(4097 * 3, ADAMW_DEFAULTS, 3, 11, { maxBindingBytes: 4096 });
    expect(many.windows).toBe(13);
    expect(relativeError(many.out.p, many.ref.p)).toBeLessThanOrEqual(TOLERANCE);
    const wide = await runBoth(300_003, ADAMW_DEFAULTS, 2, 12, { workgroupSize: 1, itemsPerThread: 1 });
    expect(Math.ceil(300_003 / 4)).toBeGreaterThan(ctx.limits.maxComputeWorkgroupsPerDimension);
    expect(relativeError(wide.out.p, wide.ref.p)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(wide.out.v, wide.ref.v)).toBeLessThanOrEqual(TOLERANCE);
  });

  it('operands at offsets that are not storage-aligned (a device demanding 256 B, as most GPUs do)', async () => {
    const strict = await GpuContext.create({ limits: { minStorageBufferOffsetAlignment: 256 } });
    expect(strict.limits.minStorageBufferOffsetAlignment).toBe(256);
    const length = 4097;
    const offsets = { param: 32, grad: 100, expAvg: 4, expAvgSq: 260 }; // 128, 400, 16, 1040 B
    const param0 = hashedUniform(21, 1000, length, 1);
    const ref = { p: param0.slice(), m: new Float32Array(length), v: new Float32Array(length) };
    const place = (name: keyof typeof offsets, data: Float32Array) => {
      const all = new Float32Array(offsets[name] + length + 8).fill(7); // the neighbours must stay 7
      all.set(data, offsets[name]);
      return float32Buffer(strict, name, all);
    };
    const buffers = {
      param: place('param', param0),
      grad: place('grad', new Float32Array(length)),
      expAvg: place('expAvg', new Float32Array(length)),
      expAvgSq: place('expAvgSq', new Float32Array(length)),
    };
    const kernel = new AdamKernel(
      strict,
      {
        param: { buffer: buffers.param, offset: offsets.param },
        grad: { buffer: buffers.grad, offset: offsets.grad },
        expAvg: { buffer: buffers.expAvg, offset: offsets.expAvg },
        expAvgSq: { buffer: buffers.expAvgSq, offset: offsets.expAvgSq },
        length,
      },
      { maxBindingBytes: 4096 },
    );
    expect(kernel.windows.length).toBeGreaterThan(4);
    for (let t = 1; t <= 3; t++) {
      const grad = hashedUniform(21, t, length, 0.5);
      const all = new Float32Array(offsets.grad + length + 8).fill(7);
      all.set(grad, offsets.grad);
      strict.transfers.upload(buffers.grad, all);
      kernel.step(ADAMW_DEFAULTS, t);
      adamReferenceStep(ADAMW_DEFAULTS, t, ref.p, grad, ref.m, ref.v);
    }
    const read = async (name: keyof typeof offsets) => strict.transfers.readFloat32(buffers[name]);
    const [p, m, v] = [await read('param'), await read('expAvg'), await read('expAvgSq')];
    expect(relativeError(p.subarray(offsets.param, offsets.param + length), ref.p)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(m.subarray(offsets.expAvg, offsets.expAvg + length), ref.m)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(v.subarray(offsets.expAvgSq, offsets.expAvgSq + length), ref.v)).toBeLessThanOrEqual(TOLERANCE);
    for (const [data, offset] of [
      [p, offsets.param],
      [m, offsets.expAvg],
      [v, offsets.expAvgSq],
    ] as const) {
      expect(Array.from(data.subarray(0, offset)).every((x) => x === 7)).toBe(true);
      expect(Array.from(data.subarray(offset + length)).every((x) => x === 7)).toBe(true);
    }
    kernel.destroy();
    strict.destroy();
  });

  it('one element past the device storage binding limit', async () => {
    const length = ctx.limits.maxStorageBufferBindingSize / 4 + 1;
    const { out, ref, windows } = await runBoth(length, ADAMW_DEFAULTS, 2, 13);
    expect(windows).toBe(2);
    expect(out.p[length - 1]).toBe(ref.p[length - 1]);
    expect(relativeError(out.p, ref.p)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(out.m, ref.m)).toBeLessThanOrEqual(TOLERANCE);
    expect(relativeError(out.v, ref.v)).toBeLessThanOrEqual(TOLERANCE);
  });
});

describe(`Adam kernel against torch ${fixture.torch_version} fixtures`, () => {
  it('the fixtures cover >= 100 steps and several hyper-parameter sets', () => {
    expect(fixture.steps).toBeGreaterThanOrEqual(100);
    expect(fixture.cases.length).toBeGreaterThanOrEqual(4);
    expect(new Set(fixture.cases.map((c) => c.optimizer))).toEqual(new Set(['Adam', 'AdamW']));
  });

  for (const c of fixture.cases) {
    it(`${c.name} (${c.optimizer}, ${fixture.steps} steps)`, async () => {
      const length = fixture.length;
      const hyper = hyperOf(c);
      const p = float32Buffer(ctx, 'p', hashedUniform(c.seed, 0, length, 1));
      const g = float32Buffer(ctx, 'g', new Float32Array(length));
      const m = float32Buffer(ctx, 'm', new Float32Array(length));
      const v = float32Buffer(ctx, 'v', new Float32Array(length));
      const host = { p: hashedUniform(c.seed, 0, length, 1), m: new Float32Array(length), v: new Float32Array(length) };
      const kernel = new AdamKernel(ctx, {
        param: { buffer: p },
        grad: { buffer: g },
        expAvg: { buffer: m },
        expAvgSq: { buffer: v },
        length,
      });
      const states = new Map(c.states.map((s) => [s.step, s]));
      for (let t = 1; t <= fixture.steps; t++) {
        const grad = hashedUniform(c.seed, t, length, c.grad_scale);
        ctx.transfers.upload(g, grad);
        kernel.step(hyper, t);
        adamReferenceStep(hyper, t, host.p, grad, host.m, host.v);
        const torch = states.get(t);
        if (!torch) continue;
        const ours = {
          p: await ctx.transfers.readFloat32(p),
          m: await ctx.transfers.readFloat32(m),
          v: await ctx.transfers.readFloat32(v),
        };
        const want = { p: decode(torch.param), m: decode(torch.exp_avg), v: decode(torch.exp_avg_sq) };
        for (const key of ['p', 'm', 'v'] as const) {
          expect(relativeError(ours[key], want[key]), `GPU ${key} at step ${t}`).toBeLessThanOrEqual(TOLERANCE);
          expect(relativeError(host[key], want[key]), `TS reference ${key} at step ${t}`).toBeLessThanOrEqual(TOLERANCE);
        }
      }
      for (const b of [p, g, m, v]) b.destroy();
      kernel.destroy();
    });
  }
});
