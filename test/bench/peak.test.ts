import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peakBench } from '../../bench/peak.js';
import { FlagError } from '../../src/cli/flags.js';
import { GpuContext } from '../../src/gpu/context.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

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
