/**
 * Megatron's weighted data blends, pure: `--data-path 0.7 PREFIX1 0.3 PREFIX2` parsed, and the
 * blending index that decides, for every global sample, which dataset serves it and which of that
 * dataset's samples it is (Megatron's build_blending_indices: each sample goes to the dataset
 * furthest behind its share, weight · samples so far − samples it has served, ties to the first).
 */
import { ConfigError } from '../errors.js';

export interface DataPathEntry {
  /** Normalized to sum to 1; null when the list gave no weights (then weighted by the datasets' sizes). */
  weight: number | null;
  path: string;
}

const NUMBER = /^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** `P`, `W1 P1 W2 P2 ...` or `P1 P2 ...` (weights by size, as Megatron). */
export function parseDataPath(words: readonly string[]): DataPathEntry[] {
  const fail = (what: string): never => {
    throw new ConfigError(
      `dataPath: ${what}; give one PREFIX, or weights and prefixes in turn like 0.7 PREFIX1 0.3 PREFIX2 (got '${words.join(' ')}')`,
      'dataPath',
    );
  };
  if (words.length === 0) fail('no path');
  const numeric = words.map((w) => NUMBER.test(w));
  if (!numeric[0]) {
    if (numeric.some(Boolean) && words.length > 1)
      fail(`'${words[numeric.indexOf(true)]}' looks like a weight, but the list does not start with one`);
    return words.map((path) => ({ weight: words.length === 1 ? 1 : null, path }));
  }
  if (words.length % 2 !== 0) fail(`${words.length} words: weights and prefixes must pair up`);
  const entries: DataPathEntry[] = [];
  for (let i = 0; i < words.length; i += 2) {
    if (!numeric[i]) fail(`'${words[i]}' stands where a weight goes`);
    if (numeric[i + 1]) fail(`'${words[i + 1]}' stands where a prefix goes`);
    entries.push({ weight: Number(words[i]), path: words[i + 1]! });
  }
  const sum = entries.reduce((s, e) => s + e.weight!, 0);
  if (!(sum > 0)) fail('the weights sum to 0');
  return entries.map((e) => ({ ...e, weight: e.weight! / sum }));
}

/** For the samples 0, 1, 2, ... of a blend: which dataset, and which of its samples. Grows on demand. */
export class BlendingIndex {
  private dataset = new Uint16Array(1024);
  private sample = new Float64Array(1024);
  private built = 0;
  private readonly served: number[];

  constructor(readonly weights: readonly number[]) {
    if (weights.length === 0 || weights.length > 65535) throw new Error(`a blend of ${weights.length} datasets`);
    this.served = weights.map(() => 0);
  }

  /** Dataset and sample within it of blend sample `g`. */
  at(g: number): { dataset: number; sample: number } {
    this.build(g + 1);
    return { dataset: this.dataset[g]!, sample: this.sample[g]! };
  }

  private build(n: number): void {
    if (n <= this.built) return;
    if (n > this.dataset.length) {
      const size = Math.max(n, 2 * this.dataset.length);
      const dataset = new Uint16Array(size);
      dataset.set(this.dataset);
      const sample = new Float64Array(size);
      sample.set(this.sample);
      this.dataset = dataset;
      this.sample = sample;
    }
    for (let i = this.built; i < n; i++) {
      const progress = Math.max(i, 1);
      let best = 0;
      let bestError = -Infinity;
      for (let k = 0; k < this.weights.length; k++) {
        const error = this.weights[k]! * progress - this.served[k]!;
        if (error > bestError) {
          bestError = error;
          best = k;
        }
      }
      this.dataset[i] = best;
      this.sample[i] = this.served[best]!;
      this.served[best]! += 1;
    }
    this.built = n;
  }
}
