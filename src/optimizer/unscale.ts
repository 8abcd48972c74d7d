/**
 * fp16 grads -> fp32 main grads divided by the loss scale, with an inf/NaN check
 * (shaders/unscale.wgsl), over ranges of the grad buffer.
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { UniformSlots } from '../gpu/kernels.js';
import { pairedWindows, type CastRange } from './cast.js';

const WG = 256;

/** fp16 grads (`narrow`) and the fp32 main grads they unscale into (`wide`). */
export type UnscaleRange = CastRange;

export class Unscale {
  private readonly pipeline: GPUComputePipeline;
  private readonly groups: { group: GPUBindGroup; pairs: number; shifts: [number, number] }[] = [];
  private readonly uniforms: UniformSlots;
  private readonly found: DeviceBuffer;

  constructor(
    private readonly ctx: GpuContext,
    ranges: UnscaleRange[],
  ) {
    this.pipeline = ctx.kernels.pipeline('unscale', 'unscale', { WG });
    const windows = pairedWindows(ctx, ranges, 'unscale');
    this.uniforms = new UniformSlots(ctx, this.pipeline, Math.max(1, windows.length), 'unscale.uniforms');
    this.found = ctx.createBuffer({ label: 'unscale.found_inf', size: 4, usage: storageUsage(), category: 'other' });
    windows.forEach((w, i) => {
      this.groups.push({
        pairs: w.count / 2,
        shifts: [w.wideShift, w.narrowShift],
        group: ctx.kernels.bindGroup(
          this.pipeline,
          { grads: w.narrow, main_grads: w.wide, found_inf: this.found },
          this.uniforms.binding(i),
        ),
      });
    });
  }

  /** Unscale every range by 1/`scale`; true when any grad is inf or NaN. */
  async run(scale: number): Promise<boolean> {
    for (const [i, g] of this.groups.entries()) {
      const [shiftMain, shiftGrads] = g.shifts;
      this.uniforms.set(i, { pairs: g.pairs, inv_scale: 1 / scale, shift_main: shiftMain, shift_grads: shiftGrads });
    }
    this.uniforms.upload();
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
