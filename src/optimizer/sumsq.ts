/**
 * Sum of squares of float32 (or bf16, fp16) ranges on the GPU (shaders/sumsq.wgsl), for grad-norm clipping: up to
 * WORKGROUPS workgroups per window (fewer for short windows: each invocation then sums at least
 * MIN_PER_INVOCATION values) write partial sums that the host adds in float64. A fixed 256 per
 * window cost the distributed optimizer 45 ms a step on lavapipe for 9 small buckets.
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { UniformSlots } from '../gpu/kernels.js';
import { alignDown, windowsFor } from '../gpu/grid.js';
import { BYTES } from '../ddp/layout.js';
import { SHADER_DTYPE, type StateDtype, type StateOperand } from './adam.js';

const WORKGROUPS = 256;
const WG = 256;
const MIN_PER_INVOCATION = 16;

export class SumOfSquares {
  private readonly partials: DeviceBuffer;
  private readonly groups: { group: GPUBindGroup; workgroups: number; pipeline: GPUComputePipeline }[] = [];
  private readonly uniforms: UniformSlots;

  /** Partials a window has: its sums, then with `countZeros` its zero counts. */
  private readonly perWindow: number;

  /** With `countZeros`, each run also counts the values that are exactly zero (--log-num-zeros-in-grad). */
  constructor(
    private readonly ctx: GpuContext,
    ranges: { operand: StateOperand; length: number }[],
    private readonly countZeros = false,
  ) {
    const zeros = { ZEROS: countZeros ? 1 : 0, NW: WORKGROUPS };
    this.perWindow = (countZeros ? 2 : 1) * WORKGROUPS;
    // The 16-bit entries only for ranges that hold them: each pipeline is about 6 ms of a process's start on lavapipe.
    const pipelineOf = (dtype: StateDtype): GPUComputePipeline =>
      dtype === 'float32'
        ? ctx.kernels.pipeline('sumsq', 'sumsq', { WG, ...zeros })
        : ctx.kernels.pipeline('sumsq', 'sumsq_half', { WG, DTYPE: SHADER_DTYPE[dtype], ...zeros });
    const align = ctx.limits.minStorageBufferOffsetAlignment;
    // Bindings start at the aligned byte at or below the data; the shader adds the shift.
    const windows = ranges.flatMap(({ operand, length }) => {
      const offset = operand.offset ?? 0;
      const dtype = operand.dtype ?? 'float32';
      const bytes = BYTES[dtype];
      return windowsFor(length, bytes, ctx.limits.maxStorageBufferBindingSize - align, align)
        .filter((w) => w.count > 0)
        .map((w) => ({ buffer: operand.buffer, count: w.count, dtype, bytes, ...alignDown((offset + w.start) * bytes, align) }));
    });
    this.partials = ctx.createBuffer({
      label: 'sumsq.partials',
      size: Math.max(1, windows.length) * this.perWindow * 4,
      usage: storageUsage(),
      category: 'other',
    });
    this.uniforms = new UniformSlots(ctx, pipelineOf('float32'), Math.max(1, windows.length), 'sumsq.uniforms');
    windows.forEach((w, i) => {
      this.uniforms.set(i, { n: w.count, shift: w.shift / w.bytes });
      // Partials of workgroups not dispatched stay zero (buffers start zeroed).
      const workgroups = Math.min(WORKGROUPS, Math.ceil(w.count / (WG * MIN_PER_INVOCATION)));
      const pipeline = pipelineOf(w.dtype);
      // 16-bit data is bound in whole words.
      const size = Math.ceil((w.shift + w.count * w.bytes) / 4) * 4;
      const group = ctx.kernels.bindGroup(
        pipeline,
        {
          [w.dtype === 'float32' ? 'values' : 'words']: { buffer: w.buffer, offset: w.start, size },
          partials: { buffer: this.partials, offset: i * this.perWindow * 4, size: this.perWindow * 4 },
        },
        this.uniforms.binding(i),
      );
      this.groups.push({ group, workgroups, pipeline });
    });
    this.uniforms.upload();
  }

  /** The sum of squares of every range, in float64, and with `countZeros` how many values are zero (else null). */
  async run(): Promise<{ sumsq: number; zeros: number | null }> {
    if (this.groups.length === 0) return { sumsq: 0, zeros: this.countZeros ? 0 : null };
    const encoder = this.ctx.device.createCommandEncoder({ label: 'sumsq' });
    const pass = encoder.beginComputePass({ label: 'sumsq' });
    for (const { group, workgroups, pipeline } of this.groups) this.ctx.kernels.dispatchInPass(pass, pipeline, [group], workgroups);
    pass.end();
    this.ctx.submit([encoder.finish()]);
    const partials = await this.ctx.transfers.readFloat32(this.partials, 0, this.groups.length * this.perWindow);
    let sumsq = 0;
    let zeros = 0;
    partials.forEach((p, i) => {
      if (i % this.perWindow < WORKGROUPS) sumsq += p;
      else zeros += p;
    });
    return { sumsq, zeros: this.countZeros ? zeros : null };
  }

  destroy(): void {
    this.partials.destroy();
    this.uniforms.destroy();
  }
}
