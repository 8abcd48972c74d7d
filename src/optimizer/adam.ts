/**
 * Host side of the WGSL Adam / AdamW kernels: fp32 params, grads and moments (shaders/adam.wgsl), or
 * the params and moments each stored as fp32, bf16 or fp16 (shaders/adam-packed.wgsl, Megatron's
 * precision-aware optimizer); any length, in windows no larger than one storage binding, vec4s with
 * a scalar tail.
 */
import type { GpuContext } from '../gpu/context.js';
import { GpuError } from '../gpu/errors.js';
import { adamStepScalars, checkHyperParams, type AdamHyperParams } from './adam-math.js';
import { type StateDtype, type StateOperand, WindowedKernel, type WindowedKernelOptions } from './windowed.js';

export type { Float32Operand, StateDtype, StateOperand } from './windowed.js';

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

export type AdamKernelOptions = WindowedKernelOptions;

const OPERANDS = ['param', 'grad', 'expAvg', 'expAvgSq'] as const;
const SHADER_NAMES = { param: 'param', grad: 'grad', expAvg: 'exp_avg', expAvgSq: 'exp_avg_sq' } as const;
/** The uniforms (AdamUniforms) that hold each operand's shift. */
const SHIFTS = { param: 'shift_p', grad: 'shift_g', expAvg: 'shift_m', expAvgSq: 'shift_v' } as const;

const dtypeOf = (operands: AdamOperands, name: (typeof OPERANDS)[number]): StateDtype => operands[name].dtype ?? 'float32';

export class AdamKernel {
  private readonly kernel: WindowedKernel;

  constructor(
    private readonly ctx: GpuContext,
    readonly operands: AdamOperands,
    options: AdamKernelOptions = {},
  ) {
    const wg = options.workgroupSize ?? 64;
    const items = options.itemsPerThread ?? 16;
    const packed = OPERANDS.some((name) => dtypeOf(operands, name) !== 'float32');
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
    // The shader's names of the four operands: param4, grad4, … in adam_vec4; param1, … in
    // adam_tail. The packed shader binds the stored operands as words under their plain names,
    // and bf16 grads as grad_bf16.
    const variable = (name: (typeof OPERANDS)[number], suffix: string) => {
      if (name === 'grad' && gradDtype === 'bfloat16') return 'grad_bf16';
      return packed && name !== 'grad' ? SHADER_NAMES[name] : `${SHADER_NAMES[name]}${suffix}`;
    };
    this.kernel = new WindowedKernel(
      ctx,
      'Adam',
      OPERANDS.map((name) => ({
        name,
        operand: operands[name],
        variables: { vec4: variable(name, '4'), tail: variable(name, '1') },
        shift: SHIFTS[name],
      })),
      operands.length,
      {
        vec4: ctx.kernels.pipeline(shader, `adam_vec4${entry}`, { WG: wg, ITEMS: items, ...(packed ? dtypes : {}) }),
        tail: ctx.kernels.pipeline(shader, `adam_tail${entry}`, packed ? dtypes : {}),
      },
      options,
    );
  }

  get windows() {
    return this.kernel.windows;
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
    const s = adamStepScalars(hyper, step);
    const values = {
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
    };
    this.kernel.encode(encoder, values, timestampWrites);
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

  destroy(): void {
    this.kernel.destroy();
  }
}
