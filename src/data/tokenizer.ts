/**
 * Tokenizers behind one interface, chosen by Megatron's --tokenizer-type and saved with a run and
 * its checkpoints (the state holds everything needed, no paths), so that sampling and export
 * decode with the same one:
 *
 * - CharTokenizer: one token per Unicode code point of the training text, in code point order.
 * - ByteTokenizer: the 256 byte values of UTF-8.
 * - GPT2BPETokenizer: GPT-2's byte-level BPE (50,257 tokens, `<|endoftext|>` the end of document);
 *   built in from the npm package gpt-tokenizer (its r50k_base ranks are GPT-2's), or from
 *   --vocab-file vocab.json --merge-file merges.txt through @huggingface/tokenizers. Text is
 *   encoded as ordinary text: a literal "<|endoftext|>" in a document is not the special token,
 *   as in GPT-2's own encoder.
 * - HuggingFaceTokenizer: a tokenizer.json (--tokenizer-model: the file, or a folder holding it and
 *   optionally tokenizer_config.json) through @huggingface/tokenizers, special tokens added as the
 *   Hugging Face tokenizer adds them (Megatron calls it the same way).
 * - NullTokenizer: Megatron's, for --mock-data and data already in ids: --vocab-size V ids, V - 1
 *   the end of document; text is ids separated by spaces, both ways.
 *
 * The packages load on first use (loadTokenizer is async), so commands that never tokenize do not
 * pay for them.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';

export const TOKENIZER_TYPES = ['CharTokenizer', 'ByteTokenizer', 'GPT2BPETokenizer', 'HuggingFaceTokenizer', 'NullTokenizer'] as const;
export type TokenizerType = (typeof TOKENIZER_TYPES)[number];

type Json = Record<string, unknown>;

export type TokenizerState =
  | { type: 'CharTokenizer'; chars: string[] }
  | { type: 'ByteTokenizer' }
  /** Without vocab and merges: the built-in GPT-2 files of gpt-tokenizer. */
  | { type: 'GPT2BPETokenizer'; vocab?: Record<string, number>; merges?: string[] }
  | { type: 'HuggingFaceTokenizer'; tokenizer: Json; config?: Json }
  | { type: 'NullTokenizer'; vocabSize: number };

export interface Tokenizer {
  readonly type: TokenizerType;
  /** Tokens the tokenizer can produce (before the model's padding). */
  readonly vocabSize: number;
  /** The end-of-document token that --append-eod appends, or null where the tokenizer has none. */
  readonly eod: number | null;
  encode(text: string): Uint32Array;
  /** Ids past the vocabulary (the model's padding) decode as U+FFFD. */
  decode(ids: ArrayLike<number>): string;
  state(): TokenizerState;
}

export class CharTokenizer implements Tokenizer {
  readonly type = 'CharTokenizer' as const;
  readonly eod = null;
  /** Ids by code point: a table for the Basic Multilingual Plane (-1: not in the vocabulary), a map past it. */
  private readonly bmp = new Int32Array(0x10000).fill(-1);
  private readonly astral = new Map<number, number>();

  constructor(private readonly chars: readonly string[]) {
    for (const [i, c] of chars.entries()) {
      const point = c.codePointAt(0)!;
      const seen = point < 0x10000 ? this.bmp[point]! >= 0 : this.astral.has(point);
      if (seen) throw new ConfigError('CharTokenizer: the vocabulary holds a character twice', 'tokenizerType');
      if (point < 0x10000) this.bmp[point] = i;
      else this.astral.set(point, i);
    }
  }

  /** The code points of `text`, sorted: the vocabulary (a lone surrogate is one, as Array.from splits text). */
  static fromText(text: string): CharTokenizer {
    // Code point by code point, without a string per character (Array.from's): 3 ms instead of 49
    // for Moby-Dick's 1.2M characters, which every rank reads at start-up.
    const inBmp = new Uint8Array(0x10000);
    const astral = new Set<number>();
    for (let i = 0; i < text.length; ) {
      const point = text.codePointAt(i)!;
      if (point < 0x10000) inBmp[point] = 1;
      else astral.add(point);
      i += point < 0x10000 ? 1 : 2;
    }
    const points: number[] = [];
    for (let p = 0; p < 0x10000; p++) if (inBmp[p]) points.push(p);
    points.push(...[...astral].sort((a, b) => a - b));
    return new CharTokenizer(points.map((p) => String.fromCodePoint(p)));
  }

  get vocabSize(): number {
    return this.chars.length;
  }

