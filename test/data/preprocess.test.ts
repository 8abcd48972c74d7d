/**
 * `webtron preprocess-data` as a user runs it (the CLI, real worker threads): what it writes reads
 * back as the reference tokenizer's ids per document (tiktoken for GPT-2, TextEncoder for bytes, a
 * plain WordPiece for a Hugging Face tokenizer.json with ids past uint16); one and two workers
 * write the same bytes; malformed lines stop the run with their line number and leave a complete
 * earlier output untouched, or are reported and skipped.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { get_encoding } from 'tiktoken';
import { afterAll, describe, expect, it } from 'vitest';
import { IndexedDataset } from '../../src/data/indexed.js';
import { seeded } from '../helpers/seed.js';
import { trickyText } from '../helpers/tricky-text.js';
import { addedToken } from '../helpers/added-token.js';

const BIN = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'webtron-preprocess-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function preprocess(args: string[]) {
  const r = spawnSync('node', [BIN, 'preprocess-data', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function readAll(prefix: string): { dtype: string; docs: number[][] } {
  const ds = IndexedDataset.open(prefix);
  try {
    return { dtype: ds.dtype, docs: Array.from({ length: ds.documentCount }, (_, d) => [...ds.document(d)]) };
  } finally {
    ds.close();
  }
}

describe('webtron preprocess-data', () => {
  it("JSON lines with GPT-2 BPE and --append-eod: each document is tiktoken's ids and <|endoftext|>; 1 and 2 workers write the same bytes", () => {
    const { random } = seeded('preprocess GPT-2');
    const texts = Array.from({ length: 300 }, (_, i) => (i % 37 === 5 ? '' : trickyText(random, 1 + Math.floor(random() * 60))));
    const input = join(dir, 'corpus.jsonl');
    writeFileSync(input, `${texts.map((text, i) => JSON.stringify({ id: i, text, title: `T${i}` })).join('\n')}\n`);
    const outputs = [1, 2].map((workers) => {
      const prefix = join(dir, `gpt2-w${workers}`);
      const r = preprocess([
        '--input',
        input,
        '--output-prefix',
        prefix,
        '--tokenizer-type',
        'GPT2BPETokenizer',
        '--append-eod',
        '--workers',
        String(workers),
        '--json-keys',
        'text',
        'title',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`300 documents, .* tokens \\(uint16\\) .*${workers} worker`));
      return prefix;
    });
    const reference = get_encoding('gpt2');
    const expected = texts.filter((t) => t !== '').map((t) => [...reference.encode_ordinary(t), 50256]);
    const titles = texts.map((_, i) => [...reference.encode_ordinary(`T${i}`), 50256]);
    reference.free();
    for (const prefix of outputs) {
      expect(readAll(`${prefix}_text_document`)).toEqual({ dtype: 'uint16', docs: expected });
      expect(readAll(`${prefix}_title_document`).docs).toEqual(titles);
    }
    for (const ext of ['bin', 'idx'])
      expect(readFileSync(`${outputs[1]}_text_document.${ext}`).equals(readFileSync(`${outputs[0]}_text_document.${ext}`))).toBe(true);
  });

  it('a text file with ByteTokenizer: one document per paragraph, its UTF-8 bytes', () => {
    const { random } = seeded('preprocess text');
    const paragraphs = Array.from({ length: 50 }, () => trickyText(random, 1 + Math.floor(random() * 30)).trim() || 'x');
    const input = join(dir, 'book.txt');
    writeFileSync(input, `\n\n${paragraphs.join('\n\n\n')}\n`);
    const r = preprocess(['--input', input, '--output-prefix', join(dir, 'book'), '--tokenizer-type', 'ByteTokenizer', '--workers', '2']);
    expect(r.code, r.stderr).toBe(0);
    const expected = paragraphs
      .flatMap((p) => p.split(/\n[ \t]*\n/))
      .map((p) => p.trim())
      .filter((p) => p !== '');
    expect(readAll(join(dir, 'book_text_document')).docs).toEqual(expected.map((p) => [...new TextEncoder().encode(p)]));
  });

  it("NullTokenizer: each document's ids as written, the end of document vocab-size - 1; an id past the vocabulary, or no --vocab-size, is one line", () => {
    const { random } = seeded('preprocess null tokenizer');
    const docs = Array.from({ length: 40 }, () => Array.from({ length: 1 + Math.floor(random() * 20) }, () => Math.floor(random() * 299)));
    const input = join(dir, 'ids.jsonl');
    writeFileSync(input, docs.map((d) => JSON.stringify({ text: d.join(' ') })).join('\n'));
    const args = ['--input', input, '--output-prefix', join(dir, 'ids'), '--tokenizer-type', 'NullTokenizer'];
    const r = preprocess([...args, '--vocab-size', '300', '--append-eod']);
    expect(r.code, r.stderr).toBe(0);
    expect(readAll(join(dir, 'ids_text_document')).docs).toEqual(docs.map((d) => [...d, 299]));
    for (const [more, message] of [
      [[], /^webtron preprocess-data: --tokenizer-type NullTokenizer needs --vocab-size/],
      [
        ['--vocab-size', '100'],
        /ids\.jsonl line \d+: NullTokenizer: '\d+' is not a token id below 100; its text is ids separated by spaces.*; fix or remove the line, or give --on-bad-line skip$/,
      ],
    ] as const) {
      const bad = preprocess([...args, ...more]);
      expect(bad.code).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
      expect(bad.stderr.trim()).toMatch(message);
    }
  });

  it('a Hugging Face WordPiece tokenizer.json with ids past 65535: int32 tokens, equal to a plain WordPiece', () => {
    const words = ['[UNK]', '[SEP]', 'the', 'whale', 'ship', 'sea', 'ahab', 'white', 'call', 'me', 'ish', '##mael', '.', ',', '##s', '!'];
    const vocab = Object.fromEntries(words.map((w, i) => [w, i === 0 ? 0 : 70_000 + i]));
    const tokenizer = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [addedToken(0, '[UNK]'), addedToken(70_001, '[SEP]')],
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: null,
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    };
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '[SEP]' }));
    /** Lowercase, split at spaces and punctuation, longest match first with ## continuations, [UNK] for a word that does not split. */
    const wordPiece = (text: string): number[] =>
      (text.toLowerCase().match(/[a-z0-9]+|[^\sa-z0-9]/g) ?? []).flatMap((word) => {
        const out: number[] = [];
        for (let start = 0; start < word.length; ) {
          let end = word.length;
          for (; end > start; end--) if (`${start > 0 ? '##' : ''}${word.slice(start, end)}` in vocab) break;
          if (end === start) return [0];
          out.push(vocab[`${start > 0 ? '##' : ''}${word.slice(start, end)}`]!);
          start = end;
        }
        return out;
      });
    const { random } = seeded('preprocess WordPiece');
    const pool = ['Call', 'me', 'Ishmael', 'the', 'WHITE', 'whales', 'ship', 'sea', 'Ahab', 'zebra', '.', ',', '!', ' ', '  '];
    const texts = Array.from({ length: 40 }, () =>
      Array.from({ length: 1 + Math.floor(random() * 12) }, () => pool[Math.floor(random() * pool.length)]).join(' '),
    );
    const input = join(dir, 'wp.jsonl');
    writeFileSync(input, texts.map((text) => JSON.stringify({ text })).join('\n'));
    const prefix = join(dir, 'wp');
    const r = preprocess([
      '--input',
      input,
      '--output-prefix',
      prefix,
      '--tokenizer-type',
      'HuggingFaceTokenizer',
      '--tokenizer-model',
      dir,
      '--append-eod',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\(int32\)/);
    // A document of no tokens is dropped, end-of-document token and all (as Megatron's).
    expect(readAll(`${prefix}_text_document`)).toEqual({
      dtype: 'int32',
      docs: texts
        .map(wordPiece)
        .filter((ids) => ids.length > 0)
        .map((ids) => [...ids, 70_001]),
    });
  });

  it('malformed lines: stop at the first with its line number, nothing replaced; or --on-bad-line skip reports each and goes on', () => {
    const lines = [
      JSON.stringify({ text: 'one' }),
      JSON.stringify({ text: 'two' }),
      '{"text": "three"', // line 3: not JSON
      JSON.stringify({ text: 'four' }),
      JSON.stringify({ body: 'five' }), // line 5: no key "text"
      JSON.stringify({ text: 'six' }),
      'BAD', // line 7: replaced by bytes that are not UTF-8
      JSON.stringify({ text: 7 }), // line 8: not a string
      JSON.stringify({ text: 'nine' }),
    ];
    const bytes = Buffer.from(`${lines.join('\n')}\n`);
    const at = bytes.indexOf('BAD');
    bytes[at] = 0xff;
    bytes[at + 1] = 0xfe;
    const input = join(dir, 'bad.jsonl');
    writeFileSync(input, bytes);
    const prefix = join(dir, 'bad');
    const good = preprocess(['--input', input, '--output-prefix', prefix, '--tokenizer-type', 'ByteTokenizer', '--on-bad-line', 'skip']);
    expect(good.code, good.stderr).toBe(0);
    const reports = good.stderr.trim().split('\n');
    expect(reports).toHaveLength(4);
    expect(reports[0]).toMatch(/bad\.jsonl line 3: not JSON .*; skipped$/);
    expect(reports[1]).toMatch(/bad\.jsonl line 5: no key "text"; skipped$/);
    expect(reports[2]).toMatch(/bad\.jsonl line 7: not UTF-8; skipped$/);
    expect(reports[3]).toMatch(/bad\.jsonl line 8: "text" is not a string; skipped$/);
    expect(good.stdout).toMatch(/5 documents, .*; 4 malformed lines skipped/);
    const kept = readAll(`${prefix}_text_document`).docs.map((d) => Buffer.from(d).toString());
    expect(kept).toEqual(['one', 'two', 'four', 'six', 'nine']);
    const before = ['bin', 'idx'].map((e) => readFileSync(`${prefix}_text_document.${e}`));
    const stop = preprocess(['--input', input, '--output-prefix', prefix, '--tokenizer-type', 'ByteTokenizer']);
    expect(stop.code).toBe(2);
    expect(stop.stdout).toBe('');
    expect(stop.stderr.trim().split('\n')).toHaveLength(1);
    expect(stop.stderr).toMatch(
      /^webtron preprocess-data: .*bad\.jsonl line 3: not JSON .*; fix or remove the line, or give --on-bad-line skip$/m,
    );
    expect(['bin', 'idx'].map((e) => readFileSync(`${prefix}_text_document.${e}`))).toEqual(before);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});
