/**
 * GPT samples from indexed datasets (src/data/gpt-dataset.ts) and Megatron's blends
 * (src/data/blend.ts), against plain references: the documents concatenated in the epoch's order
 * and sliced, Megatron's blending loop run by Python, and the split's document ranges.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BlendingIndex, parseDataPath } from '../../src/data/blend.js';
import { splitRanges } from '../../src/data/corpus.js';
import { IndexedGptSamples, openIndexedGptData } from '../../src/data/gpt-dataset.js';
import { IndexedDataset, IndexedDatasetBuilder } from '../../src/data/indexed.js';
import { seeded } from '../helpers/seed.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-gpt-dataset-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A dataset of random documents (1–3 sequences of 0–30 tokens, some documents empty); returns its prefix and documents. */
function makeDataset(name: string, random: () => number, count: number, vocab: number): { prefix: string; docs: number[][] } {
  const prefix = join(dir, name);
  const builder = new IndexedDatasetBuilder(prefix, 'uint16');
  const docs: number[][] = [];
  for (let d = 0; d < count; d++) {
    const sequences = Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
      Array.from({ length: random() < 0.1 ? 0 : Math.floor(random() * 31) }, () => Math.floor(random() * vocab)),
    );
    builder.addDocument(sequences);
    docs.push(sequences.flat());
  }
  builder.finish();
  return { prefix, docs };
}

const T = 7;