  encode(text: string): Uint32Array {
    const out = new Uint32Array(text.length); // at most one id per UTF-16 unit
    let n = 0;
    for (let i = 0; i < text.length; ) {
      const point = text.codePointAt(i)!;
      const id = point < 0x10000 ? this.bmp[point]! : (this.astral.get(point) ?? -1);
      if (id < 0)
        throw new ConfigError(
          `CharTokenizer: character ${JSON.stringify(String.fromCodePoint(point))} (U+${point.toString(16).toUpperCase().padStart(4, '0')}) is not in the vocabulary of the training text; use characters it has, or ByteTokenizer`,
          'tokenizerType',
        );
      out[n++] = id;
      i += point < 0x10000 ? 1 : 2;
    }
    return n === out.length ? out : out.slice(0, n);
  }

  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) s += this.chars[ids[i]!] ?? '\uFFFD';
    return s;
  }

  state(): TokenizerState {
    return { type: 'CharTokenizer', chars: [...this.chars] };
  }
}

export class ByteTokenizer implements Tokenizer {
  readonly type = 'ByteTokenizer' as const;
  readonly vocabSize = 256;
  readonly eod = null;

  encode(text: string): Uint32Array {
    return Uint32Array.from(Buffer.from(text, 'utf8'));
  }

  decode(ids: ArrayLike<number>): string {
    return Buffer.from(Array.from({ length: ids.length }, (_, i) => ids[i]! & 0xff)).toString('utf8');
  }

  state(): TokenizerState {
    return { type: 'ByteTokenizer' };
  }
}

/**
 * Megatron's NullTokenizer: ids 0 to vocabSize - 1, the last the end of document, and text that is
 * those ids in decimal separated by spaces (what its text_to_ids and ids_to_text read and write).
 */
export class NullTokenizer implements Tokenizer {
  readonly type = 'NullTokenizer' as const;
  readonly eod: number;

  constructor(readonly vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize < 2)
      throw new ConfigError(`NullTokenizer: the vocabulary must be an integer of at least 2 ids, got ${vocabSize}`, 'tokenizerVocabSize');
    this.eod = vocabSize - 1;
  }

  encode(text: string): Uint32Array {
    const words = text.split(/\s+/).filter((w) => w !== '');
    return Uint32Array.from(words, (w) => {
      const id = /^\d+$/.test(w) ? Number(w) : Number.NaN;
      if (!(id < this.vocabSize))
        throw new ConfigError(
          `NullTokenizer: '${w}' is not a token id below ${this.vocabSize}; its text is ids separated by spaces, such as '3 4 5'`,
          'prompt',
        );
      return id;
    });
  }

  decode(ids: ArrayLike<number>): string {
    return Array.from({ length: ids.length }, (_, i) => (ids[i]! < this.vocabSize ? String(ids[i]) : '\uFFFD')).join(' ');
  }

  state(): TokenizerState {
    return { type: 'NullTokenizer', vocabSize: this.vocabSize };
  }
}

/** Decode ids below `vocabSize` with `decode`; every other id is U+FFFD. */
function decodeInVocab(ids: ArrayLike<number>, vocabSize: number, decode: (ids: number[]) => string): string {
  let out = '';
  let run: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < vocabSize) {
      run.push(id);
      continue;
    }
    if (run.length > 0) out += decode(run);
    run = [];
    out += '\uFFFD';
  }
  return run.length > 0 ? out + decode(run) : out;
}

/** GPT-2's BPE from gpt-tokenizer's r50k_base (GPT-2's vocabulary and merges). */
class BuiltinGpt2 implements Tokenizer {
  readonly type = 'GPT2BPETokenizer' as const;
  readonly vocabSize = 50257;
  readonly eod = 50256;
  private static readonly ORDINARY = { disallowedSpecial: new Set<string>() };

  constructor(private readonly bpe: typeof import('gpt-tokenizer/encoding/r50k_base')) {}

  encode(text: string): Uint32Array {
    return Uint32Array.from(this.bpe.encode(text, BuiltinGpt2.ORDINARY));
  }

  decode(ids: ArrayLike<number>): string {
    return decodeInVocab(ids, this.vocabSize, (run) => this.bpe.decode(run));
  }

  state(): TokenizerState {
    return { type: 'GPT2BPETokenizer' };
  }
}

type HfTokenizer = import('@huggingface/tokenizers').Tokenizer;

/** A tokenizer.json through @huggingface/tokenizers: GPT-2 from files, or any Hugging Face tokenizer. */
class HfBacked implements Tokenizer {
  readonly vocabSize: number;

