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

  constructor(
    private readonly ctx: GpuContext,
    ranges: { operand: StateOperand; length: number }[],
  ) {
    // The 16-bit entries only for ranges that hold them: each pipeline is about 6 ms of a process's start on lavapipe.
    const pipelineOf = (dtype: StateDtype): GPUComputePipeline =>
      dtype === 'float32'
        ? ctx.kernels.pipeline('sumsq', 'sumsq', { WG })
        : ctx.kernels.pipeline('sumsq', 'sumsq_half', { WG, DTYPE: SHADER_DTYPE[dtype] });
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
      size: Math.max(1, windows.length) * WORKGROUPS * 4,
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
          partials: { buffer: this.partials, offset: i * WORKGROUPS * 4, size: WORKGROUPS * 4 },
        },
        this.uniforms.binding(i),
      );
      this.groups.push({ group, workgroups, pipeline });
    });
    this.uniforms.upload();
  }

  /** The sum of squares of every range, in float64. */
  async run(): Promise<number> {
    if (this.groups.length === 0) return 0;
    const encoder = this.ctx.device.createCommandEncoder({ label: 'sumsq' });
    const pass = encoder.beginComputePass({ label: 'sumsq' });
    for (const { group, workgroups, pipeline } of this.groups) this.ctx.kernels.dispatchInPass(pass, pipeline, [group], workgroups);
    pass.end();
    this.ctx.submit([encoder.finish()]);
    const partials = await this.ctx.transfers.readFloat32(this.partials, 0, this.groups.length * WORKGROUPS);
    let sum = 0;
    for (const p of partials) sum += p;
    return sum;
  }

  destroy(): void {
    this.partials.destroy();
    this.uniforms.destroy();
  }
}
