/**
 * The data layer against independent references: tokenizers against TextEncoder/TextDecoder and
 * Array.from, Megatron's split indices against its formula run by Python (whose round() is the
 * reference for halves), entropies against a direct count, and samples against a plain reading of
 * the token stream.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { entropies, splitRanges } from '../../src/data/corpus.js';
import { GptSamples, permutation } from '../../src/data/samples.js';
import { ByteTokenizer, CharTokenizer, paddedVocabSize, loadTokenizer } from '../../src/data/tokenizer.js';
import { IGNORED_TARGET } from '../../src/nn/ops.js';
import { countedTargets, eodMasked } from '../../src/train/data.js';
import { seeded } from '../helpers/seed.js';

const ALPHABET = ['a', 'b', 'é', ' ', '\n', '日', '😀', 'Z', '.'];

function randomText(random: () => number, length: number): string {
  return Array.from({ length }, () => ALPHABET[Math.floor(random() * ALPHABET.length)]!).join('');
}

describe('tokenizers', () => {
  it('CharTokenizer: one id per code point, in code point order, and back', async () => {
    const { random } = seeded('CharTokenizer');
    const text = randomText(random, 2000);
    const tokenizer = CharTokenizer.fromText(text);
    const chars = [...new Set(Array.from(text))].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    expect(tokenizer.vocabSize).toBe(chars.length);
    const ids = tokenizer.encode(text);
    expect(Array.from(ids)).toEqual(Array.from(text).map((c) => chars.indexOf(c)));
    expect(tokenizer.decode(ids)).toBe(text);
    const restored = await loadTokenizer(JSON.parse(JSON.stringify(tokenizer.state())));
    expect(Array.from(restored.encode(text))).toEqual(Array.from(ids));
    expect(() => tokenizer.encode('q')).toThrow(/character "q" \(U\+0071\) is not in the vocabulary/);
    // Lone surrogates are characters of their own, as Array.from splits them; a pair is one.
    const odd = 'a\uD800b\uDFFF\uD83D\uDE00\uDC00\uD800';
    const oddTokenizer = CharTokenizer.fromText(odd);
    const oddChars = [...new Set(Array.from(odd))].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    expect(oddTokenizer.state()).toEqual({ type: 'CharTokenizer', chars: oddChars });
    expect(Array.from(oddTokenizer.encode(odd))).toEqual(Array.from(odd).map((c) => oddChars.indexOf(c)));
    expect(oddTokenizer.decode(oddTokenizer.encode(odd))).toBe(odd);
  });

  it('ByteTokenizer: the UTF-8 bytes, and back', async () => {
    const { random } = seeded('ByteTokenizer');
    const text = randomText(random, 2000);
    const tokenizer = new ByteTokenizer();
    const ids = tokenizer.encode(text);
    expect(Array.from(ids)).toEqual(Array.from(new TextEncoder().encode(text)));
    expect(tokenizer.decode(ids)).toBe(text);
    expect((await loadTokenizer(tokenizer.state())).vocabSize).toBe(256);
  });

  it('pads the vocabulary to the next multiple', () => {
    expect([paddedVocabSize(89, 8), paddedVocabSize(96, 8), paddedVocabSize(50257, 128)]).toEqual([96, 96, 50304]);
  });
});

describe('corpus', () => {
  it("splits documents by Megatron's formula (Python's round as the reference)", (ctx) => {
    if (!existsSync('/usr/bin/python3')) {
      console.log('skipped: /usr/bin/python3 is not installed, so Python cannot give the reference split');
      ctx.skip();
    }
    const { random } = seeded('split');
    const cases: { count: number; split: number[] }[] = [
      { count: 10, split: [0.25, 0.25, 0.5] }, // halves: 2.5 rounds to 2
      { count: 14, split: [0.25, 0.25, 0.5] }, // 3.5 rounds to 4
      { count: 137, split: [969 / 1000, 30 / 1000, 1 / 1000] },
      { count: 3, split: [0.9, 0.1, 0] },
      ...Array.from({ length: 40 }, () => {
        const raw = [random(), random(), random() * 0.2];
        const sum = raw[0]! + raw[1]! + raw[2]!;
        return { count: 1 + Math.floor(random() * 500), split: raw.map((v) => v / sum) };
      }),
    ];
    // Megatron's get_split_index on normalized proportions, as Python runs it.
    const script = `
import json, sys
out = []
for case in json.load(sys.stdin):
    size, splits = case["count"], case["split"]
    index = [0]
    for i, s in enumerate(splits):
        index.append(index[i] + int(round(s * float(size))))
    diff = index[-1] - size
    for i in range(1, len(index)):
        index[i] -= diff
    out.append([[max(0, index[i]), max(0, index[i + 1])] for i in range(3)])
print(json.dumps(out))`;
    const python = spawnSync('/usr/bin/python3', ['-c', script], { input: JSON.stringify(cases), encoding: 'utf8' });
    expect(python.status, python.stderr).toBe(0);
    const expected = JSON.parse(python.stdout) as number[][][];
    for (const [i, c] of cases.entries())
      expect(splitRanges(c.count, c.split as [number, number, number]), JSON.stringify(c)).toEqual(expected[i]);
  });

  it('entropies equal a direct count', () => {
    const { random } = seeded('entropies');
    const tokens = Uint32Array.from({ length: 5000 }, () => Math.floor(random() * random() * 30));
    const n = tokens.length;
    const count = (pred: (i: number) => boolean, upto: number) => {
      let c = 0;
      for (let i = 0; i < upto; i++) if (pred(i)) c++;
      return c;
    };
    let unigram = 0;
    let bigram = 0;
    for (let a = 0; a < 30; a++) {
      const ca = count((i) => tokens[i] === a, n);
      if (ca > 0) unigram -= (ca / n) * Math.log(ca / n);
      const prev = count((i) => tokens[i] === a, n - 1);
      for (let b = 0; b < 30; b++) {
        const cab = count((i) => tokens[i] === a && tokens[i + 1] === b, n - 1);
        if (cab > 0) bigram -= (cab / (n - 1)) * Math.log(cab / prev);
      }
    }
    const got = entropies(tokens);
    expect(got.unigram).toBeCloseTo(unigram, 12);
    expect(got.bigram).toBeCloseTo(bigram, 12);
    // Pairs of a 5000-token vocabulary over 5000 tokens: nearly every pair seen once, no bigram figure.
    const sparse = Uint32Array.from({ length: 5000 }, () => Math.floor(random() * 5000));
    expect(entropies(sparse).bigram).toBeNull();
  });
});

describe('samples', () => {
  it('every epoch visits every window once, and a sample depends on the seed and its global index only', () => {
    const { random } = seeded('samples');
    const tokens = Uint32Array.from({ length: 1000 }, () => Math.floor(random() * 50));
    const t = 16;
    const windows = Math.floor((tokens.length - 1) / t);
    const samples = new GptSamples(tokens, t, 7);
    expect(samples.count).toBe(windows);
    for (const epoch of [0, 1, 2]) {
      const seen = Array.from({ length: windows }, (_, k) => samples.window(epoch * windows + k)).sort((a, b) => a - b);
      expect(seen).toEqual(Array.from({ length: windows }, (_, k) => k));
    }
    expect(Array.from({ length: windows }, (_, k) => samples.window(k))).not.toEqual(
      Array.from({ length: windows }, (_, k) => samples.window(windows + k)),
    );
    // Reading global indices 0..99 as one batch, or in micro-batches out of order from a second object, gives the same samples.
    const whole = samples.batch(0, 100);
    const other = new GptSamples(tokens, t, 7);
    for (const first of [96, 0, 40, 8, 72, 24, 56, 88, 16, 64, 32, 80, 48]) {
      const part = other.batch(first, Math.min(8, 100 - first));
      expect(Array.from(part.ids)).toEqual(Array.from(whole.ids.subarray(first * t, (first + part.ids.length / t) * t)));
    }
    for (let k = 0; k < 100; k++) {
      const w = samples.window(k);
      expect(Array.from(whole.ids.subarray(k * t, (k + 1) * t))).toEqual(Array.from(tokens.subarray(w * t, w * t + t)));
      expect(Array.from(whole.targets.subarray(k * t, (k + 1) * t))).toEqual(Array.from(tokens.subarray(w * t + 1, w * t + t + 1)));
    }
    expect(Array.from(new GptSamples(tokens, t, 8).batch(0, 100).ids)).not.toEqual(Array.from(whole.ids));
    const validation = new GptSamples(tokens, t, 7, false);
    expect(Array.from({ length: windows + 2 }, (_, k) => validation.window(k))).toEqual([
      ...Array.from({ length: windows }, (_, k) => k),
      0,
      1,
    ]);
  });

  it('--eod-mask-loss: a target is masked exactly where its input is the end-of-document token, and counted elsewhere', () => {
    const { random } = seeded('eod-masked samples');
    const eod = 3;
    const tokens = Uint32Array.from({ length: 600 }, () => Math.floor(random() * 8)); // an eighth of them eod
    const t = 16;
    const plain = new GptSamples(tokens, t, 5);
    const masked = eodMasked(new GptSamples(tokens, t, 5), eod);
    expect([masked.count, masked.seqLength]).toEqual([plain.count, plain.seqLength]);
    const want = plain.batch(4, 6);
    const got = masked.batch(4, 6);
    expect(Array.from(got.ids)).toEqual(Array.from(want.ids));
    let counted = 0;
    for (let i = 0; i < want.ids.length; i++) {
      expect(got.targets[i], `token ${i}`).toBe(want.ids[i] === eod ? IGNORED_TARGET : want.targets[i]);
      if (want.ids[i] !== eod) counted += 1;
    }
    expect(counted).toBeLessThan(want.ids.length);
    expect(countedTargets(got.targets)).toBe(counted);
    expect(countedTargets(want.targets)).toBe(want.targets.length);
  });

  it('permutation is a permutation', () => {
    const p = Array.from(permutation(1000, 3)).sort((a, b) => a - b);
    expect(p).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(() => new GptSamples(new Uint32Array(10), 16, 1)).toThrow(/has no sample of 17 tokens; use a shorter --seq-length or more text/);
  });
});
