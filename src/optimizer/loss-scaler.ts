import { ConfigError } from '../errors.js';
/**
 * Megatron-LM's dynamic loss scaler for fp16, pure. The loss is multiplied by `scale` before the
 * backward pass; after it, grads with an inf or NaN on any rank skip the step. Every non-finite
 * step uses up one unit of hysteresis, and once none is left the scale is multiplied by `backoff`
 * (never below `minScale`); `growthInterval` finite steps in a row multiply it by `growth` and
 * restore the hysteresis. With `constant` (Megatron's --loss-scale, its ConstantGradScaler) the scale
 * never changes; non-finite grads still skip the step.
 */

export interface LossScalerConfig {
  initialScale: number;
  minScale: number;
  growth: number;
  backoff: number;
  growthInterval: number;
  hysteresis: number;
  /** Keep `initialScale` whatever happens (Megatron's --loss-scale). */
  constant: boolean;
}

/** Megatron's defaults. */
export const LOSS_SCALER_DEFAULTS: LossScalerConfig = {
  initialScale: 2 ** 32,
  minScale: 1,
  growth: 2,
  backoff: 0.5,
  growthInterval: 1000,
  hysteresis: 2,
  constant: false,
};

export interface LossScalerState {
  scale: number;
  growthTracker: number;
  hysteresisTracker: number;
  skippedSteps: number;
}

export class DynamicLossScaler {
  readonly config: LossScalerConfig;
  private state: LossScalerState;

  constructor(config: Partial<LossScalerConfig> = {}) {
    this.config = { ...LOSS_SCALER_DEFAULTS, ...config };
    const c = this.config;
    if (!(c.initialScale > 0 && c.minScale > 0 && c.growth > 1 && c.backoff > 0 && c.backoff < 1)) {
      throw new ConfigError(`loss scaler: need scale > 0, min scale > 0, growth > 1 and 0 < backoff < 1, got ${JSON.stringify(c)}`);
    }
    if (!Number.isInteger(c.growthInterval) || c.growthInterval < 1 || !Number.isInteger(c.hysteresis) || c.hysteresis < 1) {
      throw new ConfigError(
        `loss scaler: growth interval and hysteresis must be positive integers, got ${c.growthInterval} and ${c.hysteresis}`,
      );
    }
    this.state = { scale: c.initialScale, growthTracker: 0, hysteresisTracker: c.hysteresis, skippedSteps: 0 };
  }

  get scale(): number {
    return this.state.scale;
  }

  get skippedSteps(): number {
    return this.state.skippedSteps;
  }

  /** After a step's grads were checked: `foundInf` on any rank. */
  update(foundInf: boolean): void {
    const s = this.state;
    const c = this.config;
    if (c.constant) {
      if (foundInf) s.skippedSteps += 1;
      return;
    }
    if (foundInf) {
      s.skippedSteps += 1;
      s.growthTracker = 0;
      s.hysteresisTracker -= 1;
      if (s.hysteresisTracker <= 0) s.scale = Math.max(s.scale * c.backoff, c.minScale);
      return;
    }
    s.growthTracker += 1;
    if (s.growthTracker === c.growthInterval) {
      s.growthTracker = 0;
      s.hysteresisTracker = c.hysteresis;
      s.scale *= c.growth;
    }
  }

  stateDict(): LossScalerState {
    return { ...this.state };
  }

  loadStateDict(state: LossScalerState): void {
    for (const key of ['scale', 'growthTracker', 'hysteresisTracker', 'skippedSteps'] as const) {
      if (typeof state[key] !== 'number' || !Number.isFinite(state[key]))
        throw new ConfigError(`loss scaler state: field '${key}' is ${String(state[key])}`);
    }
    // A constant scale is the flag's, not the checkpoint's (Megatron's ConstantGradScaler loads nothing).
    this.state = this.config.constant ? { ...this.state, skippedSteps: state.skippedSteps } : { ...state };
  }
}
