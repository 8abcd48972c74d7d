import { ConfigError } from '../errors.js';
/**
 * GPT training samples from a token stream, pure: sample k of an epoch is the window of
 * seqLength + 1 tokens starting at k · seqLength (inputs and targets shifted by one), and each epoch
 * visits the windows in its own order, a permutation drawn from (seed, epoch). So the sample with
 * global index g is a function of the seed and g only: the data do not depend on the number of
 * ranks, the micro-batch size or a resume.
 */

/** A small seeded generator (splitmix32): enough for shuffles, the same everywhere. */
export function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** A permutation of 0..n-1 drawn from `seed` (Fisher-Yates). */
export function permutation(n: number, seed: number): Uint32Array {
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  const next = splitmix32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

export class GptSamples {
  /** Windows per epoch. */
  readonly count: number;
  private epoch = -1;
  private order: Uint32Array = new Uint32Array(0);

  constructor(
    private readonly tokens: Uint32Array,
    readonly seqLength: number,
    private readonly seed: number,
    /** false: windows in order in every epoch (validation). */
    private readonly shuffle = true,
  ) {
    this.count = Math.floor((tokens.length - 1) / seqLength);
    if (this.count < 1)
      throw new ConfigError(
        `a text of ${tokens.length} tokens has no sample of ${seqLength + 1} tokens; use a shorter --seq-length or more text`,
      );
  }

  /** The window the sample with global index `g` reads. */
  window(g: number): number {
    if (!this.shuffle) return g % this.count;
    const epoch = Math.floor(g / this.count);
    if (epoch !== this.epoch) {
      this.order = permutation(this.count, (Math.imul(this.seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
      this.epoch = epoch;
    }
    return this.order[g % this.count]!;
  }

  /** Inputs [n, T] and targets [n, T] of the samples first..first+n-1. */
  batch(first: number, n: number): { ids: Uint32Array; targets: Uint32Array } {
    const t = this.seqLength;
    const ids = new Uint32Array(n * t);
    const targets = new Uint32Array(n * t);
    for (let k = 0; k < n; k++) {
      const start = this.window(first + k) * t;
      ids.set(this.tokens.subarray(start, start + t), k * t);
      targets.set(this.tokens.subarray(start + 1, start + t + 1), k * t);
    }
    return { ids, targets };
  }
}
