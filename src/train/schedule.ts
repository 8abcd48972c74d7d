/**
 * The learning rate and the weight decay of Megatron-LM's OptimizerParamScheduler, pure: linear
 * warmup from `warmupInit` to `lr` over the first `warmupSteps`, then constant, linear or cosine
 * decay to `minLr` at `decaySteps` (and `minLr` after), an inverse square root of the steps, or WSD
 * (warmup, stable at `lr`, then a decay of `wsdDecayStyle` over the last `wsdDecaySteps` before
 * `decaySteps`). The weight decay goes from `start` to `end` over `incrSteps`, constant, linear or
 * cosine.
 *
 * Megatron counts the scheduler's steps in samples, a global batch per iteration whose update was
 * applied (an fp16 step skipped for an overflow does not count), and the optimizer's step k
 * (1-based) uses the rates after k - 1 of them. A schedule given in iterations (--train-iters) counts
 * applied iterations here (`unit` 'iterations'), the same schedule with a constant global batch; one
 * given in samples (--train-samples), or taken from a checkpoint, counts their samples.
 */

export const DECAY_STYLES = ['constant', 'linear', 'cosine', 'inverse-square-root', 'WSD'] as const;
export type DecayStyle = (typeof DECAY_STYLES)[number];
export const WSD_DECAY_STYLES = ['exponential', 'linear', 'cosine', 'minus_sqrt'] as const;
export type WsdDecayStyle = (typeof WSD_DECAY_STYLES)[number];
export const WEIGHT_DECAY_INCR_STYLES = ['constant', 'linear', 'cosine'] as const;
export type WeightDecayIncrStyle = (typeof WEIGHT_DECAY_INCR_STYLES)[number];

export interface LrSchedule {
  lr: number;
  minLr: number;
  decayStyle: DecayStyle;
  /** Steps of linear warmup (0: none); fractional with --lr-warmup-fraction. */
  warmupSteps: number;
  /** The step at which the decay reaches minLr. */
  decaySteps: number;
  /** The rate warmup starts from (Megatron's --lr-warmup-init, default 0). */
  warmupInit?: number;
  /** WSD: the steps of the final decay, which ends at `decaySteps`. */
  wsdDecaySteps?: number;
  /** WSD: the shape of the final decay (Megatron's default: exponential). */
  wsdDecayStyle?: WsdDecayStyle;
  /** What the steps count: applied iterations (the default), or their samples. */
  unit?: ScheduleUnit;
}

export type ScheduleUnit = 'iterations' | 'samples';

export interface WeightDecaySchedule {
  start: number;
  end: number;
  style: WeightDecayIncrStyle;
  /** The step at which the weight decay reaches `end`: the run's iterations, or its samples. */
  incrSteps: number;
  unit?: ScheduleUnit;
}

/** The learning rate after `n` steps in the schedule's unit (applied iterations, or their samples). */
export function learningRate(s: LrSchedule, n: number): number {
  const init = s.warmupInit ?? 0;
  if (s.warmupSteps > 0 && n <= s.warmupSteps) return init + ((s.lr - init) * n) / s.warmupSteps;
  if (s.decayStyle === 'constant') return s.lr;
  if (n > s.decaySteps) return s.minLr;
  if (s.decayStyle === 'inverse-square-root')
    return Math.max(s.minLr, (s.lr * Math.sqrt(Math.max(s.warmupSteps, 1))) / Math.sqrt(Math.max(n, 1)));
  return s.minLr + decayCoefficient(s, n) * (s.lr - s.minLr);
}

/** Linear, cosine or WSD: the share of lr - minLr left after `n` steps, in [0, 1]. */
function decayCoefficient(s: LrSchedule, n: number): number {
  if (s.decayStyle === 'WSD') {
    const decay = s.wsdDecaySteps ?? 0;
    const annealStart = s.decaySteps - decay;
    if (n <= annealStart) return 1;
    const ratio = (n - annealStart) / decay;
    switch (s.wsdDecayStyle ?? 'exponential') {
      case 'linear':
        return 1 - ratio;
      case 'cosine':
        return 0.5 * (Math.cos(Math.PI * ratio) + 1);
      case 'exponential':
        return 2 * 0.5 ** ratio - 1;
      case 'minus_sqrt':
        return 1 - Math.sqrt(ratio);
    }
  }
  const ratio = (n - s.warmupSteps) / (s.decaySteps - s.warmupSteps);
  return s.decayStyle === 'linear' ? 1 - ratio : 0.5 * (Math.cos(Math.PI * ratio) + 1);
}

