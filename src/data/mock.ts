/**
 * Megatron's mock GPT data (--mock-data, its MockGPTLowLevelDataset): 100,000 documents, document d
 * of a length drawn uniformly from 1 to 4,095 tokens, holding the ids 1, 2, …, length - 1 modulo the
 * vocabulary and then the end of document. They go through the same splits, document orders and
 * windows as an indexed dataset's documents (src/data/gpt-dataset.ts), and need no file.
 *
 * The lengths come from webtron's own generator (splitmix32 of seed 0, as Megatron seeds numpy's
 * with 0), not numpy's PCG64, so they are not Megatron's lengths; every document follows its rule.
 */
import type { DocumentSource } from './gpt-dataset.js';
import { splitmix32 } from './samples.js';

/** Documents in mock data, and one more than the longest (Megatron's size and max_sequence_length). */
export const MOCK_DOCUMENTS = 100_000;
export const MOCK_MAX_LENGTH = 4096;

export class MockDocuments implements DocumentSource {
  readonly prefix = 'mock data';
  readonly documentCount = MOCK_DOCUMENTS;
  private readonly lengths: Uint16Array;

  constructor(
    /** Ids are taken modulo this (the tokenizer's vocabulary). */
    private readonly vocabSize: number,
    private readonly eod: number,
  ) {
    const next = splitmix32(0);
    this.lengths = Uint16Array.from({ length: MOCK_DOCUMENTS }, () => 1 + (next() % (MOCK_MAX_LENGTH - 1)));
  }

  documentLengths(): Float64Array {
    return Float64Array.from(this.lengths);
  }

  readDocument(d: number, offset: number, n: number, out: Uint32Array, at: number): number {
    const length = this.lengths[d]!;
    const take = Math.max(0, Math.min(n, length - offset));
    for (let k = 0; k < take; k++) {
      const i = offset + k;
      out[at + k] = i === length - 1 ? this.eod : (i + 1) % this.vocabSize;
    }
    return take;
  }

  close(): void {}
}
