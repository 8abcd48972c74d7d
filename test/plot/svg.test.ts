/** Chart axes: round, evenly spaced ticks from d3-scale, in the binary unit for bytes. */
import { describe, expect, it } from 'vitest';
import { stackedBarSvg, yTicks } from '../../src/plot/svg.js';
import { seeded } from '../helpers/seed.js';

/** Is `step` 1, 2 or 5 times a power of ten (up to float rounding)? */
function round125(step: number): boolean {
  const mantissa = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
  return [1, 2, 5, 10].some((m) => Math.abs(mantissa - m) < 1e-6);
}

describe('y ticks', () => {
  it('start at 0, step evenly by 1, 2 or 5 × 10^k, and the top tick covers the largest value', () => {
    const { random } = seeded('plot/svg.test.ts ticks');
    for (let trial = 0; trial < 200; trial++) {
      const binary = trial % 2 === 1;
      const max = 10 ** (random() * 24 - 6) * (binary ? 1e6 : 1);
      const { top, ticks } = yTicks(max, binary);
      const unit = binary ? 1024 ** Math.min(5, Math.max(0, Math.floor(Math.log(max) / Math.log(1024)))) : 1; // B … PiB
      const steps = ticks.slice(1).map((t, i) => (t - ticks[i]!) / unit);
      expect(ticks[0]).toBe(0);
      expect(ticks.at(-1)).toBeCloseTo(top, 6);
      expect(top).toBeGreaterThanOrEqual(max * (1 - 1e-12));
      for (const s of steps) expect(s / steps[0]!).toBeCloseTo(1, 9);
      expect(round125(steps[0]!), `max ${max}, step ${steps[0]}`).toBe(true);
      expect(ticks.length).toBeGreaterThanOrEqual(3);
      expect(ticks.length).toBeLessThanOrEqual(11);
    }
  });

  it('a bytes chart labels its ticks in one binary unit', () => {
    const svg = stackedBarSvg(
      [
        { label: 'a', values: [1.1 * 2 ** 30, 0] },
        { label: 'b', values: [0.3 * 2 ** 30, 0.2 * 2 ** 30] },
      ],
      [
        { name: 'params', color: '#111' },
        { name: 'grads', color: '#222' },
      ],
      { title: 't', xLabel: 'x', yLabel: 'bytes', yBinary: true },
    );
    const labels = [...svg.matchAll(/text-anchor="end">([^<]+)</g)].map((m) => m[1]);
    expect(labels).toEqual(['0 GiB', '0.2 GiB', '0.4 GiB', '0.6 GiB', '0.8 GiB', '1 GiB', '1.2 GiB']);
  });
});
