import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { fmaExpected, measuredFmaPeak, mmaInputs, PEAK_NSUB, PEAK_SETS, PeakKernel, type PeakKind } from '../../src/gpu/peak.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

// The peak bench and --log-throughput divide FLOPs by time, counting a run only when every kept
// result is exact: the kernels must do the arithmetic they are credited with, and the check must see
// when they do not.
describe('peak kernels', () => {
  for (const [kind, chains, flops] of [
    ['fma-f32', 32, 64],
    ['fma-f32-staged', 16, 32],
  ] as const) {
    it(`${kind}: every kept invocation holds the sum of its ${chains} chains after each iteration count`, async () => {
      const k = new PeakKernel(ctx, kind, 3, 3, 2);
      try {
        for (const [slot, iters] of [
          [0, 5],
          [1, 1000],
        ] as const) {
          k.setIters(slot, iters);
          // Chains starting at 0, 1, 2, ..., each + 1 per iteration.
          let sum = 0;
          for (let c = 0; c < chains; c++) sum += c + iters;
          expect(fmaExpected(iters, kind === 'fma-f32-staged')).toBe(sum);
          expect(Array.from(await k.results(slot))).toEqual(new Array(3 * 256).fill(sum));
          expect(await k.check(slot)).toBeNull();
          expect(k.flops(slot)).toBe(3 * 256 * iters * flops);
        }
      } finally {
        k.destroy();
      }
    });
  }

  it('fma-f32: a result the kernel did not write is reported, naming the element', async () => {
    // Three workgroups kept, two run: the third's results stay 0.
    const k = new PeakKernel(ctx, 'fma-f32', 2, 3, 1);
    try {
      k.setIters(0, 7);
      expect(await k.check(0)).toBe(`fma-f32 at 7 iterations: element 512 is 0, not ${fmaExpected(7)}`);
    } finally {
      k.destroy();
    }
  });

  // The subgroup-matrix kernels' twin: the same staging, set order and result layout, with plain
  // arithmetic, against a step-by-step sum written here.
  for (const kind of ['mma-f16-regs', 'mma-f16-staged'] as PeakKind[]) {
    it(`${kind} (plain twin): each subgroup's 8 fragments are the sum over steps of its set's products`, async () => {
      const skew = 1;
      const iters = 5;
      const k = new PeakKernel(ctx, kind, 2, 2, 1, { twin: true, skew });
      try {
        k.setIters(0, iters);
        expect(await k.check(0)).toBeNull();
        const shape = { m: 8, n: 8, k: 8 };
        const { a, b } = mmaInputs(shape);
        const sets = kind === 'mma-f16-regs' ? 1 : PEAK_SETS;
        const want = new Float64Array(8 * 64);
        for (let i = 0; i < iters; i++) {
          const j = (i + skew) % sets;
          for (let f = 0; f < 8; f++)
            for (let r = 0; r < 8; r++)
              for (let c = 0; c < 8; c++) {
                let s = want[f * 64 + r * 8 + c]!;
                for (let x = 0; x < 8; x++) s += a[(2 * j + Math.floor(f / 4)) * 64 + r * 8 + x]! * b[(4 * j + (f % 4)) * 64 + x * 8 + c]!;
                want[f * 64 + r * 8 + c] = s;
              }
        }
        const got = await k.results(0);
        expect(got.length).toBe(2 * PEAK_NSUB * 8 * 64);
        for (let s = 0; s < 2 * PEAK_NSUB; s++) expect(Array.from(got.subarray(s * 512, (s + 1) * 512))).toEqual(Array.from(want));
        expect(k.flops(0)).toBe(2 * iters * PEAK_NSUB * 8 * 2 * 512);
      } finally {
        k.destroy();
      }
    });
  }
});

describe('measuredFmaPeak', () => {
  it("gives the fma chains' GFLOP/s and leaves no buffer behind", async () => {
    const before = ctx.memoryReport();
    const gflops = await measuredFmaPeak(ctx, 2, 2);
    expect(gflops).toBeGreaterThan(0);
    expect(Number.isFinite(gflops)).toBe(true);
    const after = ctx.memoryReport();
    expect([after.total, after.buffers]).toEqual([before.total, before.buffers]);
  });
});

// Lavapipe cannot run the subgroup-matrix kernels; Dawn's null backend validates their WGSL.
describe('peak bench subgroup-matrix kernels on the null backend', () => {
  it('pass WGSL validation in 16 x 16 x 16 fragments, both entry points', async () => {
    const nul = await GpuContext.create({ backend: 'null', tuneMatmul: false });
    try {
      const errors: string[] = [];
      for (const entry of ['regs', 'staged']) {
        nul.device.pushErrorScope('validation');
        nul.kernels.pipeline('peak-mma', entry, { SG: 32 }, { FM: 16, FN: 16, FK: 16, NSUB: PEAK_NSUB, NS: PEAK_SETS, PAD: 8 });
        const error = await nul.device.popErrorScope();
        if (error) errors.push(`${entry}: ${error.message}`);
      }
      expect(errors).toEqual([]);
    } finally {
      nul.destroy();
    }
  });
});
