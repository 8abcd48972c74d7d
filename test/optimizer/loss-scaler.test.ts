import { describe, expect, it } from 'vitest';
import { DynamicLossScaler, LOSS_SCALER_DEFAULTS } from '../../src/optimizer/loss-scaler.js';

describe('dynamic loss scaler (Megatron semantics)', () => {
  it("has Megatron's defaults", () => {
    expect(LOSS_SCALER_DEFAULTS).toEqual({
      initialScale: 2 ** 32,
      minScale: 1,
      growth: 2,
      backoff: 0.5,
      growthInterval: 1000,
      hysteresis: 2,
      constant: false,
    });
  });

  it("--loss-scale (Megatron's ConstantGradScaler): the scale never moves, through overflows and growth intervals; a resume keeps the flag's", () => {
    const s = new DynamicLossScaler({ initialScale: 1024, growthInterval: 2, hysteresis: 1, constant: true });
    for (const overflow of [true, true, false, false, false, true, false, false]) {
      s.update(overflow);
      expect(s.scale).toBe(1024);
    }
    expect(s.skippedSteps).toBe(3);
    const dynamic = new DynamicLossScaler({ initialScale: 8 });
    dynamic.update(true);
    s.loadStateDict(dynamic.stateDict());
    expect(s.scale).toBe(1024);
    expect(s.skippedSteps).toBe(1);
  });

  it('backs off only once the hysteresis is used up, then on every overflow, never below the minimum', () => {
    const s = new DynamicLossScaler({ initialScale: 8, minScale: 2 });
    s.update(true);
    expect(s.scale).toBe(8); // hysteresis 2 -> 1
    s.update(true);
    expect(s.scale).toBe(4);
    s.update(true);
    expect(s.scale).toBe(2);
    s.update(true);
    expect(s.scale).toBe(2); // min scale
    expect(s.skippedSteps).toBe(4);
  });

  it('grows after growthInterval finite steps in a row, which also restores the hysteresis', () => {
    const s = new DynamicLossScaler({ initialScale: 16, growthInterval: 3 });
    s.update(false);
    s.update(false);
    s.update(true); // resets the growth tracker, hysteresis 2 -> 1
    expect(s.scale).toBe(16);
    s.update(false);
    s.update(false);
    expect(s.scale).toBe(16);
    s.update(false);
    expect(s.scale).toBe(32);
    s.update(true); // hysteresis was restored to 2: no backoff yet
    expect(s.scale).toBe(32);
    expect(s.stateDict()).toEqual({ scale: 32, growthTracker: 0, hysteresisTracker: 1, skippedSteps: 2 });
  });

  it('round-trips its state and rejects bad input', () => {
    const a = new DynamicLossScaler({ initialScale: 4 });
    a.update(true);
    const b = new DynamicLossScaler();
    b.loadStateDict(a.stateDict());
    expect(b.stateDict()).toEqual(a.stateDict());
    expect(() => b.loadStateDict({ ...a.stateDict(), scale: NaN })).toThrow("loss scaler state: field 'scale' is NaN");
    expect(() => new DynamicLossScaler({ backoff: 2 })).toThrow(/0 < backoff < 1/);
  });
});
