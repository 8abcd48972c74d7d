/**
 * `webtron sample`'s choice of the next token, against the probabilities worked out in the test:
 * temperature, top-k, and top-p (nucleus) sampling.
 */
import { describe, expect, it } from 'vitest';
import { pickToken } from '../../src/cli/generate.js';
import { splitmix32 } from '../../src/data/samples.js';
import { seeded } from '../helpers/seed.js';

/** How often each token is picked in `draws` draws. */
function frequencies(
  logits: Float32Array,
  options: { temperature?: number; topK?: number; topP?: number },
  draws: number,
  seed: number,
): number[] {
  const random = splitmix32(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++)
    counts[pickToken(logits, logits.length, options.temperature ?? 1, options.topK ?? 0, random, options.topP ?? 0)]!++;
  return counts.map((c) => c / draws);
}

describe('pickToken', () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1, listed out of order.
  const probs = [0.15, 0.5, 0.05, 0.3];
  const logits = new Float32Array(probs.map(Math.log));
  const { seed } = seeded('pickToken');
  const draws = 20_000;
  const close = (got: number[], want: number[]) => {
    for (const [i, g] of got.entries()) expect(Math.abs(g - want[i]!), `token ${i}: ${g} vs ${want[i]}`).toBeLessThan(0.02); // 5.7 standard deviations of 20,000 draws
  };

  it('samples the softmax of the logits, and the most likely token at temperature 0', () => {
    close(frequencies(logits, {}, draws, seed), probs);
    expect(frequencies(logits, { temperature: 0 }, 10, seed)).toEqual([0, 1, 0, 0]);
  });

  it('top-p keeps the fewest most likely tokens whose probabilities reach p, the one that crosses it included', () => {
    // p = 0.7: 0.5 is short of it, 0.5 + 0.3 reaches it, so tokens 1 and 3, renormalized to 5/8 and 3/8.
    close(frequencies(logits, { topP: 0.7 }, draws, seed), [0, 5 / 8, 0, 3 / 8]);
    // p = 0.5 is reached by the first token alone; p = 0.95 needs the third (0.5 + 0.3 + 0.15).
    expect(frequencies(logits, { topP: 0.5 }, 1000, seed)).toEqual([0, 1, 0, 0]);
    close(frequencies(logits, { topP: 0.95 }, draws, seed), [0.15 / 0.95, 0.5 / 0.95, 0, 0.3 / 0.95]);
    // p = 1 (and 0) keep every token; at temperature 2 the probabilities flatten before the cut.
    close(frequencies(logits, { topP: 1 }, draws, seed), probs);
    const flat = probs.map(Math.sqrt);
    const sum = flat.reduce((a, b) => a + b, 0);
    const [p1, p3, p0] = [flat[1]! / sum, flat[3]! / sum, flat[0]! / sum];
    expect(p1 + p3).toBeLessThan(0.8); // so p = 0.8 takes a third token at temperature 2
    close(
      frequencies(logits, { topP: 0.8, temperature: 2 }, draws, seed),
      [p0, p1, 0, p3].map((p) => p / (p0 + p1 + p3)),
    );
  });

  it('top-k keeps the k most likely tokens', () => {
    close(frequencies(logits, { topK: 2 }, draws, seed), [0, 5 / 8, 0, 3 / 8]);
  });
});
