/**
 * fp16 grads -> fp32 main grads divided by the loss scale, with an inf/NaN check
 * (shaders/unscale.wgsl), over ranges of the grad buffer.
 */
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { GpuError } from '../gpu/errors.js';
import { windowsFor } from '../gpu/grid.js';

const WG = 256;

export interface UnscaleRange {
  /** fp16 grads: buffer and first element. */
  grads: { buffer: DeviceBuffer; offset: number };
  /** fp32 main grads: buffer and first element. */
  main: { buffer: DeviceBuffer; offset: number };
  length: number;
}

export class Unscale {
  private readonly pipeline: GPUComputePipeline;
  private readonly groups: { group: GPUBindGroup; pairs: number }[] = [];
  private readonly uniforms: DeviceBuffer;
  private readonly found: DeviceBuffer;
  private readonly slot: number;

  constructor(
    private readonly ctx: GpuContext,
    ranges: UnscaleRange[],
  ) {
    this.pipeline = ctx.kernels.pipeline('unscale', 'unscale', { WG });
    const align = ctx.limits.minStorageBufferOffsetAlignment;
    const windows = ranges.flatMap((r) => {
      if (r.length % 2 !== 0 || r.grads.offset % 2 !== 0) throw new GpuError(`unscale: ranges must start at even elements and have even lengths (got ${r.length} at ${r.grads.offset})`);
      if ((r.grads.offset * 2) % align !== 0 || (r.main.offset * 4) % align !== 0) throw new GpuError(`unscale: offsets ${r.grads.offset} / ${r.main.offset} do not meet the storage offset alignment of ${align} B`);
      return windowsFor(r.length, 4, ctx.limits.maxStorageBufferBindingSize, align * 2)
        .filter((w) => w.count > 0)
        .map((w) => ({ r, start: w.start, count: w.count }));
    });
    this.slot = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.uniforms = ctx.createBuffer({ label: 'unscale.uniforms', size: Math.max(1, windows.length) * this.slot, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, category: 'other' });
    this.found = ctx.createBuffer({ label: 'unscale.found_inf', size: 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, category: 'other' });
    windows.forEach(({ r, start, count }, i) => {
      this.groups.push({
        pairs: count / 2,
        group: ctx.kernels.bindGroup(this.pipeline, [
          { buffer: this.uniforms, offset: i * this.slot, size: 8 },
          { buffer: r.grads.buffer, offset: (r.grads.offset + start) * 2, size: count * 2 },
          { buffer: r.main.buffer, offset: (r.main.offset + start) * 4, size: count * 4 },
          this.found,
        ]),
      });
    });
  }

  /** Unscale every range by 1/`scale`; true when any grad is inf or NaN. */
  async run(scale: number): Promise<boolean> {
    const data = new ArrayBuffer(Math.max(1, this.groups.length) * this.slot);
    this.groups.forEach((g, i) => {
      new Uint32Array(data, i * this.slot, 1)[0] = g.pairs;
      new Float32Array(data, i * this.slot + 4, 1)[0] = 1 / scale;
    });
    this.ctx.device.queue.writeBuffer(this.uniforms.gpu, 0, data);
    const encoder = this.ctx.device.createCommandEncoder({ label: 'unscale' });
    encoder.clearBuffer(this.found.gpu);
    const pass = encoder.beginComputePass();
    for (const g of this.groups) this.ctx.kernels.dispatchInPass(pass, this.pipeline, [g.group], Math.ceil(g.pairs / WG));
    pass.end();
    this.ctx.submit([encoder.finish()]);
    const flag = await this.ctx.transfers.readback(this.found);
    return new Uint32Array(flag.buffer, flag.byteOffset, 1)[0] !== 0;
  }

  destroy(): void {
    this.uniforms.destroy();
    this.found.destroy();
  }
}
