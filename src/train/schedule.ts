/**
 * The learning rate of Megatron-LM's OptimizerParamScheduler, pure: linear warmup from
 * `warmupInit` to `lr` over the first `warmupIters` steps, then constant, or linear or cosine
 * decay to `minLr` at `decayIters` (and `minLr` after). Megatron counts the scheduler's steps only
 * for iterations whose update was applied (an fp16 step skipped for an overflow does not count), and
 * the optimizer's step k (1-based) uses the rate at k - 1 steps.
 */

export type DecayStyle = 'constant' | 'linear' | 'cosine';

export interface LrSchedule {
  lr: number;
  minLr: number;
  decayStyle: DecayStyle;
  /** Steps of linear warmup (0: none). */
  warmupIters: number;
  /** The step at which the decay reaches minLr. */
  decayIters: number;
  /** The rate warmup starts from (Megatron's --lr-warmup-init, default 0). */
  warmupInit?: number;
}

/** The learning rate after `steps` applied steps. */
export function learningRate(s: LrSchedule, steps: number): number {
  const init = s.warmupInit ?? 0;
  if (s.warmupIters > 0 && steps <= s.warmupIters) return init + ((s.lr - init) * steps) / s.warmupIters;
  if (s.decayStyle === 'constant') return s.lr;
  if (steps > s.decayIters) return s.minLr;
  const ratio = (steps - s.warmupIters) / (s.decayIters - s.warmupIters);
  const coeff = s.decayStyle === 'linear' ? 1 - ratio : 0.5 * (Math.cos(Math.PI * ratio) + 1);
  return s.minLr + coeff * (s.lr - s.minLr);
}
