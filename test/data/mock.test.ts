/**
 * --mock-data's documents (src/data/mock.ts) against Megatron's MockGPTLowLevelDataset rule written
 * out plainly: document d is the ids 1, 2, …, length - 1 modulo the vocabulary, then the end of
 * document; 100,000 documents of 1 to 4,095 tokens. NullTokenizer against Megatron's text_to_ids and
 * ids_to_text.
 */
import { describe, expect, it } from 'vitest';
import { MOCK_DOCUMENTS, MOCK_MAX_LENGTH, MockDocuments } from '../../src/data/mock.js';
import { NullTokenizer } from '../../src/data/tokenizer.js';
import { seeded } from '../helpers/seed.js';

describe('mock documents', () => {
  it("each document is Megatron's rule, read whole or in any window; lengths uniform in 1 to 4,095", () => {
    const { random } = seeded('mock documents');
    const [vocab, eod] = [300, 299];
    const mock = new MockDocuments(vocab, eod);
    const lengths = mock.documentLengths();
    expect(mock.documentCount).toBe(MOCK_DOCUMENTS);
    expect(lengths.length).toBe(100_000);
    expect(Math.min(...lengths)).toBe(1);
    expect(Math.max(...lengths)).toBe(MOCK_MAX_LENGTH - 1);
    // The mean of 100,000 uniform lengths: 2,048 with a standard error of about 3.7.
    expect(Math.abs(lengths.reduce((a, b) => a + b, 0) / lengths.length - 2048)).toBeLessThan(20);
    const plain = (length: number) => [...Array.from({ length: length - 1 }, (_, i) => (i + 1) % vocab), eod];
    for (let k = 0; k < 200; k++) {
      const d = Math.floor(random() * MOCK_DOCUMENTS);
      const want = plain(lengths[d]!);
      const offset = Math.floor(random() * (want.length + 2));
      const n = Math.floor(random() * 600);
      const out = new Uint32Array(n + 3).fill(7);
      const got = mock.readDocument(d, offset, n, out, 3);
      const expected = want.slice(offset, offset + n);
      expect(got, `document ${d} from ${offset}`).toBe(expected.length);
      expect([...out.subarray(3, 3 + got)]).toEqual(expected);
      expect([...out.subarray(0, 3)]).toEqual([7, 7, 7]);
    }
  });
});

describe('NullTokenizer', () => {
  it('text is ids separated by spaces, both ways; the last id ends documents; anything else is one error naming the word', () => {
    const t = new NullTokenizer(64);
    expect(t.eod).toBe(63);
    expect([...t.encode('3 4  5\n63 0')]).toEqual([3, 4, 5, 63, 0]);
    expect(t.decode([3, 4, 5, 63, 0])).toBe('3 4 5 63 0');
    expect(t.decode([62, 64])).toBe('62 \uFFFD');
    expect(t.state()).toEqual({ type: 'NullTokenizer', vocabSize: 64 });
    for (const text of ['3 64', '3 x', '-1', '2.5'])
      expect(() => t.encode(text), text).toThrow(/^NullTokenizer: '.+' is not a token id below 64/);
    expect(() => new NullTokenizer(1)).toThrow(/at least 2 ids/);
  });
});
