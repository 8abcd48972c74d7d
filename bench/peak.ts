/**
 * `npm run bench -- peak`: the arithmetic peak this adapter reaches through WGSL, with no global
 * memory traffic, so that every kernel's figure has a ceiling measured the same way beside it (the
 * kernels are src/gpu/peak.ts's):
 * - `fma-f32`: vec4 fma chains on registers (shaders/peak-fma.wgsl): the ceiling of fp32 kernels;
 *   `fma-f32-staged`: the tiled matmul's inner loop, its operands read from workgroup memory;
 * - `mma-f16-regs` and `mma-f16-staged`, where the adapter offers f16 subgroup matrices
 *   (shaders/peak-mma.wgsl): the tensor cores' multiply-accumulate rate alone, and with the
 *   fragments loaded from workgroup memory at every step as the tensor-core matmul loads them.
 * Each kernel runs at several dispatch lengths (`--durations`), timed by GPU timestamps and by the
 * wall clock, since a rate that falls as a dispatch grows says the clock drops under load or the
 * timestamps miss time, not a kernel. Every length's result is checked exactly before its row is kept.
 */
import { FlagError } from '../src/cli/flags.js';
import type { GpuContext } from '../src/gpu/context.js';
import { MAX_ITERS, PeakKernel, type PeakKind } from '../src/gpu/peak.js';
import { wallClockMs } from '../src/gpu/timer.js';
import { knownPeaks } from '../src/train/throughput.js';
import type { Bench } from './bench.js';
import { cpuGemmLimit, fractionOf } from './limits.js';
import { productRows } from './nn.js';
import { type Row, progress } from './report.js';
import { median, timeGpu, timeGpuInterleaved } from './timing.js';

/** Rows of `kind` at each of `durations` (ms, reached by scaling a first timing), checked. */
async function peakRows(
  ctx: GpuContext,
  kind: PeakKind,
  workgroups: number,
  durations: number[],
  timing: { warmup: number; runs: number },
): Promise<Row[]> {
  const kernel = new PeakKernel(ctx, kind, workgroups, 2, durations.length + 1);
  try {
    // Milliseconds per iteration, from a dispatch long enough that its fixed costs do not count:
    // 16 iterations first, then as many as the longest length (at most 10 ms) takes at that rate.
    const perIter = async (iters: number): Promise<number> => {
      kernel.setIters(0, iters);
      return (await timeGpu(ctx, (e) => kernel.encode(e, 0), { warmup: 1, runs: 3 })).ms / iters;
    };
    const rough = await perIter(16);
    const msPerIter = await perIter(Math.max(16, Math.min(MAX_ITERS, Math.round(Math.min(Math.max(...durations), 10) / rough))));
    for (const [i, ms] of durations.entries())
      kernel.setIters(i + 1, Math.max(1, Math.min(MAX_ITERS, Math.round(ms / Math.max(msPerIter, 1e-9)))));
    const slots = durations.map((_, i) => i + 1);
    const timed = await timeGpuInterleaved(
      ctx,
      slots.map((s) => (e: GPUCommandEncoder) => kernel.encode(e, s)),
      timing,
    );
    const rows: Row[] = [];
    for (const [i, slot] of slots.entries()) {
      const wrong = await kernel.check(slot);
      if (wrong) throw new Error(`peak: ${wrong}`);
      const wall = await wallMs(ctx, (e) => kernel.encode(e, slot), timing.runs);
      const gflop = kernel.flops(slot) / 1e9;
      const t = timed[i]!;
      rows.push({
        bench: 'peak',
        kernel: kind,
        target_ms: durations[i]!,
        iters: kernel.itersAt(slot),
        workgroups: kernel.workgroups,
        ms: t.ms,
        gflops: gflop / (t.ms / 1e3),
        timing: t.method,
        wall_ms: wall,
        wall_gflops: gflop / (wall / 1e3),
        ...(kernel.mma ? { fragment: `${kernel.mma.m}x${kernel.mma.n}x${kernel.mma.k}` } : {}),
        backend: ctx.backend,
        adapter: ctx.adapterName,
        dawn_toggles: ctx.found.toggles,
      });
      progress(`peak ${kind}: ${rows.at(-1)!.gflops} GFLOP/s over ${t.ms.toFixed(2)} ms`);
    }
    return rows;
  } finally {
    kernel.destroy();
  }
}

/** Median wall-clock milliseconds of one submitted dispatch, from submit to the queue's drain. */
async function wallMs(ctx: GpuContext, encode: (encoder: GPUCommandEncoder) => void, runs: number): Promise<number> {
  const samples: number[] = [];
  for (let r = 0; r < runs; r++) samples.push(await wallClockMs(ctx, encode));
  return median(samples);
}