/** The weight decay after `n` steps in the schedule's unit. */
export function weightDecay(s: WeightDecaySchedule, n: number): number {
  if (n > s.incrSteps || s.style === 'constant') return s.end;
  const ratio = n / s.incrSteps;
  const coeff = s.style === 'linear' ? ratio : 0.5 * (Math.cos(Math.PI * (1 - ratio)) + 1);
  return s.start + coeff * (s.end - s.start);
}

/** The run's schedules as its flags give them (fields of TrainConfig). */
export interface ScheduleFlags {
  trainIters: number;
  /** --train-samples: the schedule counts samples; null: it counts iterations (--train-iters). */
  trainSamples: number | null;
  lr: number;
  minLr: number;
  /**
   * --decoupled-lr: the embedding's and the output layer's peak learning rate, on the same warmup
   * and decay as --lr; null: they take --lr.
   */
  decoupledLr: number | null;
  /** --decoupled-min-lr: their minimum (null: --min-lr). */
  decoupledMinLr: number | null;
  lrDecayStyle: DecayStyle;
  /** --lr-decay-iters (default --train-iters); null with --train-samples. */
  lrDecayIters: number | null;
  lrWarmupIters: number;
  /** --lr-decay-samples (default --train-samples); null with --train-iters. */
  lrDecaySamples: number | null;
  lrWarmupSamples: number;
  /** Warmup over this fraction of the decay's steps, instead of --lr-warmup-iters/-samples. */
  lrWarmupFraction: number | null;
  lrWarmupInit: number;
  lrWsdDecayStyle: WsdDecayStyle;
  lrWsdDecayIters: number | null;
  lrWsdDecaySamples: number | null;
  weightDecay: number;
  startWeightDecay: number;
  endWeightDecay: number;
  weightDecayIncrStyle: WeightDecayIncrStyle;
}

/**
 * The schedule of the params at --decoupled-lr: `schedule` with their peak and minimum (Megatron's
 * param group with its own max_lr and min_lr: the same warmup, from the same --lr-warmup-init, and
 * the same decay); null without --decoupled-lr.
 */
export function decoupledSchedule(schedule: LrSchedule, decoupled: { lr: number | null; minLr: number | null }): LrSchedule | null {
  if (decoupled.lr === null) return null;
  return { ...schedule, lr: decoupled.lr, minLr: decoupled.minLr ?? schedule.minLr };
}

/** The learning-rate schedule of a run, in its flags' unit. */
export function lrScheduleOf(f: ScheduleFlags): LrSchedule {
  const bySamples = f.trainSamples !== null;
  const decaySteps = (bySamples ? f.lrDecaySamples : f.lrDecayIters) ?? 0;
  const warmupSteps = f.lrWarmupFraction !== null ? f.lrWarmupFraction * decaySteps : bySamples ? f.lrWarmupSamples : f.lrWarmupIters;
  const wsdDecaySteps = bySamples ? f.lrWsdDecaySamples : f.lrWsdDecayIters;
  return {
    lr: f.lr,
    minLr: f.minLr,
    decayStyle: f.lrDecayStyle,
    warmupSteps,
    decaySteps,
    warmupInit: f.lrWarmupInit,
    ...(wsdDecaySteps !== null ? { wsdDecaySteps, wsdDecayStyle: f.lrWsdDecayStyle } : {}),
    unit: bySamples ? 'samples' : 'iterations',
  };
}

/** The weight-decay schedule: over the whole run, in its flags' unit. */
export function weightDecayScheduleOf(f: ScheduleFlags): WeightDecaySchedule {
  const bySamples = f.trainSamples !== null;
  return {
    start: f.startWeightDecay,
    end: f.endWeightDecay,
    style: f.weightDecayIncrStyle,
    incrSteps: bySamples ? f.trainSamples! : f.trainIters,
    unit: bySamples ? 'samples' : 'iterations',
  };
}

