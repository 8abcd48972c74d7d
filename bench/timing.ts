/**
 * GPU timing for benchmarks: GPU timestamps when the device has them (written by empty compute
 * passes that bracket the measured commands, so kernels and copies are timed the same way), else
 * wall clock around a queue drain. Reports the median of the runs after warm-up.
 */
import type { GpuContext } from '../src/gpu/context.js';
import { wallClockMs } from '../src/gpu/timer.js';

export interface TimingOptions {
  warmup: number;
  runs: number;
}

export interface Timing {
  /** Median milliseconds per run. */
  ms: number;
  /** Every run's milliseconds, in order. */
  samples: number[];
  /** 'timestamps' or 'wall-clock'. */
  method: 'timestamps' | 'wall-clock';
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Wall-clock milliseconds of untimed runs before any timed one, however short the workloads: a GPU
 * at idle clocks ramps up meanwhile (an H200 idles at 345 MHz of its 1980, and a count of warm-up
 * runs of a 1 ms product left it there).
 */
const WARM_MS = 300;

/** Run the workloads round-robin, untimed, until WARM_MS have passed (at most 1,000 rounds). */
async function warmUp(ctx: GpuContext, workloads: ((encoder: GPUCommandEncoder, run: number) => void)[]): Promise<void> {
  const t0 = performance.now();
  for (let round = 0; round < 1000 && performance.now() - t0 < WARM_MS; round++) {
    for (const encode of workloads) {
      const encoder = ctx.device.createCommandEncoder();
      encode(encoder, 0);
      ctx.submit([encoder.finish()]);
    }
    await ctx.sync();
  }
}

/**
 * Time several workloads, interleaved run by run (a, b, a, b, …) so that each sees the same
 * machine conditions: on a shared or throttling machine, timing one after the other would credit
 * one of them with a quiet period. `encode` is called once per run with a fresh encoder; `run`
 * counts from 0 including warm-up. Before any run, about WARM_MS of untimed ones (as run 0).
 * Returns one Timing per workload.
 */
export async function timeGpuInterleaved(
  ctx: GpuContext,
  workloads: ((encoder: GPUCommandEncoder, run: number) => void)[],
  options: TimingOptions,
): Promise<Timing[]> {
  const total = options.warmup + options.runs;
  const samples = workloads.map((): number[] => []);
  await warmUp(ctx, workloads);
  if (!ctx.hasTimestamps) {
    for (let run = 0; run < total; run++) {
      for (const [w, encode] of workloads.entries()) {
        const ms = await wallClockMs(ctx, (encoder) => encode(encoder, run));
        if (run >= options.warmup) samples[w]!.push(ms);
      }
    }
    return samples.map((s) => ({ ms: median(s), samples: s, method: 'wall-clock' as const }));
  }
  const count = 2 * total * workloads.length;
  const querySet = ctx.device.createQuerySet({ type: 'timestamp', count });
  const resolve = ctx.createBuffer({
    label: 'timestamps',
    size: 8 * count,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    category: 'staging',
  });
  try {
    let slot = 0;
    for (let run = 0; run < total; run++) {
      for (const encode of workloads) {
        const encoder = ctx.device.createCommandEncoder();
        encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: slot } }).end();
        encode(encoder, run);
        encoder.beginComputePass({ timestampWrites: { querySet, endOfPassWriteIndex: slot + 1 } }).end();
        ctx.submit([encoder.finish()]);
        await ctx.sync();
        slot += 2;
      }
    }
    const encoder = ctx.device.createCommandEncoder();
    encoder.resolveQuerySet(querySet, 0, count, resolve.gpu, 0);
    ctx.submit([encoder.finish()]);
    const bytes = await ctx.transfers.readback(resolve);
    const ns = new BigUint64Array(bytes.buffer, bytes.byteOffset, count);
    slot = 0;
    for (let run = 0; run < total; run++) {
      for (let w = 0; w < workloads.length; w++, slot += 2) {
        if (run >= options.warmup) samples[w]!.push(Number(ns[slot + 1]! - ns[slot]!) / 1e6);
      }
    }
    return samples.map((s) => ({ ms: median(s), samples: s, method: 'timestamps' as const }));
  } finally {
    querySet.destroy();
    resolve.destroy();
  }
}

/** Time one workload (see `timeGpuInterleaved`). */
export async function timeGpu(
  ctx: GpuContext,
  encode: (encoder: GPUCommandEncoder, run: number) => void,
  options: TimingOptions,
): Promise<Timing> {
  const [timing] = await timeGpuInterleaved(ctx, [encode], options);
  return timing!;
}
