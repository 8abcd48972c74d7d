/**
 * Host side of the WGSL Adam / AdamW kernels: fp32 params, grads and moments (shaders/adam.wgsl), or
 * the params and moments each stored as fp32, bf16 or fp16 (shaders/adam-packed.wgsl, Megatron's
 * precision-aware optimizer); any length, in windows no larger than one storage binding, vec4s with
 * a scalar tail.
 */
import { BYTES, type ParamDtype } from '../ddp/layout.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { UniformSlots } from '../gpu/kernels.js';
import { GpuError } from '../gpu/errors.js';
import { alignDown, windowsFor, type Window } from '../gpu/grid.js';
import { adamStepScalars, checkHyperParams, type AdamHyperParams } from './adam-math.js';

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

export interface AdamOperands {
  param: StateOperand;
  /** fp32, or bf16 (--main-grads-dtype bf16). */
  grad: StateOperand;
  expAvg: StateOperand;
  expAvgSq: StateOperand;
  /** Elements to update. */
  length: number;
}

/** The shaders' DTYPE_* constants (shaders/half.wgsl). */
export const SHADER_DTYPE: Record<StateDtype, number> = { float32: 0, bfloat16: 1, float16: 2 };

export interface AdamKernelOptions {
  /** Invocations per workgroup (default 64). */
  workgroupSize?: number;
  /** vec4s per invocation (default 16). */
  itemsPerThread?: number;
  /** Largest binding in bytes (default and maximum: the device's maxStorageBufferBindingSize). */
  maxBindingBytes?: number;
}

const OPERANDS = ['param', 'grad', 'expAvg', 'expAvgSq'] as const;
const SHADER_NAMES = { param: 'param', grad: 'grad', expAvg: 'exp_avg', expAvgSq: 'exp_avg_sq' } as const;

const dtypeOf = (operands: AdamOperands, name: (typeof OPERANDS)[number]): StateDtype => operands[name].dtype ?? 'float32';

export class AdamKernel {
  readonly windows: Window[];
  private readonly uniforms: UniformSlots;
  private readonly vec4Pipeline: GPUComputePipeline;
  private readonly tailPipeline: GPUComputePipeline;
  private readonly vec4Groups: (GPUBindGroup | null)[];
  private readonly tailGroup: GPUBindGroup | null;
  private readonly vec4sPerWorkgroup: number;
  /** Per operand: elements from its aligned binding start to its data. */
  private readonly shifts: number[];

  constructor(
    private readonly ctx: GpuContext,
    readonly operands: AdamOperands,
    options: AdamKernelOptions = {},
  ) {
    const { length } = operands;
    const limits = ctx.limits;
    const align = limits.minStorageBufferOffsetAlignment;
    const bytes = OPERANDS.map((name) => BYTES[dtypeOf(operands, name)]);
    // 16-bit operands are bound as words: a binding's size rounds up to a whole word.
    const wordBytes = (elements: number, k: number) => Math.ceil((elements * bytes[k]!) / 4) * 4;
    for (const [k, name] of OPERANDS.entries()) {
      const { buffer, offset = 0 } = operands[name];
      // Bindings start at the aligned byte at or below the data; the shader adds the shift. vec4
      // loads need the data itself 16-byte aligned (8 bytes for 16-bit data).
      if (offset % 4 !== 0) throw new GpuError(`Adam operand '${name}': element offset ${offset} is not a multiple of 4 (vec4 loads)`);
      if (wordBytes(offset + length, k) > buffer.size) {
        throw new GpuError(
          `Adam operand '${name}': ${length} elements at offset ${offset} overflow buffer '${buffer.label}' of ${buffer.size} B`,
        );
      }
    }
    // With 16-bit operands a window's start must be aligned in their bytes too: windows of fp32
    // elements aligned to twice the alignment.
    const packed = bytes.some((b) => b !== 4);
    // Leave room in each binding for the shift from the aligned start to the data.
    const maxBinding = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize) - align;
    this.windows = windowsFor(length, 4, maxBinding, packed ? 2 * align : align);
    this.shifts = OPERANDS.map((name, k) => alignDown((operands[name].offset ?? 0) * bytes[k]!, align).shift / bytes[k]!);

    const wg = options.workgroupSize ?? 64;
    const items = options.itemsPerThread ?? 16;
    this.vec4sPerWorkgroup = wg * items;
    const dtypes = {
      P_DTYPE: SHADER_DTYPE[dtypeOf(operands, 'param')],
      M_DTYPE: SHADER_DTYPE[dtypeOf(operands, 'expAvg')],
      V_DTYPE: SHADER_DTYPE[dtypeOf(operands, 'expAvgSq')],
    };
    const shader = packed ? 'adam-packed' : 'adam';
    const gradDtype = dtypeOf(operands, 'grad');
    if (gradDtype === 'float16')
      throw new GpuError('Adam: fp16 grads are unscaled into fp32 main grads first; the kernel reads fp32 or bf16 grads');
    const entry = gradDtype === 'bfloat16' ? '_bf16_grads' : '';
    this.vec4Pipeline = ctx.kernels.pipeline(shader, `adam_vec4${entry}`, { WG: wg, ITEMS: items, ...(packed ? dtypes : {}) });
    this.tailPipeline = ctx.kernels.pipeline(shader, `adam_tail${entry}`, packed ? dtypes : {});

