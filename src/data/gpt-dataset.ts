/**
 * GPT samples from Megatron indexed datasets (src/data/indexed.ts), for `webtron train
 * --data-path`. A split is a range of documents (Megatron's --split, by documents); each epoch
 * lays the split's documents end to end in an order drawn from (seed, epoch), and sample k of the
 * epoch is the window of seqLength + 1 tokens starting at token k · seqLength of that stream, so
 * samples run across document boundaries as Megatron's do; the epoch's windows are visited in an
 * order of their own, also drawn from (seed, epoch). A blend of datasets (`0.7 A 0.3 B`) takes
 * each global sample from the dataset Megatron's blending index names. Tokens are read from .bin
 * a window at a time, so a corpus larger than memory trains; what is kept per dataset is its
 * document lengths and, for the current epoch, one order and its prefix sums.
 *
 * The sample with global index g depends on the seed and g only, as for text corpora
 * (src/data/samples.ts): not on the data-parallel size, the micro-batch size or a resume.
 */
import { existsSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { BlendingIndex, type DataPathEntry } from './blend.js';
import { splitRanges } from './corpus.js';
import { DataError, IndexedDataset } from './indexed.js';
import { permutation } from './samples.js';

export interface GptSampleSource {
  /** Samples per epoch (of a blend: of all its datasets together). */
  readonly count: number;
  readonly seqLength: number;
  /**
   * Inputs [n, T] and targets [n, T] of the samples first..first+n-1; with documents inside the samples
   * (--reset-position-ids, --reset-attention-mask), where each input token's document starts in its sample.
   */
  batch(first: number, n: number): { ids: Uint32Array; targets: Uint32Array; starts?: Uint32Array };
}

/** Documents the samples are cut from: an indexed dataset's (IndexedDataset), or mock data's (MockDocuments). */
export interface DocumentSource {
  /** What the errors name: the dataset's prefix. */
  readonly prefix: string;
  readonly documentCount: number;
  /** Every document's length in tokens. */
  documentLengths(): Float64Array;
  /** Tokens `offset`..`offset + n - 1` of document `d` into `out` at `at`; returns how many there were (fewer at the document's end). */
  readDocument(d: number, offset: number, n: number, out: Uint32Array, at: number): number;
  close(): void;
}

/** A seed for (seed, epoch, what): what 1 orders documents, 2 orders windows. */
const mix = (seed: number, epoch: number, what: number) =>
  (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b) ^ Math.imul(what, 0xc2b2ae35)) >>> 0;

export class IndexedGptSamples implements GptSampleSource {
  readonly count: number;
  /** Tokens in the split. */
  readonly tokens: number;
  private epoch = -1;
  private documents: Uint32Array = new Uint32Array(0);
  /** starts[i]: where the epoch's i-th document starts in its stream. */
  private starts = new Float64Array(0);
  private windows: Uint32Array = new Uint32Array(0);
  private readonly window: Uint32Array;

  constructor(
    private readonly dataset: DocumentSource,
    /** All the dataset's document lengths (IndexedDataset.documentLengths). */
    private readonly lengths: Float64Array,
    /** The split: documents first..end-1. */
    private readonly range: readonly [number, number],
    readonly seqLength: number,
    private readonly seed: number,
    /** false: documents in file order and windows in order (validation). */
    private readonly shuffle: boolean,
    /** Token ids must be below this (the tokenizer's vocabulary). */
    private readonly vocabSize: number,
  ) {
    let tokens = 0;
    for (let d = range[0]; d < range[1]; d++) tokens += lengths[d]!;
    this.tokens = tokens;
    this.count = Math.max(0, Math.floor((tokens - 1) / seqLength));
    this.window = new Uint32Array(seqLength + 1);
  }

  /** The documents of epoch `epoch`, in the order its stream lays them end to end. */
  documentOrder(epoch: number): Uint32Array {
    this.order(this.shuffle ? epoch : 0);
    return this.documents.slice();
  }

