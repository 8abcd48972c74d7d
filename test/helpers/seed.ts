/**
 * Seeds for random tests: a fresh one per run, printed with the test's name so that a failure can
 * be replayed with WEBTRON_TEST_SEED=<seed>.
 */
import { splitmix32 } from '../../src/data/samples.js';

export function seeded(name: string): { seed: number; random: () => number } {
  const fixed = process.env.WEBTRON_TEST_SEED;
  const seed = fixed !== undefined ? Number(fixed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
  console.log(`seed of ${name}: ${seed} (replay with WEBTRON_TEST_SEED=${seed})`);
  const next = splitmix32(seed);
  return { seed, random: () => next() / 2 ** 32 };
}