    this.uniforms = new UniformSlots(ctx, this.vec4Pipeline, this.windows.length, 'adam.uniforms');
    // The shader's names of the four operands: param4, grad4, … in adam_vec4; param1, … in
    // adam_tail. The packed shader binds the stored operands as words under their plain names,
    // and bf16 grads as grad_bf16.
    const variable = (name: (typeof OPERANDS)[number], suffix: string) => {
      if (name === 'grad' && gradDtype === 'bfloat16') return 'grad_bf16';
      return packed && name !== 'grad' ? SHADER_NAMES[name] : `${SHADER_NAMES[name]}${suffix}`;
    };
    const bindGroup = (pipeline: GPUComputePipeline, suffix: string, w: number, window: Window, elements: number) =>
      ctx.kernels.bindGroup(
        pipeline,
        Object.fromEntries(
          OPERANDS.map((name, k) => [
            variable(name, suffix),
            {
              buffer: operands[name].buffer,
              offset: ((operands[name].offset ?? 0) + window.start - this.shifts[k]!) * bytes[k]!,
              size: wordBytes(elements + this.shifts[k]!, k),
            },
          ]),
        ),
        this.uniforms.binding(w),
      );
    this.vec4Groups = this.windows.map((window, w) => {
      const whole = window.count - (window.count % 4);
      return whole === 0 ? null : bindGroup(this.vec4Pipeline, '4', w, window, whole);
    });
    const last = this.windows.length - 1;
    const lastWindow = this.windows[last]!;
    this.tailGroup = lastWindow.count % 4 === 0 ? null : bindGroup(this.tailPipeline, '1', last, lastWindow, lastWindow.count);
  }

  /**
   * Queue this step's scalars and record the kernel into `encoder` as one compute pass. The scalars
   * are written to the queue now, so submit this encoder before encoding the next step.
   */
  encode(
    encoder: GPUCommandEncoder,
    hyper: AdamHyperParams,
    step: number,
    timestampWrites?: GPUComputePassTimestampWrites,
    gradScale = 1,
  ): void {
    checkHyperParams(hyper);
    this.writeUniforms(hyper, step, gradScale);
    const pass = encoder.beginComputePass(timestampWrites ? { label: 'adam', timestampWrites } : { label: 'adam' });
    this.windows.forEach((window, w) => {
      const group = this.vec4Groups[w];
      if (group) {
        const n4 = Math.floor(window.count / 4);
        this.ctx.kernels.dispatchInPass(pass, this.vec4Pipeline, [group], Math.ceil(n4 / this.vec4sPerWorkgroup));
      }
    });
    if (this.tailGroup) this.ctx.kernels.dispatchInPass(pass, this.tailPipeline, [this.tailGroup], 1);
    pass.end();
  }

  /**
   * Encode and submit one step; grads are multiplied by `gradScale` first (the grad-norm clipping
   * coefficient, as torch's clip_grad_norm_ scales grads in place before the step). Call
   * `ctx.sync()` (or read back) to wait and surface errors.
   */
  step(hyper: AdamHyperParams, step: number, gradScale = 1): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: 'adam.step' });
    this.encode(encoder, hyper, step, undefined, gradScale);
    this.ctx.submit([encoder.finish()]);
  }

  private writeUniforms(hyper: AdamHyperParams, step: number, gradScale: number): void {
    const s = adamStepScalars(hyper, step);
    const [shiftP, shiftG, shiftM, shiftV] = this.shifts;
    for (const [w, window] of this.windows.entries()) {
      this.uniforms.set(w, {
        n4: Math.floor(window.count / 4),
        tail_start: window.count - (window.count % 4),
        tail_count: window.count % 4,
        decoupled: hyper.decoupled,
        step_size: s.stepSize,
        bc2_sqrt: s.bc2Sqrt,
        beta1: s.beta1,
        one_minus_beta1: s.oneMinusBeta1,
        beta2: s.beta2,
        one_minus_beta2: s.oneMinusBeta2,
        eps: s.eps,
        weight_decay: s.l2,
        decay_factor: s.decayFactor,
        grad_scale: Math.fround(gradScale) * s.gradSign,
        shift_p: shiftP!,
        shift_g: shiftG!,
        shift_m: shiftM!,
        shift_v: shiftV!,
      });
    }
    this.uniforms.upload();
  }

  destroy(): void {
    this.uniforms.destroy();
  }
}
