/**
 * GPU time per label from timestamp queries: every compute pass a Runner begins while a timer is
 * attached writes the GPU's clock at its start and end, and `read()` sums the passes' durations by
 * the label that was current when each began (`webtron train --timing`: forward, backward). Passes
 * past the query set's capacity go untimed and are counted in `dropped`.
 */
import type { DeviceBuffer, GpuContext } from './context.js';
import { GpuError } from './errors.js';

/**
 * Wall-clock milliseconds of the work `encode` records, from its submit to the queue's drain, with
 * nothing else in flight.
 */
export async function wallClockMs(ctx: GpuContext, encode: (encoder: GPUCommandEncoder) => void): Promise<number> {
  const encoder = ctx.device.createCommandEncoder();
  encode(encoder);
  await ctx.sync();
  const t0 = performance.now();
  ctx.submit([encoder.finish()]);
  await ctx.sync();
  return performance.now() - t0;
}

export class GpuTimer {
  private readonly querySet: GPUQuerySet;
  private readonly resolve: DeviceBuffer;
  private labels: string[] = [];
  private dropped = 0;
  /** The label of the passes begun from now on. */
  label = 'other';

  constructor(
    private readonly ctx: GpuContext,
    readonly capacity = 1024,
  ) {
    if (!ctx.hasTimestamps) throw new GpuError(`adapter '${ctx.adapterName}' has no timestamp queries`);
    this.querySet = ctx.device.createQuerySet({ label: 'gpu-timer', type: 'timestamp', count: 2 * capacity });
    this.resolve = ctx.createBuffer({
      label: 'gpu-timer.resolve',
      size: 16 * capacity,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      category: 'staging',
    });
  }

  /** The timestampWrites for the next pass, or undefined when the query set is full. */
  next(): GPUComputePassTimestampWrites | undefined {
    const i = this.labels.length;
    if (i === this.capacity) {
      this.dropped++;
      return undefined;
    }
    this.labels.push(this.label);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** GPU milliseconds by label of the passes since the last read (call once they were submitted), then start over. */
  async read(): Promise<{ ms: Record<string, number>; passes: number; dropped: number }> {
    const n = this.labels.length;
    const out = { ms: {} as Record<string, number>, passes: n, dropped: this.dropped };
    if (n > 0) {
      const encoder = this.ctx.device.createCommandEncoder({ label: 'gpu-timer' });
      encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolve.gpu, 0);
      this.ctx.submit([encoder.finish()]);
      const bytes = await this.ctx.transfers.readback(this.resolve, 0, 16 * n);
      const ns = new BigUint64Array(bytes.buffer, bytes.byteOffset, 2 * n);
      this.labels.forEach((label, i) => {
        const ms = Number(ns[2 * i + 1]! - ns[2 * i]!) / 1e6;
        out.ms[label] = (out.ms[label] ?? 0) + ms;
      });
    }
    this.labels = [];
    this.dropped = 0;
    return out;
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolve.destroy();
  }
}