  private order(epoch: number): void {
    if (epoch === this.epoch) return;
    const [first, end] = this.range;
    const n = end - first;
    const docs = this.shuffle ? permutation(n, mix(this.seed, epoch, 1)) : Uint32Array.from({ length: n }, (_, i) => i);
    const starts = new Float64Array(n + 1);
    for (let i = 0; i < n; i++) {
      docs[i] = docs[i]! + first;
      starts[i + 1] = starts[i]! + this.lengths[docs[i]!]!;
    }
    this.documents = docs;
    this.starts = starts;
    this.windows = this.shuffle ? permutation(this.count, mix(this.seed, epoch, 2)) : new Uint32Array(0);
    this.epoch = epoch;
  }

  /** Sample `g`'s seqLength + 1 tokens (inputs then the last target), into `this.window`. */
  private read(g: number): Uint32Array {
    const epoch = this.shuffle ? Math.floor(g / this.count) : 0;
    this.order(epoch);
    const k = this.shuffle ? this.windows[g % this.count]! : g % this.count;
    let position = k * this.seqLength;
    // The last document starting at or before `position` (empty documents share their start with the next).
    let lo = 0;
    let hi = this.documents.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= position) lo = mid;
      else hi = mid - 1;
    }
    const out = this.window;
    let done = 0;
    for (let i = lo; done < out.length; i++) {
      if (i >= this.documents.length) throw new Error(`window ${k} runs past the split's ${this.tokens} tokens`);
      done += this.dataset.readDocument(this.documents[i]!, position - this.starts[i]!, out.length - done, out, done);
      position = this.starts[i + 1]!;
    }
    for (let t = 0; t < out.length; t++) {
      if (out[t]! >= this.vocabSize)
        throw new DataError(
          `${this.dataset.prefix}: token id ${out[t]} is past the tokenizer's vocabulary of ${this.vocabSize}; train with the tokenizer the dataset was made with (--tokenizer-type and its files)`,
        );
    }
    return out;
  }

  /** Sample `g` into row `row` of ids and targets. */
  sampleInto(g: number, ids: Uint32Array, targets: Uint32Array, row: number): void {
    const w = this.read(g);
    const t = this.seqLength;
    ids.set(w.subarray(0, t), row * t);
    targets.set(w.subarray(1, t + 1), row * t);
  }

  batch(first: number, n: number): { ids: Uint32Array; targets: Uint32Array } {
    const ids = new Uint32Array(n * this.seqLength);
    const targets = new Uint32Array(n * this.seqLength);
    for (let k = 0; k < n; k++) this.sampleInto(first + k, ids, targets, k);
    return { ids, targets };
  }

  /** Up to `max` tokens of the split in file order (for the entropy reference lines). */
  head(max: number): Uint32Array {
    const out = new Uint32Array(Math.min(max, this.tokens));
    let done = 0;
    for (let d = this.range[0]; d < this.range[1] && done < out.length; d++)
      done += this.dataset.readDocument(d, 0, out.length - done, out, done);
    return out;
  }
}

/** Datasets blended by weight: global sample g is sample `BlendingIndex.at(g)` of its dataset. */
export class BlendedGptSamples implements GptSampleSource {
  readonly count: number;
  readonly seqLength: number;
  private readonly index: BlendingIndex;

  constructor(
    private readonly sources: readonly IndexedGptSamples[],
    weights: readonly number[],
  ) {
    this.count = sources.reduce((s, x) => s + x.count, 0);
    this.seqLength = sources[0]!.seqLength;
    this.index = new BlendingIndex(weights);
  }

  batch(first: number, n: number): { ids: Uint32Array; targets: Uint32Array } {
    const ids = new Uint32Array(n * this.seqLength);
    const targets = new Uint32Array(n * this.seqLength);
    for (let k = 0; k < n; k++) {
      const { dataset, sample } = this.index.at(first + k);
      this.sources[dataset]!.sampleInto(sample, ids, targets, k);
    }
    return { ids, targets };
  }
}

