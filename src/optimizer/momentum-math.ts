/**
 * Megatron's --optimizer besides Adam: SGD (torch.optim.SGD: momentum, dampening 0, not Nesterov,
 * L2 weight decay) and Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms":
 * the sign of a blend of the momentum and the grad, decoupled weight decay), with their state and a
 * plain TypeScript reference of each step that mirrors the WGSL kernel (shaders/momentum.wgsl)
 * operation for operation in float32.
 */
import { ConfigError } from '../errors.js';

/** Megatron's --optimizer choices webtron runs. */
export type OptimizerName = 'adam' | 'sgd' | 'lion';

export const OPTIMIZER_NAMES: readonly OptimizerName[] = ['adam', 'sgd', 'lion'];

/** Megatron's defaults: --sgd-momentum, and --lion-beta1 and --lion-beta2. */
export const SGD_MOMENTUM = 0.9;
export const LION_BETAS: readonly [number, number] = [0.95, 0.98];

/**
 * The state an optimizer keeps per element of the params it updates, under torch's names: Adam's
 * two moments, Lion's one (`exp_avg`), SGD's momentum buffer (none at momentum 0).
 */
export type MomentKind = 'exp_avg' | 'exp_avg_sq' | 'momentum_buffer';

/** The moments `optimizer` keeps; `sgdMomentum` only matters for SGD. */
export function momentKinds(optimizer: OptimizerName, sgdMomentum = 0): MomentKind[] {
  if (optimizer === 'adam') return ['exp_avg', 'exp_avg_sq'];
  if (optimizer === 'lion') return ['exp_avg'];
  return sgdMomentum === 0 ? [] : ['momentum_buffer'];
}

export interface SgdHyperParams {
  lr: number;
  momentum: number;
  /** L2: added to the grad as weight_decay · p, as torch.optim.SGD does. */
  weightDecay: number;
}

export interface LionHyperParams {
  lr: number;
  beta1: number;
  beta2: number;
  /** Decoupled: p *= 1 - lr · weight_decay before the update. */
  weightDecay: number;
}

export function checkMomentumHyperParams(optimizer: 'sgd' | 'lion', h: SgdHyperParams | LionHyperParams): void {
  const name = optimizer === 'sgd' ? 'SGD' : 'Lion';
  const fail = (option: string, value: number, what: string) => {
    throw new ConfigError(`${name}'s ${option} ${what}, got ${value}`, option);
  };
  if (!(h.lr >= 0)) fail('lr', h.lr, 'must be >= 0');
  if (!(h.weightDecay >= 0)) fail('weightDecay', h.weightDecay, 'must be >= 0');
  if ('momentum' in h && !(h.momentum >= 0 && h.momentum < 1)) fail('momentum', h.momentum, 'must be in [0, 1)');
  if ('beta1' in h) {
    if (!(h.beta1 >= 0 && h.beta1 <= 1)) fail('beta1', h.beta1, 'must be in [0, 1]');
    if (!(h.beta2 >= 0 && h.beta2 <= 1)) fail('beta2', h.beta2, 'must be in [0, 1]');
  }
}

/** The uniforms the kernel reads for a step of `optimizer` (float64; the kernel rounds them to f32). */
export function momentumScalars(
  optimizer: 'sgd' | 'lion',
  h: SgdHyperParams | LionHyperParams,
): { lr: number; beta1: number; oneMinusBeta1: number; beta2: number; oneMinusBeta2: number; l2: number; decayFactor: number } {
  checkMomentumHyperParams(optimizer, h);
  if (optimizer === 'sgd') {
    const { lr, momentum, weightDecay } = h as SgdHyperParams;
    return { lr, beta1: momentum, oneMinusBeta1: 1 - momentum, beta2: 0, oneMinusBeta2: 1, l2: weightDecay, decayFactor: 1 };
  }
  const { lr, beta1, beta2, weightDecay } = h as LionHyperParams;
  return { lr, beta1, oneMinusBeta1: 1 - beta1, beta2, oneMinusBeta2: 1 - beta2, l2: 0, decayFactor: 1 - lr * weightDecay };
}

/**
 * One step on host arrays, in float32 like the kernel, in place: `state` is SGD's momentum buffer
 * (null at momentum 0) or Lion's exp_avg. Grads are multiplied by `gradScale` first.
 */
export function momentumReferenceStep(
  optimizer: 'sgd' | 'lion',
  h: SgdHyperParams | LionHyperParams,
  param: Float32Array,
  grad: Float32Array,
  state: Float32Array | null,
  gradScale = 1,
): void {
  const f = Math.fround;
  const s = momentumScalars(optimizer, h);
  const [lr, b1, omb1, b2, omb2, l2, decay, scale] = [
    s.lr,
    s.beta1,
    s.oneMinusBeta1,
    s.beta2,
    s.oneMinusBeta2,
    s.l2,
    s.decayFactor,
    gradScale,
  ].map(f) as [number, number, number, number, number, number, number, number];
  for (let i = 0; i < param.length; i++) {
    const p0 = param[i]!;
    const g0 = f(scale * grad[i]!);
    if (optimizer === 'lion') {
      const c = f(f(b1 * state![i]!) + f(omb1 * g0));
      param[i] = f(f(p0 * decay) - f(lr * Math.sign(c)));
      state![i] = f(f(b2 * state![i]!) + f(omb2 * g0));
      continue;
    }
    const g = f(g0 + f(l2 * p0));
    if (state === null) {
      param[i] = f(p0 - f(lr * g));
      continue;
    }
    const m = f(f(b1 * state[i]!) + g);
    state[i] = m;
    param[i] = f(p0 - f(lr * m));
  }
}
