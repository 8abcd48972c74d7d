import { ConfigError } from '../errors.js';
/**
 * Adam / AdamW hyper-parameters and the per-step scalars, computed in double precision as PyTorch
 * computes them in Python floats; plus a plain TypeScript reference of the whole step that mirrors
 * the WGSL kernel operation for operation in float32 (Math.fround after every operation).
 */

export interface AdamHyperParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** true: AdamW (decoupled decay, p *= 1 - lr·wd); false: Adam (L2, g += wd·p). */
  decoupled: boolean;
  /** Ascend instead of descend, as torch's `maximize=True`. */
  maximize: boolean;
}

/** torch.optim.AdamW's defaults. */
export const ADAMW_DEFAULTS: AdamHyperParams = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 1e-2,
  decoupled: true,
  maximize: false,
};

/** torch.optim.Adam's defaults. */
export const ADAM_DEFAULTS: AdamHyperParams = { ...ADAMW_DEFAULTS, weightDecay: 0, decoupled: false };

export function checkHyperParams(h: AdamHyperParams): void {
  const fail = (option: keyof AdamHyperParams, what: string) => {
    throw new ConfigError(`Adam's ${option} ${what}, got ${h[option]}`, option);
  };
  if (!(h.lr >= 0)) fail('lr', 'must be >= 0');
  if (!(h.beta1 >= 0 && h.beta1 < 1)) fail('beta1', 'must be in [0, 1)');
  if (!(h.beta2 >= 0 && h.beta2 < 1)) fail('beta2', 'must be in [0, 1)');
  if (!(h.eps >= 0)) fail('eps', 'must be >= 0');
  if (!(h.weightDecay >= 0)) fail('weightDecay', 'must be >= 0');
}

/** The scalars the kernel needs for step `step` (1-based), as float64; the kernel rounds them to f32. */
export interface AdamStepScalars {
  stepSize: number;
  bc2Sqrt: number;
  beta1: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  eps: number;
  l2: number;
  decayFactor: number;
  gradSign: number;
}

export function adamStepScalars(h: AdamHyperParams, step: number): AdamStepScalars {
  if (!Number.isInteger(step) || step < 1) throw new ConfigError(`Adam step must be an integer >= 1, got ${step}`);
  const bc1 = 1 - h.beta1 ** step;
  const bc2 = 1 - h.beta2 ** step;
  return {
    stepSize: h.lr / bc1,
    bc2Sqrt: Math.sqrt(bc2),
    beta1: h.beta1,
    oneMinusBeta1: 1 - h.beta1,
    beta2: h.beta2,
    oneMinusBeta2: 1 - h.beta2,
    eps: h.eps,
    l2: h.decoupled ? 0 : h.weightDecay,
    decayFactor: h.decoupled ? 1 - h.lr * h.weightDecay : 1,
    gradSign: h.maximize ? -1 : 1,
  };
}

/**
 * One Adam step on host arrays, in float32 like the kernel. Updates param, expAvg, expAvgSq in place.
 * Grads are multiplied by `gradScale` first (a clipping coefficient).
 */
export function adamReferenceStep(
  h: AdamHyperParams,
  step: number,
  param: Float32Array,
  grad: Float32Array,
  expAvg: Float32Array,
  expAvgSq: Float32Array,
  gradScale = 1,
): void {
  const f = Math.fround;
  const s = adamStepScalars(h, step);
  const [stepSize, bc2Sqrt, b1, omb1, b2, omb2, eps, l2, decay, sign] = [
    s.stepSize,
    s.bc2Sqrt,
    s.beta1,
    s.oneMinusBeta1,
    s.beta2,
    s.oneMinusBeta2,
    s.eps,
    s.l2,
    s.decayFactor,
    f(gradScale) * s.gradSign,
  ].map(f) as number[] as [number, number, number, number, number, number, number, number, number, number];
  for (let i = 0; i < param.length; i++) {
    const p0 = param[i]!;
    const g = f(f(sign * grad[i]!) + f(l2 * p0));
    const p = f(p0 * decay);
    const m = f(f(b1 * expAvg[i]!) + f(omb1 * g));
    const v = f(f(b2 * expAvgSq[i]!) + f(f(omb2 * g) * g));
    expAvg[i] = m;
    expAvgSq[i] = v;
    param[i] = f(p - f(stepSize * f(m / f(f(f(Math.sqrt(v)) / bc2Sqrt) + eps))));
  }
}
