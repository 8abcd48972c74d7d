/**
 * Host side of the WGSL SGD and Lion kernels (shaders/momentum.wgsl): fp32 params and state, fp32
 * or bf16 grads; any length, in windows no larger than one storage binding, vec4s with a scalar tail.
 */
import type { GpuContext } from '../gpu/context.js';
import { GpuError } from '../gpu/errors.js';
import { type LionHyperParams, momentumScalars, type SgdHyperParams } from './momentum-math.js';
import { type StateOperand, WindowedKernel, type WindowedKernelOptions, type WindowedOperand } from './windowed.js';

export interface MomentumOperands {
  param: StateOperand;
  /** fp32, or bf16 (--grad-reduce-in-bf16). */
  grad: StateOperand;
  /** SGD's momentum buffer or Lion's exp_avg; null for SGD at momentum 0. */
  state: StateOperand | null;
  /** Elements to update. */
  length: number;
}

export class MomentumKernel {
  private readonly kernel: WindowedKernel;

  constructor(
    private readonly ctx: GpuContext,
    readonly optimizer: 'sgd' | 'lion',
    readonly operands: MomentumOperands,
    options: WindowedKernelOptions = {},
  ) {
    const gradDtype = operands.grad.dtype ?? 'float32';
    if (gradDtype === 'float16')
      throw new GpuError(`${optimizer}: fp16 grads are unscaled into fp32 main grads first; the kernel reads fp32 or bf16 grads`);
    for (const [name, o] of [['param', operands.param] as const, ['state', operands.state] as const]) {
      if (o && (o.dtype ?? 'float32') !== 'float32') throw new GpuError(`${optimizer}: the ${name} operand must be fp32, got ${o.dtype}`);
    }
    if (optimizer === 'lion' && operands.state === null) throw new GpuError('Lion: the exp_avg operand is missing: Lion keeps one moment');
    const plain = operands.state === null;
    const constants = { ALGO: optimizer === 'lion' ? 1 : 0, BF16_GRADS: gradDtype === 'bfloat16' ? 1 : 0 };
    const list: WindowedOperand[] = [
      { name: 'param', operand: operands.param, variables: { vec4: 'param4', tail: 'param1' }, shift: 'shift_p' },
      // bf16 grads are words of two: the binding is in their bytes, the shader halves the index.
      { name: 'grad', operand: operands.grad, variables: { vec4: 'grad', tail: 'grad' }, shift: 'shift_g' },
      ...(plain ? [] : [{ name: 'state', operand: operands.state!, variables: { vec4: 'state4', tail: 'state1' }, shift: 'shift_m' }]),
    ];
    const wg = options.workgroupSize ?? 64;
    const items = options.itemsPerThread ?? 16;
    const entry = plain ? 'plain' : 'step';
    this.kernel = new WindowedKernel(
      ctx,
      optimizer === 'sgd' ? 'SGD' : 'Lion',
      list,
      operands.length,
      {
        vec4: ctx.kernels.pipeline('momentum', `${entry}_vec4`, { WG: wg, ITEMS: items, ...constants }),
        tail: ctx.kernels.pipeline('momentum', `${entry}_tail`, constants),
      },
      options,
    );
  }

  get windows() {
    return this.kernel.windows;
  }

  /**
   * Queue this step's scalars and record the kernel into `encoder` as one compute pass (submit it
   * before the next step's). Grads are multiplied by `gradScale` first: the clipping coefficient,
   * negated to ascend.
   */
  encode(
    encoder: GPUCommandEncoder,
    hyper: SgdHyperParams | LionHyperParams,
    timestampWrites?: GPUComputePassTimestampWrites,
    gradScale = 1,
  ): void {
    const s = momentumScalars(this.optimizer, hyper);
    const values = {
      lr: s.lr,
      beta1: s.beta1,
      one_minus_beta1: s.oneMinusBeta1,
      beta2: s.beta2,
      one_minus_beta2: s.oneMinusBeta2,
      weight_decay: s.l2,
      decay_factor: s.decayFactor,
      grad_scale: gradScale,
    };
    this.kernel.encode(encoder, values, timestampWrites);
  }

  /** Encode and submit one step, grads multiplied by `gradScale` first (the clipping coefficient). */
  step(hyper: SgdHyperParams | LionHyperParams, gradScale = 1): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: `${this.optimizer}.step` });
    this.encode(encoder, hyper, undefined, gradScale);
    this.ctx.submit([encoder.finish()]);
  }

  destroy(): void {
    this.kernel.destroy();
  }
}