describe('samples of an indexed dataset', () => {
  it('validation: sample k is tokens k·T .. k·T + T of the documents in file order', () => {
    const { random } = seeded('indexed samples in order');
    const { prefix, docs } = makeDataset('ordered', random, 40, 500);
    const ds = IndexedDataset.open(prefix);
    const range: [number, number] = [5, 33];
    const samples = new IndexedGptSamples(ds, ds.documentLengths(), range, T, 1, false, 500);
    const stream = docs.slice(...range).flat();
    expect(samples.count).toBe(Math.floor((stream.length - 1) / T));
    const { ids, targets } = samples.batch(0, samples.count + 3); // past the end: from the start again
    for (let g = 0; g < samples.count + 3; g++) {
      const k = g % samples.count;
      expect([...ids.subarray(g * T, g * T + T)]).toEqual(stream.slice(k * T, k * T + T));
      expect([...targets.subarray(g * T, g * T + T)]).toEqual(stream.slice(k * T + 1, k * T + T + 1));
    }
    ds.close();
  });

  it('training: each epoch lays its documents out in a new order and visits every window of that stream once', () => {
    const { random, seed } = seeded('indexed samples shuffled');
    const { prefix, docs } = makeDataset('shuffled', random, 60, 500);
    const ds = IndexedDataset.open(prefix);
    const range: [number, number] = [0, 60];
    const samples = new IndexedGptSamples(ds, ds.documentLengths(), range, T, seed, true, 500);
    const n = samples.count;
    const orders: number[][] = [];
    for (let epoch = 0; epoch < 3; epoch++) {
      const order = [...samples.documentOrder(epoch)];
      expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
      orders.push(order);
      const stream = order.flatMap((d) => docs[d]!);
      const windows = Array.from({ length: n }, (_, k) => stream.slice(k * T, k * T + T + 1).join());
      const { ids, targets } = samples.batch(epoch * n, n);
      const seen = new Set<number>();
      for (let i = 0; i < n; i++) {
        const window = [...ids.subarray(i * T, i * T + T), targets[i * T + T - 1]!].join();
        const k = windows.indexOf(window);
        expect(k, `epoch ${epoch}, sample ${i}`).toBeGreaterThanOrEqual(0);
        seen.add(k);
      }
      expect(seen.size).toBe(n); // every window once (windows could repeat only if the data did)
    }
    expect(orders[1]).not.toEqual(orders[0]);
    expect(orders[2]).not.toEqual(orders[1]);
    // A sample is a function of the seed and its global index: batches cut differently, or read by a fresh reader backwards, agree.
    const whole = samples.batch(3, 2 * n);
    const fresh = new IndexedGptSamples(ds, ds.documentLengths(), range, T, seed, true, 500);
    const parts = [5, n, n - 5].reduce<{ at: number; ids: number[] }>(
      (acc, size) => ({ at: acc.at + size, ids: [...acc.ids, ...fresh.batch(3 + acc.at, size).ids] }),
      { at: 0, ids: [] },
    );
    expect(parts.ids).toEqual([...whole.ids]);
    for (let g = 2 * n + 2; g >= 3; g -= 7) expect([...fresh.batch(g, 1).ids]).toEqual([...whole.ids.subarray((g - 3) * T, (g - 2) * T)]);
    ds.close();
  });

  it('a token past the vocabulary is one error naming the dataset', () => {
    const { random } = seeded('indexed vocab check');
    const { prefix } = makeDataset('vocab', random, 10, 300);
    const ds = IndexedDataset.open(prefix);
    const samples = new IndexedGptSamples(ds, ds.documentLengths(), [0, 10], T, 1, false, 200);
    expect(() => samples.batch(0, samples.count)).toThrow(/vocab: token id \d+ is past the tokenizer's vocabulary of 200/);
    ds.close();
  });
});

describe("Megatron's blends", () => {
  it('parses --data-path: one prefix, weights and prefixes (normalized), prefixes alone', () => {
    expect(parseDataPath(['a'])).toEqual([{ weight: 1, path: 'a' }]);
    expect(parseDataPath(['0.7', 'a', '0.3', 'b'])).toEqual([
      { weight: 0.7, path: 'a' },
      { weight: 0.3, path: 'b' },
    ]);
    expect(parseDataPath(['2', 'a', '6', 'b']).map((e) => e.weight)).toEqual([0.25, 0.75]);
    expect(parseDataPath(['a', 'b'])).toEqual([
      { weight: null, path: 'a' },
      { weight: null, path: 'b' },
    ]);
    expect(() => parseDataPath(['0.7', 'a', '0.3'])).toThrow(/weights and prefixes must pair up/);
    expect(() => parseDataPath(['0.7', 'a', 'b', 'c'])).toThrow(/'b' stands where a weight goes/);
    expect(() => parseDataPath(['a', '0.5'])).toThrow(/looks like a weight/);
    expect(() => parseDataPath(['0', 'a', '0', 'b'])).toThrow(/sum to 0/);
  });

  it("the blending index equals Megatron's build_blending_indices (run by Python) and gives no dataset more than one sample over its share", (ctx) => {
    if (!existsSync('/usr/bin/python3')) {
      console.log('skipped: /usr/bin/python3 is not installed, so Python cannot give the reference blending index');
      ctx.skip();
    }
    const { random } = seeded('blending index');
    for (let trial = 0; trial < 5; trial++) {
      const raw = Array.from({ length: 1 + Math.floor(random() * 4) }, () => 0.05 + random());
      const weights = raw.map((w) => w / raw.reduce((a, b) => a + b, 0));
      const size = 500 + Math.floor(random() * 500);
      const python = `
import json, sys
weights = json.loads(sys.argv[1]); size = int(sys.argv[2])
current = [0] * len(weights); out = []
for sample_idx in range(size):
    s = max(sample_idx, 1.0)
    best = 0; best_error = weights[0] * s - current[0]
    for i in range(1, len(weights)):
        error = weights[i] * s - current[i]
        if error > best_error:
            best_error = error; best = i
    out.append([best, current[best]]); current[best] += 1
print(json.dumps(out))`;
      const r = spawnSync('/usr/bin/python3', ['-c', python, JSON.stringify(weights), String(size)], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const expected = JSON.parse(r.stdout) as [number, number][];
      const index = new BlendingIndex(weights);
      // Built in two growths, read out of order.
      index.at(size >> 1);
      const got = Array.from({ length: size }, (_, g) => index.at(size - 1 - g))
        .reverse()
        .map(({ dataset, sample }) => [dataset, sample]);
      expect(got).toEqual(expected);
      // A dataset is picked only while its deficit is the largest, and deficits sum to at most 1, so
      // none gets more than one sample over its share; the excesses sum to the shortfalls, so none
      // falls more than (datasets - 1) samples short.
      for (const [k, w] of weights.entries()) {
        const excess = got.filter(([d]) => d === k).length - w * size;
        expect(excess).toBeLessThanOrEqual(1 + 1e-9);
        expect(excess).toBeGreaterThanOrEqual(-(weights.length - 1) - 1e-9);
      }
    }
  });

  it('a blend of two datasets: each sample is that dataset’s sample the index names; splits are by documents', () => {
    const { random, seed } = seeded('blended data');
    const a = makeDataset('blend-a', random, 50, 400);
    const b = makeDataset('blend-b', random, 30, 400);
    const split: [number, number, number] = [0.8, 0.2, 0];
    const data = openIndexedGptData(parseDataPath(['0.7', a.prefix, '0.3', b.prefix]), { split, seqLength: T, seed, vocabSize: 400 });
    const index = new BlendingIndex([0.7, 0.3]);
    const own = [a, b].map(({ prefix }) => {
      const ds = IndexedDataset.open(prefix);
      const [train, valid] = splitRanges(ds.documentCount, split);
      return {
        ds,
        train: new IndexedGptSamples(ds, ds.documentLengths(), train!, T, seed, true, 400),
        valid: new IndexedGptSamples(ds, ds.documentLengths(), valid!, T, seed, false, 400),
      };
    });
    const n = 3 * (own[0]!.train.count + own[1]!.train.count);
    const got = data.train.batch(0, n);
    for (let g = 0; g < n; g++) {
      const { dataset, sample } = index.at(g);
      expect([...got.ids.subarray(g * T, (g + 1) * T)]).toEqual([...own[dataset]!.train.batch(sample, 1).ids]);
    }
    const validIds = data.valid!.batch(0, 20).ids;
    const validIndex = new BlendingIndex([0.7, 0.3]);
    for (let g = 0; g < 20; g++) {
      const { dataset, sample } = validIndex.at(g);
      expect([...validIds.subarray(g * T, (g + 1) * T)]).toEqual([...own[dataset]!.valid.batch(sample, 1).ids]);
    }
    // The train split holds exactly the first 80% of the documents.
    const [train] = splitRanges(50, split);
    expect(own[0]!.train.tokens).toBe(a.docs.slice(...train!).flat().length);
    for (const o of own) o.ds.close();
    for (const d of data.datasets) d.close();
  });
});
