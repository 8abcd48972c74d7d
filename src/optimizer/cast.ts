/**
 * Casts between fp32 main params and 16-bit (bf16 or fp16) model params on the GPU, or between fp16
 * main params and bf16 model params (shaders/cast.wgsl), in windows no larger than one binding.
 */
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { UniformSlots } from '../gpu/kernels.js';
import { GpuError } from '../gpu/errors.js';
import { alignDown, windowsFor } from '../gpu/grid.js';

const WG = 256;

/** A wide range (fp32, or the fp16 main params of bf16 params) and the 16-bit range it pairs with, element for element. */
export interface CastRange {
  /** The wide buffer and first element. */
  wide: { buffer: DeviceBuffer; offset: number };
  /** 16-bit buffer and first element. */
  narrow: { buffer: DeviceBuffer; offset: number };
  length: number;
}

/** One window of a paired range: both bindings (aligned down) and the shifts to the data. */
export interface PairedWindow {
  /** Elements (even). */
  count: number;
  wide: { buffer: DeviceBuffer; offset: number; size: number };
  narrow: { buffer: DeviceBuffer; offset: number; size: number };
  /** From the wide binding's start to the data, in element pairs (8 bytes; 4 for a 16-bit wide side). */
  wideShift: number;
  /** From the narrow binding's start to the data, in element pairs (4 bytes). */
  narrowShift: number;
}

/**
 * Windows over paired ranges that fit one binding. Bindings start at the aligned byte at or below
 * the data and the shaders add the shifts. 16-bit data is processed in pairs of elements, so ranges
 * must start at even elements and be of even length.
 */
export function pairedWindows(ctx: GpuContext, ranges: CastRange[], what: string, wideBytes: 2 | 4 = 4): PairedWindow[] {
  const align = ctx.limits.minStorageBufferOffsetAlignment;
  return ranges.flatMap((range) => {
    if (range.length % 2 !== 0 || range.wide.offset % 2 !== 0 || range.narrow.offset % 2 !== 0) {
      throw new GpuError(
        `${what}: ranges must start at even elements and have even lengths (got ${range.length} at ${range.narrow.offset})`,
      );
    }
    // Window starts on multiples of `align` in both buffers, so the shifts are the same in every window.
    return windowsFor(range.length, 4, ctx.limits.maxStorageBufferBindingSize - align, align * 2)
      .filter((w) => w.count > 0)
      .map((w) => {
        const wide = alignDown((range.wide.offset + w.start) * wideBytes, align);
        const narrow = alignDown((range.narrow.offset + w.start) * 2, align);
        return {
          count: w.count,
          wide: { buffer: range.wide.buffer, offset: wide.start, size: wide.shift + w.count * wideBytes },
          narrow: { buffer: range.narrow.buffer, offset: narrow.start, size: narrow.shift + w.count * 2 },
          wideShift: wide.shift / (2 * wideBytes),
          narrowShift: narrow.shift / 4,
        };
      });
  });
}

export class HalfCast {
  private readonly toNarrow: GPUComputePipeline;
  private readonly toWide: GPUComputePipeline;
  private readonly dispatches: { narrowGroup: GPUBindGroup; wideGroup: GPUBindGroup; pairs: number }[] = [];
  private readonly uniforms: UniformSlots;

  /**
   * `dtype`: the model params' (the narrow side). `wide`: the main params' (fp32, or fp16 for bf16
   * model params).
   */
  constructor(
    private readonly ctx: GpuContext,
    ranges: CastRange[],
    dtype: 'bfloat16' | 'float16',
    wide: 'float32' | 'float16' = 'float32',
  ) {
    const name = dtype === 'bfloat16' ? 'bf16' : 'f16';
    const wideName = wide === 'float32' ? 'f32' : 'f16';
    if (wideName === name) throw new GpuError(`16-bit cast: main params and model params are both ${dtype}; no cast is needed`);
    this.toNarrow = ctx.kernels.pipeline('cast', `${wideName}_to_${name}`, { WG });
    this.toWide = ctx.kernels.pipeline('cast', `${name}_to_${wideName}`, { WG });
    const windows = pairedWindows(ctx, ranges, '16-bit cast', wide === 'float32' ? 4 : 2);
    this.uniforms = new UniformSlots(ctx, this.toNarrow, Math.max(1, windows.length), 'cast.uniforms');
    for (const [i, w] of windows.entries()) {
      this.uniforms.set(i, { pairs: w.count / 2, shift_wide: w.wideShift, shift_narrow: w.narrowShift });
      const bindings = (pipeline: GPUComputePipeline) =>
        ctx.kernels.bindGroup(pipeline, { [wide === 'float32' ? 'wide' : 'main16']: w.wide, narrow: w.narrow }, this.uniforms.binding(i));
      this.dispatches.push({ narrowGroup: bindings(this.toNarrow), wideGroup: bindings(this.toWide), pairs: w.count / 2 });
    }
    this.uniforms.upload();
  }

  private run(toNarrow: boolean): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: toNarrow ? 'cast to 16-bit' : 'cast to fp32' });
    const pass = encoder.beginComputePass();
    for (const d of this.dispatches) {
      this.ctx.kernels.dispatchInPass(
        pass,
        toNarrow ? this.toNarrow : this.toWide,
        [toNarrow ? d.narrowGroup : d.wideGroup],
        Math.ceil(d.pairs / WG),
      );
    }
    pass.end();
    this.ctx.submit([encoder.finish()]);
  }

  /** Main params into the model params (rounded to nearest even). */
  toModel(): void {
    this.run(true);
  }

  /** Model params into the main params: exact into fp32; rounded to nearest even into fp16. */
  toMain(): void {
    this.run(false);
  }

  destroy(): void {
    this.uniforms.destroy();
  }
}
