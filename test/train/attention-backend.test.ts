/**
 * `webtron train --attention-backend` (Megatron's flag) picks webtron's attention kernel: flash and
 * fused the flash-style one, unfused and local the one that keeps T × T scores, auto the adapter's
 * (unfused on lavapipe). The reference is the other kernel: the same losses within float rounding,
 * dropout included, and the activation peak each kernel's own memory line predicts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dir, expectIdenticalLosses, losses, TINY, train } from '../helpers/train.js';

describe('webtron train --attention-backend', () => {
  it('flash runs the fused kernel and local the unfused one: the same losses within rounding, fewer activation bytes; auto is the adapter’s', async () => {
    const base = dir();
    const run = async (backend: string) => {
      const r = await train([
        ...TINY,
        '--train-iters',
        '3',
        '--attention-dropout',
        '0.1',
        '--attention-backend',
        backend,
        '--run-dir',
        join(base, backend),
      ]);
      expect(r.code, `${backend}: ${r.stderr}`).toBe(0);
      // The memory line after the first iteration: measured equal to what webtron memory predicts for this kernel.
      expect(r.stdout, backend).toMatch(/activations [^|]*\(predicted [^)]*, equal\)/);
      const summary = JSON.parse(readFileSync(join(base, backend, 'summary.json'), 'utf8')) as { activations_peak_bytes: number };
      return { losses: losses(join(base, backend)), activations: summary.activations_peak_bytes };
    };
    const [flash, local, auto] = [await run('flash'), await run('local'), await run('auto')];
    expect(flash.activations).toBeLessThan(local.activations); // no T × T scores
    for (const [it, loss] of local.losses) expect(Math.abs(flash.losses.get(it)! - loss) / loss, `iteration ${it}`).toBeLessThan(1e-5);
    expectIdenticalLosses(local.losses, auto.losses); // lavapipe is a CPU driver: auto is unfused
  });
});