export const peakBench: Bench = {
  name: 'peak',
  summary: 'arithmetic peak through WGSL: fp32 fma, and f16 subgroup matrices where offered, by dispatch length',
  columns: [
    'kernel',
    'target_ms',
    'iters',
    'workgroups',
    'ms',
    'gflops',
    'wall_ms',
    'wall_gflops',
    'gpu_timestamp_gflops',
    'fraction_of_peak',
    'fraction_of_limit',
  ],
  flags: {
    durations: { kind: 'list', default: ['0.5', '5', '50'], help: 'dispatch lengths to time each kernel at, ms' },
    workgroups: { kind: 'int', default: 0, help: 'workgroups per dispatch (0: 64 on a CPU driver, 8192 on a GPU)' },
    runs: { kind: 'int', default: 10, help: 'timed runs per length (median reported)' },
    warmup: { kind: 'int', default: 2, help: 'untimed runs first' },
    python: { kind: 'string', default: '/usr/bin/python3', help: "python with torch, whose GEMM is a CPU driver's limit" },
    'no-torch': { kind: 'boolean', help: "leave out torch's GEMM (a CPU driver's limit)" },
    product: { kind: 'int', default: 1024, help: "webtron's matmul of this square size beside the peaks, as a fraction of them (0: none)" },
  },
  async run(env, flags) {
    const durations = (flags.durations as string[]).map(Number);
    if (durations.some((d) => !(d > 0)))
      throw new FlagError(`--durations: '${(flags.durations as string[]).join(',')}' must be positive milliseconds, e.g. 0.5,5,50`);
    for (const name of ['workgroups', 'product'])
      if ((flags[name] as number) < 0)
        throw new FlagError(
          `--${name}: ${flags[name]} is negative; give a positive number, or 0 for ${name === 'product' ? 'none' : 'the default'}`,
        );
    const ctx = await env.gpu();
    const workgroups = (flags.workgroups as number) || (ctx.software ? 64 : 8192);
    const timing = { warmup: flags.warmup as number, runs: flags.runs as number };
    const kinds: PeakKind[] = ['fma-f32', 'fma-f32-staged'];
    if (ctx.subgroupMatrixOffered) kinds.push('mma-f16-regs', 'mma-f16-staged');
    else progress('peak: this adapter offers no f16 subgroup matrices; fp32 only');
    // Each row against its arithmetic's limit: torch's fp32 GEMM on every core for a CPU driver
    // (measured now), the vendor's peak for a known GPU.
    const cpu = ctx.software && !flags['no-torch'] ? cpuGemmLimit(flags.python as string) : null;
    const peak = ctx.software ? null : knownPeaks(ctx.adapterModel);
    const limitOf = (kind: PeakKind): { gflops: number; what: string } | null => {
      if (cpu) return { gflops: cpu.gemm_gflops, what: `torch fp32 GEMM ${cpu.gemm_size}^3, ${cpu.threads} threads, ${cpu.blas.kind}` };
      if (!peak) return null;
      return kind.startsWith('fma')
        ? { gflops: peak.fp32 * 1e3, what: `${peak.name} fp32 peak` }
        : { gflops: peak.half * 1e3, what: `${peak.name} fp16 tensor-core peak` };
    };
    const withLimit = (row: Row, gflops: number, kind: PeakKind): Row => {
      const limit = limitOf(kind);
      return {
        ...row,
        fraction_of_limit: fractionOf(gflops, limit?.gflops),
        limit: limit ? `${limit.gflops} GFLOP/s (${limit.what})` : null,
      };
    };
    const rows: Row[] = [];
    for (const kind of kinds)
      for (const row of await peakRows(ctx, kind, workgroups, durations, timing)) rows.push(withLimit(row, row.gflops as number, kind));
    // webtron's own matmul in the same run, against the peak of its arithmetic: fp32 against the
    // fma chains, fp16 weights on tensor cores against the subgroup matrices from registers.
    const size = flags.product as number;
    if (size > 0) {
      const dtypes = ctx.subgroupMatrix ? ['float32', 'float16'] : ['float32'];
      const best = (kind: PeakKind) => Math.max(...rows.filter((r) => r.kernel === kind).map((r) => r.gflops as number));
      for (const row of await productRows(ctx, null, `${size}³`, { m: size, k: size, n: size }, dtypes, timing, null)) {
        const peakKind: PeakKind = row.dtype === 'float32' ? 'fma-f32' : 'mma-f16-regs';
        const gflops = row.gpu_timestamp_gflops as number;
        // Its host-to-host figures belong to the nn bench: here the kernel's own time is the point.
        const { ms: _ms, gflops: _gflops, ...kernelRow } = row;
        rows.push(withLimit({ ...kernelRow, peak: peakKind, fraction_of_peak: fractionOf(gflops, best(peakKind)) }, gflops, peakKind));
      }
    }
    return rows;
  },
};
