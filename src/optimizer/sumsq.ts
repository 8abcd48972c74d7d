/**
 * Sum of squares of float32 ranges on the GPU (shaders/sumsq.wgsl), for grad-norm clipping: a
 * fixed number of workgroups per window writes partial sums that the host adds in float64.
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { alignDown, windowsFor } from '../gpu/grid.js';
import type { Float32Operand } from './adam.js';

const WORKGROUPS = 256;
const WG = 256;

export class SumOfSquares {
  private readonly pipeline: GPUComputePipeline;
  private readonly partials: DeviceBuffer;
  private readonly groups: GPUBindGroup[] = [];
  private readonly uniforms: DeviceBuffer;

  constructor(
    private readonly ctx: GpuContext,
    ranges: { operand: Float32Operand; length: number }[],
  ) {
    this.pipeline = ctx.kernels.pipeline('sumsq', 'sumsq', { WG });
    const align = ctx.limits.minStorageBufferOffsetAlignment;
    // Bindings start at the aligned byte at or below the data; the shader adds the shift.
    const windows = ranges.flatMap(({ operand, length }) => {
      const offset = operand.offset ?? 0;
      return windowsFor(length, 4, ctx.limits.maxStorageBufferBindingSize - align, align)
        .filter((w) => w.count > 0)
        .map((w) => ({ buffer: operand.buffer, count: w.count, ...alignDown((offset + w.start) * 4, align) }));
    });
    const slot = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.partials = ctx.createBuffer({ label: 'sumsq.partials', size: Math.max(1, windows.length) * WORKGROUPS * 4, usage: storageUsage(), category: 'other' });
    this.uniforms = ctx.createBuffer({ label: 'sumsq.uniforms', size: Math.max(1, windows.length) * slot, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, category: 'other' });
    const data = new Uint32Array((Math.max(1, windows.length) * slot) / 4);
    windows.forEach((w, i) => {
      data[(i * slot) / 4] = w.count;
      data[(i * slot) / 4 + 1] = w.shift / 4;
      this.groups.push(
        ctx.kernels.bindGroup(this.pipeline, [
          { buffer: this.uniforms, offset: i * slot, size: 8 },
          { buffer: w.buffer, offset: w.start, size: w.shift + w.count * 4 },
          { buffer: this.partials, offset: i * WORKGROUPS * 4, size: WORKGROUPS * 4 },
        ]),
      );
    });
    ctx.device.queue.writeBuffer(this.uniforms.gpu, 0, data);
  }

  /** The sum of squares of every range, in float64. */
  async run(): Promise<number> {
    if (this.groups.length === 0) return 0;
    const encoder = this.ctx.device.createCommandEncoder({ label: 'sumsq' });
    const pass = encoder.beginComputePass({ label: 'sumsq' });
    for (const group of this.groups) this.ctx.kernels.dispatchInPass(pass, this.pipeline, [group], WORKGROUPS);
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
