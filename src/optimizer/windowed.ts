/**
 * What the optimizers' elementwise kernels share (Adam, SGD, Lion): operands at any element offset
 * of their buffers, any length, split into windows no larger than one storage binding; per window
 * one dispatch of a vec4 entry point, and one scalar entry point for the last (length mod 4)
 * elements. Each binding starts at the aligned byte at or below its data, and the shader adds the
 * shift (in elements) from there to the data.
 */
import { BYTES, type ParamDtype } from '../ddp/layout.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { GpuError } from '../gpu/errors.js';
import { alignDown, windowsFor, type Window } from '../gpu/grid.js';
import type { UniformValues } from '../gpu/bindings.js';
import { UniformSlots } from '../gpu/kernels.js';

/** A float32 array on the GPU: a buffer and the element where the array starts. */
export interface Float32Operand {
  buffer: DeviceBuffer;
  /** First element (default 0). Its byte offset must meet the device's storage offset alignment. */
  offset?: number;
}

/** How the optimizer stores a main param or a moment: the param dtypes (bytes in the layout's `BYTES`). */
export type StateDtype = ParamDtype;

/** An array the optimizer keeps: fp32 unless `dtype` says otherwise (16-bit: two elements a word). */
export interface StateOperand extends Float32Operand {
  dtype?: StateDtype;
}

export interface WindowedKernelOptions {
  /** Invocations per workgroup (default 64). */
  workgroupSize?: number;
  /** vec4s per invocation (default 16). */
  itemsPerThread?: number;
  /** Largest binding in bytes (default and maximum: the device's maxStorageBufferBindingSize). */
  maxBindingBytes?: number;
}

/** One operand of a windowed kernel: its place, and the shader variables it binds as. */
export interface WindowedOperand {
  /** For messages: 'param', 'grad', … */
  name: string;
  operand: StateOperand;
  /** The variable in the vec4 entry point and in the tail entry point. */
  variables: { vec4: string; tail: string };
  /** The uniform that holds the elements from its binding's aligned start to its data ('shift_p'). */
  shift: string;
}

/** A kernel's two entry points, already made with their override constants. */
export interface WindowedPipelines {
  vec4: GPUComputePipeline;
  tail: GPUComputePipeline;
}

export class WindowedKernel {
  readonly windows: Window[];
  /** Per operand: elements from its aligned binding start to its data. */
  private readonly shifts: number[];
  /** The same as the uniforms that hold them. */
  private readonly shiftUniforms: UniformValues;
  private readonly uniforms: UniformSlots;
  private readonly vec4Groups: (GPUBindGroup | null)[];
  private readonly tailGroup: GPUBindGroup | null;
  private readonly vec4sPerWorkgroup: number;

  /**
   * `what` names the kernel in errors and labels; `pipelines` makes the entry points once the layout
   * is known. With 16-bit operands a window's start is aligned in their bytes too.
   */
  constructor(
    private readonly ctx: GpuContext,
    private readonly what: string,
    operands: readonly WindowedOperand[],
    readonly length: number,
    private readonly pipelines: WindowedPipelines,
    options: WindowedKernelOptions = {},
  ) {
    const limits = ctx.limits;
    const align = limits.minStorageBufferOffsetAlignment;
    const bytes = operands.map((o) => BYTES[o.operand.dtype ?? 'float32']);
    // 16-bit operands are bound as words: a binding's size rounds up to a whole word.
    const wordBytes = (elements: number, k: number) => Math.ceil((elements * bytes[k]!) / 4) * 4;
    for (const [k, { name, operand }] of operands.entries()) {
      const { buffer, offset = 0 } = operand;
      // vec4 loads need the data itself 16-byte aligned (8 bytes for 16-bit data).
      if (offset % 4 !== 0) throw new GpuError(`${what} operand '${name}': element offset ${offset} is not a multiple of 4 (vec4 loads)`);
      if (wordBytes(offset + length, k) > buffer.size) {
        throw new GpuError(
          `${what} operand '${name}': ${length} elements at offset ${offset} overflow buffer '${buffer.label}' of ${buffer.size} B`,
        );
      }
    }
    const packed = bytes.some((b) => b !== 4);
    // Leave room in each binding for the shift from the aligned start to the data.
    const maxBinding = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize) - align;
    this.windows = windowsFor(length, 4, maxBinding, packed ? 2 * align : align);
    this.shifts = operands.map((o, k) => alignDown((o.operand.offset ?? 0) * bytes[k]!, align).shift / bytes[k]!);
    this.shiftUniforms = Object.fromEntries(operands.map((o, k) => [o.shift, this.shifts[k]!]));
    this.vec4sPerWorkgroup = (options.workgroupSize ?? 64) * (options.itemsPerThread ?? 16);
    this.uniforms = new UniformSlots(ctx, pipelines.vec4, this.windows.length, `${what}.uniforms`);
    const bindGroup = (pipeline: GPUComputePipeline, tail: boolean, w: number, window: Window, elements: number) =>
      ctx.kernels.bindGroup(
        pipeline,
        Object.fromEntries(
          operands.map(({ operand, variables }, k) => [
            tail ? variables.tail : variables.vec4,
            {
              buffer: operand.buffer,
              offset: ((operand.offset ?? 0) + window.start - this.shifts[k]!) * bytes[k]!,
              size: wordBytes(elements + this.shifts[k]!, k),
            },
          ]),
        ),
        this.uniforms.binding(w),
      );
    this.vec4Groups = this.windows.map((window, w) => {
      const whole = window.count - (window.count % 4);
      return whole === 0 ? null : bindGroup(pipelines.vec4, false, w, window, whole);
    });
    const last = this.windows.length - 1;
    const lastWindow = this.windows[last]!;
    this.tailGroup = lastWindow.count % 4 === 0 ? null : bindGroup(pipelines.tail, true, last, lastWindow, lastWindow.count);
  }

  /**
   * Queue the uniforms of every window (`values` are the step's, the same for all; the window's
   * counts and the operands' shifts are added) and record the kernel into `encoder` as one compute
   * pass. Submit this encoder before encoding the next step.
   */
  encode(encoder: GPUCommandEncoder, values: UniformValues, timestampWrites?: GPUComputePassTimestampWrites): void {
    for (const [w, window] of this.windows.entries()) {
      this.uniforms.set(w, {
        n4: Math.floor(window.count / 4),
        tail_start: window.count - (window.count % 4),
        tail_count: window.count % 4,
        ...values,
        ...this.shiftUniforms,
      });
    }
    this.uniforms.upload();
    const label = this.what.toLowerCase();
    const pass = encoder.beginComputePass(timestampWrites ? { label, timestampWrites } : { label });
    this.windows.forEach((window, w) => {
      const group = this.vec4Groups[w];
      if (group) {
        const n4 = Math.floor(window.count / 4);
        this.ctx.kernels.dispatchInPass(pass, this.pipelines.vec4, [group], Math.ceil(n4 / this.vec4sPerWorkgroup));
      }
    });
    if (this.tailGroup) this.ctx.kernels.dispatchInPass(pass, this.pipelines.tail, [this.tailGroup], 1);
    pass.end();
  }

  destroy(): void {
    this.uniforms.destroy();
  }
}
