import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fmaExpected, mmaInputs, PEAK_NSUB, PEAK_SETS, PeakKernel, type PeakKind, peakBench } from '../../bench/peak.js';
import { FlagError } from '../../src/cli/flags.js';
import { GpuContext } from '../../src/gpu/context.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

// The peak bench divides FLOPs by time and keeps a row only when every kept result is exact: the
// kernels must do the arithmetic they are credited with, and the check must see when they do not.
describe('peak bench kernels', () => {
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

describe('peak bench', () => {
  const flags = { durations: ['0.2', '1'], workgroups: 4, runs: 2, warmup: 0, 'no-torch': true, product: 64 };

  it("times the fma chains at each length, checked, and webtron's matmul as a fraction of the best", async () => {
    const rows = await peakBench.run({ gpu: async () => ctx }, flags);
    const fma = rows.filter((r) => r.kernel === 'fma-f32');
    expect(fma.map((r) => r.target_ms)).toEqual([0.2, 1]);
    expect(rows.filter((r) => r.kernel === 'fma-f32-staged').map((r) => r.target_ms)).toEqual([0.2, 1]);
    for (const r of rows.filter((r) => r.bench === 'peak')) {
      const flops = r.kernel === 'fma-f32' ? 64 : 32;
      expect(r.gflops).toBeCloseTo(((r.workgroups as number) * 256 * flops * (r.iters as number)) / (r.ms as number) / 1e6, 6);
      expect(r.wall_gflops as number).toBeGreaterThan(0);
    }
    const [matmul, ...rest] = rows.filter((r) => r.bench === 'matmul');
    expect(rest).toEqual([]);
    expect(matmul).toMatchObject({ shape: '64³', dtype: 'float32', peak: 'fma-f32' });
    const best = Math.max(...fma.map((r) => r.gflops as number));
    expect(matmul!.fraction_of_peak).toBeCloseTo((matmul!.gpu_timestamp_gflops as number) / best, 2);
  });

  it('refuses a dispatch length that is not a positive number of milliseconds, and a negative count', async () => {
    await expect(peakBench.run({ gpu: async () => ctx }, { ...flags, durations: ['5', 'soon'] })).rejects.toThrow(FlagError);
    await expect(peakBench.run({ gpu: async () => ctx }, { ...flags, product: -3 })).rejects.toThrow(/--product: -3 is negative/);
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