  constructor(
    readonly type: 'GPT2BPETokenizer' | 'HuggingFaceTokenizer',
    private readonly hf: HfTokenizer,
    readonly eod: number | null,
    private readonly addSpecialTokens: boolean,
    private readonly saved: TokenizerState,
  ) {
    let max = -1;
    for (const id of hf.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  encode(text: string): Uint32Array {
    const { ids, tokens } = this.hf.encode(text, { add_special_tokens: this.addSpecialTokens });
    const bad = (ids as unknown[]).findIndex((id) => !Number.isInteger(id));
    if (bad >= 0)
      throw new ConfigError(
        `${this.type}: the tokenizer gives token ${JSON.stringify(tokens[bad])} no id (its vocabulary lacks it and it has no unknown token); use a complete tokenizer.json`,
        'tokenizerModel',
      );
    return Uint32Array.from(ids);
  }

  decode(ids: ArrayLike<number>): string {
    return decodeInVocab(ids, this.vocabSize, (run) =>
      this.hf.decode(run, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    );
  }

  state(): TokenizerState {
    return this.saved;
  }
}

/** A BPE tokenizer.json of `vocab` and `merges` with the given pre-tokenizer and decoder (byte-level, GPT-2's, by default). */
export function bpeTokenizerJson(
  vocab: Record<string, number>,
  merges: readonly string[],
  pieces: { preTokenizer?: Json; decoder?: Json } = {},
): Json {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: pieces.preTokenizer ?? byteLevel,
    post_processor: null,
    decoder: pieces.decoder ?? byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}

/** GPT-2's vocab.json and merges.txt as a byte-level BPE tokenizer.json (no added tokens: text is ordinary text). */
export function gpt2TokenizerJson(vocab: Record<string, number>, merges: readonly string[]): Json {
  return bpeTokenizerJson(vocab, merges);
}

/** The id of `config`'s eos_token, else of a usual end-of-text token the vocabulary holds. */
function hfEod(hf: HfTokenizer, config: Json | undefined): number | null {
  const eos = config?.eos_token;
  const named =
    typeof eos === 'string' ? eos : typeof (eos as Json | undefined)?.content === 'string' ? ((eos as Json).content as string) : null;
  for (const token of [named, '<|endoftext|>', '<|end_of_text|>', '</s>', '<eos>']) {
    const id = token === null ? undefined : hf.token_to_id(token);
    if (id !== undefined) return id;
  }
  return null;
}

/** The tokenizer a state describes (the packages load here). */
export async function loadTokenizer(state: TokenizerState): Promise<Tokenizer> {
  switch (state.type) {
    case 'CharTokenizer':
      return new CharTokenizer(state.chars);
    case 'ByteTokenizer':
      return new ByteTokenizer();
    case 'NullTokenizer':
      return new NullTokenizer(state.vocabSize);
    case 'GPT2BPETokenizer': {
      if (!state.vocab || !state.merges) return new BuiltinGpt2(await import('gpt-tokenizer/encoding/r50k_base'));
      const { Tokenizer: Hf } = await import('@huggingface/tokenizers');
      const hf = new Hf(gpt2TokenizerJson(state.vocab, state.merges), {});
      return new HfBacked('GPT2BPETokenizer', hf, state.vocab['<|endoftext|>'] ?? null, false, state);
    }
    case 'HuggingFaceTokenizer': {
      const { Tokenizer: Hf } = await import('@huggingface/tokenizers');
      let hf: HfTokenizer;
      try {
        hf = new Hf(state.tokenizer, state.config ?? {});
      } catch (error) {
        throw new ConfigError(
          `HuggingFaceTokenizer: @huggingface/tokenizers cannot build this tokenizer.json: ${(error as Error).message}`,
          'tokenizerModel',
        );
      }
      return new HfBacked('HuggingFaceTokenizer', hf, hfEod(hf, state.config), true, state);
    }
    default:
      throw new ConfigError(
        `unknown tokenizer type '${(state as { type: string }).type}'; webtron has ${TOKENIZER_TYPES.join(', ')}`,
        'tokenizerType',
      );
  }
}

export interface TokenizerFiles {
  vocabFile?: string | null;
  mergeFile?: string | null;
  tokenizerModel?: string | null;
}

/**
 * What is wrong with the tokenizer files given for `type`, in the flags' words (the file flags of
 * another tokenizer, a Hugging Face tokenizer without its model, half of GPT-2's pair), or null.
 * `webtron train` and `webtron preprocess-data` check their flags with it before reading anything.
 */
export function tokenizerFilesProblem(type: TokenizerType, { vocabFile, mergeFile, tokenizerModel }: TokenizerFiles): string | null {
  if ((vocabFile || mergeFile) && type !== 'GPT2BPETokenizer')
    return `--${vocabFile ? 'vocab-file' : 'merge-file'} is for --tokenizer-type GPT2BPETokenizer, not ${type}`;
  if (tokenizerModel && type !== 'HuggingFaceTokenizer')
    return `--tokenizer-model is for --tokenizer-type HuggingFaceTokenizer, not ${type}`;
  if (type === 'HuggingFaceTokenizer' && !tokenizerModel)
    return '--tokenizer-type HuggingFaceTokenizer needs --tokenizer-model (a tokenizer.json, or a folder holding one)';
  if (Boolean(vocabFile) !== Boolean(mergeFile))
    return `--vocab-file and --merge-file go together (or neither, for GPT-2's built-in files); got only --${vocabFile ? 'vocab-file' : 'merge-file'}`;
  return null;
}

function readJson(path: string, option: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `${option}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give ${what}`,
      option,
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${option}: ${path} is not JSON (${(error as Error).message}); give ${what}`, option);
  }
}

/**
 * The state of a GPT-2 or Hugging Face tokenizer read from its files (Char needs the text, Byte
 * nothing): every problem with the files is one ConfigError naming the file.
 */
export function readTokenizerFiles(type: 'GPT2BPETokenizer' | 'HuggingFaceTokenizer', files: TokenizerFiles): TokenizerState {
  if (type === 'GPT2BPETokenizer') {
    const { vocabFile, mergeFile } = files;
    if (!vocabFile && !mergeFile) return { type };
    if (!vocabFile || !mergeFile)
      throw new ConfigError(
        `GPT2BPETokenizer needs --vocab-file and --merge-file together (or neither, for the built-in GPT-2 files); got only ${vocabFile ? '--vocab-file' : '--merge-file'}`,
        vocabFile ? 'mergeFile' : 'vocabFile',
      );
    const vocab = readJson(vocabFile, 'vocabFile', "GPT-2's vocab.json (token to id)");
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab))
      throw new ConfigError(`vocabFile: ${vocabFile} is not an object of token to id; give GPT-2's vocab.json`, 'vocabFile');
    const ids = Object.entries(vocab as Record<string, unknown>);
    const bad = ids.find(([, id]) => !Number.isInteger(id) || (id as number) < 0);
    if (bad || ids.length === 0)
      throw new ConfigError(
        `vocabFile: ${vocabFile}: ${bad ? `token ${JSON.stringify(bad[0])} has id ${JSON.stringify(bad[1])}, not an integer >= 0` : 'no tokens'}; give GPT-2's vocab.json`,
        'vocabFile',
      );
    let text: string;
    try {
      text = readFileSync(mergeFile, 'utf8');
    } catch (error) {
      throw new ConfigError(
        `mergeFile: cannot read ${mergeFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give GPT-2's merges.txt`,
        'mergeFile',
      );
    }
    const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
    const merges: string[] = [];
    lines.forEach((line, i) => {
      if ((i === 0 && line.startsWith('#version')) || line.trim() === '') return;
      const parts = line.split(' ');
      if (parts.length !== 2 || !parts[0] || !parts[1])
        throw new ConfigError(
          `mergeFile: ${mergeFile} line ${i + 1}: ${JSON.stringify(line)} is not two tokens separated by one space; give GPT-2's merges.txt`,
          'mergeFile',
        );
      merges.push(line);
    });
    return { type, vocab: vocab as Record<string, number>, merges };
  }
  const model = files.tokenizerModel;
  if (!model)
    throw new ConfigError('HuggingFaceTokenizer needs --tokenizer-model: a tokenizer.json, or a folder holding one', 'tokenizerModel');
  const isDir = existsSync(model) && statSync(model).isDirectory();
  const jsonPath = isDir ? join(model, 'tokenizer.json') : model;
  const tokenizer = readJson(jsonPath, 'tokenizerModel', 'a Hugging Face tokenizer.json');
  if (typeof tokenizer !== 'object' || tokenizer === null || typeof (tokenizer as Json).model !== 'object')
    throw new ConfigError(`tokenizerModel: ${jsonPath} has no "model"; give a Hugging Face tokenizer.json`, 'tokenizerModel');
  const configPath = join(isDir ? model : join(model, '..'), 'tokenizer_config.json');
  const config = existsSync(configPath) ? (readJson(configPath, 'tokenizerModel', 'its tokenizer_config.json') as Json) : undefined;
  return { type, tokenizer: tokenizer as Json, ...(config ? { config } : {}) };
}

/** Whether `type` names a tokenizer webtron has; a ConfigError naming the option otherwise. */
export function checkTokenizerType(type: string, optionName = 'tokenizerType'): TokenizerType {
  if (!(TOKENIZER_TYPES as readonly string[]).includes(type))
    throw new ConfigError(`tokenizerType: expected one of ${TOKENIZER_TYPES.join(', ')}, got '${type}'`, optionName);
  return type as TokenizerType;
}

/** Megatron's padded vocabulary: the next multiple of `divisibleBy`. */
export function paddedVocabSize(vocab: number, divisibleBy: number): number {
  return Math.ceil(vocab / divisibleBy) * divisibleBy;
}