/** What a --data-path word names: an indexed dataset (PREFIX.idx or PREFIX.bin exists), a text file, or nothing. */
export function dataKind(path: string): 'indexed' | 'text' | null {
  if (existsSync(`${path}.idx`) || existsSync(`${path}.bin`)) return 'indexed';
  return existsSync(path) && statSync(path).isFile() ? 'text' : null;
}

export interface IndexedGptData {
  name: string;
  train: GptSampleSource;
  valid: GptSampleSource | null;
  /** The test split's samples (Megatron's third --split part), null where it holds none. */
  test: GptSampleSource | null;
  trainTokens: number;
  validTokens: number;
  testTokens: number;
  /** Some train tokens in file order, for the entropy reference lines. */
  head: Uint32Array;
  datasets: DocumentSource[];
}

/** The train, validation and test samples of a --data-path blend of indexed datasets. */
export function openIndexedGptData(
  blend: readonly DataPathEntry[],
  options: {
    split: readonly [number, number, number];
    seqLength: number;
    seed: number;
    vocabSize: number;
    headTokens?: number;
    /** Validation or test data of its own (--valid-data-path, --test-data-path): no train samples needed. */
    heldOut?: boolean;
  },
  /** Each path's documents (mock data's for --mock-data). */
  open: (path: string) => DocumentSource = (path) => IndexedDataset.open(path),
): IndexedGptData {
  const datasets: DocumentSource[] = [];
  try {
    const splits = blend.map((entry) => {
      const dataset = open(entry.path);
      datasets.push(dataset);
      const lengths = dataset.documentLengths();
      const [train, valid, test] = splitRanges(dataset.documentCount, options.split);
      const make = (range: [number, number], shuffle: boolean) =>
        new IndexedGptSamples(dataset, lengths, range, options.seqLength, options.seed, shuffle, options.vocabSize);
      return { entry, train: make(train!, true), valid: make(valid!, false), test: make(test!, false) };
    });
    for (const s of splits) {
      if (s.train.count < 1 && !options.heldOut)
        throw new ConfigError(
          `dataPath: the train split of ${s.entry.path} (${s.train.tokens} tokens) has no sample of ${options.seqLength + 1} tokens; use a shorter --seq-length, another --split or more data`,
          'dataPath',
        );
    }
    const weightsOf = (parts: IndexedGptSamples[], chosen: typeof splits) => {
      const raw = chosen.map((s, i) => s.entry.weight ?? parts[i]!.tokens);
      const sum = raw.reduce((a, b) => a + b, 0);
      return raw.map((w) => w / sum);
    };
    const trains = splits.map((s) => s.train);
    const train = trains.length === 1 ? trains[0]! : new BlendedGptSamples(trains, weightsOf(trains, splits));
    // Validation and test: the datasets whose split holds a sample, blended by the same weights.
    const heldOut = (part: 'valid' | 'test') => {
      const chosen = splits.filter((s) => s[part].count >= 1);
      const parts = chosen.map((s) => s[part]);
      const samples = parts.length === 0 ? null : parts.length === 1 ? parts[0]! : new BlendedGptSamples(parts, weightsOf(parts, chosen));
      return { samples, tokens: parts.reduce((s, x) => s + x.tokens, 0) };
    };
    const [valid, test] = [heldOut('valid'), heldOut('test')];
    const name =
      blend.length === 1 ? blend[0]!.path : blend.map((e) => (e.weight === null ? e.path : `${e.weight.toFixed(3)} ${e.path}`)).join(' + ');
    return {
      name,
      train,
      valid: valid.samples,
      test: test.samples,
      trainTokens: trains.reduce((s, x) => s + x.tokens, 0),
      validTokens: valid.tokens,
      testTokens: test.tokens,
      head: trains[0]!.head(options.headTokens ?? 1 << 20),
      datasets,
    };
  } catch (error) {
    for (const d of datasets) d.close();
    throw error;
  }
}