/**
 * What Megatron's OptimizerParamScheduler saves and checks on a resume (its state_dict), every step
 * in samples: a resume whose flags give other values stops, unless --override-opt_param-scheduler
 * (the flags' values) or --use-checkpoint-opt_param-scheduler (the checkpoint's) says which to take.
 */
export interface SchedulerState {
  maxLr: number;
  minLr: number;
  /** --decoupled-lr and --decoupled-min-lr (null where not given; absent in checkpoints that predate them). */
  decoupledLr?: number | null;
  decoupledMinLr?: number | null;
  lrWarmupSteps: number;
  lrDecaySteps: number;
  lrDecayStyle: DecayStyle;
  startWd: number;
  endWd: number;
  wdIncrSteps: number;
  wdIncrStyle: WeightDecayIncrStyle;
}

/** Megatron's words for each field, as its mismatch message names them. */
export const SCHEDULER_FIELDS: Record<keyof SchedulerState, string> = {
  maxLr: 'learning rate',
  minLr: 'minimum learning rate',
  decoupledLr: 'decoupled learning rate',
  decoupledMinLr: 'decoupled minimum learning rate',
  lrWarmupSteps: 'warmup samples',
  lrDecaySteps: 'decay samples',
  lrDecayStyle: 'learning rate decay style',
  startWd: 'start weight decay',
  endWd: 'end weight decay',
  wdIncrSteps: 'weight decay samples',
  wdIncrStyle: 'weight decay incr style',
};

/** The scheduler's state of a run with these flags: a schedule in iterations counts global batches of `globalBatchSize` samples. */
export function schedulerStateOf(f: ScheduleFlags, globalBatchSize: number): SchedulerState {
  const lr = lrScheduleOf(f);
  const wd = weightDecayScheduleOf(f);
  const perStep = lr.unit === 'samples' ? 1 : globalBatchSize;
  return {
    maxLr: lr.lr,
    minLr: lr.minLr,
    decoupledLr: f.decoupledLr,
    decoupledMinLr: f.decoupledMinLr,
    lrWarmupSteps: lr.warmupSteps * perStep,
    lrDecaySteps: lr.decaySteps * perStep,
    lrDecayStyle: lr.decayStyle,
    startWd: wd.start,
    endWd: wd.end,
    wdIncrSteps: wd.incrSteps * perStep,
    wdIncrStyle: wd.style,
  };
}

/** The run's schedules with `state`'s values (a checkpoint's), counted in samples; the rest (warmup init, WSD) from the flags. */
export function schedulesFromState(
  f: ScheduleFlags,
  globalBatchSize: number,
  state: SchedulerState,
): { lr: LrSchedule; decoupled: LrSchedule | null; weightDecay: WeightDecaySchedule } {
  const lr = lrScheduleOf(f);
  const perStep = lr.unit === 'samples' ? 1 : globalBatchSize;
  const schedule: LrSchedule = {
    ...lr,
    lr: state.maxLr,
    minLr: state.minLr,
    decayStyle: state.lrDecayStyle,
    warmupSteps: state.lrWarmupSteps,
    decaySteps: state.lrDecaySteps,
    ...(lr.wsdDecaySteps !== undefined ? { wsdDecaySteps: lr.wsdDecaySteps * perStep } : {}),
    unit: 'samples',
  };
  // A checkpoint older than --decoupled-lr saved none: the flags' then.
  const decoupled =
    state.decoupledLr === undefined
      ? { lr: f.decoupledLr, minLr: f.decoupledMinLr }
      : { lr: state.decoupledLr, minLr: state.decoupledMinLr ?? null };
  return {
    lr: schedule,
    decoupled: decoupledSchedule(schedule, decoupled),
    weightDecay: { start: state.startWd, end: state.endWd, style: state.wdIncrStyle, incrSteps: state.wdIncrSteps, unit: 'samples' },
  };
}
