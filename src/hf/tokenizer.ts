/**
 * webtron's tokenizers as Hugging Face tokenizer files, both ways.
 *
 * - GPT2BPETokenizer: vocab.json and merges.txt (GPT2Tokenizer's files) and tokenizer.json
 *   (GPT2TokenizerFast's), with `<|endoftext|>` as bos, eos and unk, as the `gpt2` folder has them.
 *   The built-in tokenizer's files are rebuilt from gpt-tokenizer's ranks (GPT-2's ids): each
 *   token past the 256 bytes is the merge of the two parts BPE splits it into with the ranks below
 *   its own.
 * - HuggingFaceTokenizer: its tokenizer.json and tokenizer_config.json as they were read.
 * - CharTokenizer and ByteTokenizer, which have no class in `transformers`: a tokenizer.json that
 *   `PreTrainedTokenizerFast` (`AutoTokenizer`) runs with the same ids. Char: a BPE model without
 *   merges over the vocabulary's code points (id i is the i-th code point of the training text's
 *   sorted set), each code point split off, the tokens joined back by a Fuse decoder. Byte:
 *   byte-level BPE without merges whose 256 tokens have the byte values as ids.
 *   tokenizer_config.json names the webtron tokenizer (`webtron_tokenizer`) so that importing the
 *   folder restores it exactly.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bpeTokenizerJson, gpt2TokenizerJson, readTokenizerFiles, type TokenizerState, type TokenizerType } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';

type Json = Record<string, unknown>;

const EOT = '<|endoftext|>';

/** GPT-2's bytes_to_unicode: each byte as a printable character (printable Latin-1 as itself, the rest from U+0100 on). */
export function byteToUnicode(): string[] {
  const out = new Array<string>(256);
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCodePoint(printable ? b : 256 + shifted++);
  }
  return out;
}

let builtin: { vocab: Record<string, number>; merges: string[] } | null = null;

/** The built-in GPT-2 tokenizer's vocab.json and merges.txt (GPT-2's ids), rebuilt once from gpt-tokenizer's ranks. */
export async function builtinGpt2Files(): Promise<{ vocab: Record<string, number>; merges: string[] }> {
  if (builtin) return builtin;
  const ranks = (await import('gpt-tokenizer/bpeRanks/r50k_base')).default as (string | number[])[];
  const chars = byteToUnicode();
  // Tokens as Latin-1 strings of their bytes: a byte string as a map key.
  const bytes = ranks.map((t) => (typeof t === 'string' ? Buffer.from(t, 'utf8') : Buffer.from(t)).toString('latin1'));
  const rankOf = new Map(bytes.map((b, i) => [b, i]));
  const text = (latin1: string) => Array.from(latin1, (c) => chars[c.charCodeAt(0)]!).join('');
  const vocab: Record<string, number> = {};
  bytes.forEach((b, i) => {
    vocab[text(b)] = i;
  });
  vocab[EOT] = ranks.length;
  const merges: string[] = [];
  for (let r = 256; r < bytes.length; r++) {
    let parts = Array.from(bytes[r]!);
    for (;;) {
      let best = -1;
      let bestRank = r;
      for (let i = 0; i + 1 < parts.length; i++) {
        const k = rankOf.get(parts[i]! + parts[i + 1]!);
        if (k !== undefined && k < bestRank) [best, bestRank] = [i, k];
      }
      if (best < 0) break;
      parts = [...parts.slice(0, best), parts[best]! + parts[best + 1]!, ...parts.slice(best + 2)];
    }
    if (parts.length !== 2) throw new Error(`gpt-tokenizer's rank ${r} is no merge of two tokens of lower rank`);
    merges.push(`${text(parts[0]!)} ${text(parts[1]!)}`);
  }
  builtin = { vocab, merges };
  return builtin;
}

/** A tokenizer.json without merges over `vocab`, as described above; `byteLevel` for Byte's. */
function mergelessTokenizerJson(vocab: Record<string, number>, byteLevel: boolean): Json {
  if (byteLevel) return bpeTokenizerJson(vocab, []);
  return bpeTokenizerJson(vocab, [], {
    preTokenizer: { type: 'Split', pattern: { Regex: '[\\s\\S]' }, behavior: 'Isolated', invert: false },
    decoder: { type: 'Fuse' },
  });
}

/** The files (name → text) that hold `state` in a Hugging Face folder; `maxLength` is the model's n_positions. */
export async function tokenizerFiles(state: TokenizerState, maxLength: number): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const json = (name: string, value: unknown) => files.set(name, `${JSON.stringify(value, null, 2)}\n`);
  const common = { model_max_length: maxLength, clean_up_tokenization_spaces: false };
  switch (state.type) {
    case 'GPT2BPETokenizer': {
      const { vocab, merges } = state.vocab && state.merges ? { vocab: state.vocab, merges: state.merges } : await builtinGpt2Files();
      const eot = vocab[EOT];
      const specials = eot === undefined ? {} : { bos_token: EOT, eos_token: EOT, unk_token: EOT };
      json('vocab.json', vocab);
      files.set('merges.txt', `#version: 0.2\n${merges.join('\n')}\n`);
      const tokenizer = gpt2TokenizerJson(vocab, merges);
      if (eot !== undefined)
        tokenizer.added_tokens = [
          { id: eot, content: EOT, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
        ];
      json('tokenizer.json', tokenizer);
      json('tokenizer_config.json', {
        tokenizer_class: 'GPT2Tokenizer',
        add_prefix_space: false,
        add_bos_token: false,
        ...specials,
        ...common,
      });
      json('special_tokens_map.json', specials);
      return files;
    }
    case 'HuggingFaceTokenizer':
      json('tokenizer.json', state.tokenizer);
      json('tokenizer_config.json', state.config ?? { tokenizer_class: 'PreTrainedTokenizerFast', ...common });
      return files;
    case 'CharTokenizer':
      json('tokenizer.json', mergelessTokenizerJson(Object.fromEntries(state.chars.map((c, i) => [c, i])), false));
      break;
    case 'ByteTokenizer':
      json('tokenizer.json', mergelessTokenizerJson(Object.fromEntries(byteToUnicode().map((c, b) => [c, b])), true));
      break;
    case 'NullTokenizer':
      // Ids, not text: nothing for a Hugging Face tokenizer to hold.
      return files;
  }
  json('tokenizer_config.json', { tokenizer_class: 'PreTrainedTokenizerFast', webtron_tokenizer: state.type, ...common });
  return files;
}

function readJson(file: string): Json {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigError(`initFrom: ${file} is not readable JSON (${(error as Error).message})`, 'initFrom');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigError(`initFrom: ${file} is not a JSON object`, 'initFrom');
  return raw as Json;
}

/**
 * Whether a tokenizer.json is what vocab.json and merges.txt beside it say: GPT-2's byte-level BPE
 * (its regex, no normalizer) with no added token but `<|endoftext|>`. Qwen's folders also ship
 * vocab.json and merges.txt, but split text by a regex of their own and add chat tokens: only
 * their tokenizer.json tokenizes as transformers does.
 */
function plainGpt2Json(file: string): boolean {
  const json = readJson(file);
  const pre = json.pre_tokenizer as Json | null | undefined;
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as Json[]) : [];
  return (
    (json.normalizer ?? null) === null && pre?.type === 'ByteLevel' && pre.use_regex !== false && added.every((t) => t.content === EOT)
  );
}

/**
 * Which tokenizer a Hugging Face folder's files make, and where they are, or null when it holds
 * none: webtron's Char or Byte (tokenizer_config.json's `webtron_tokenizer`), GPT-2's BPE
 * (vocab.json and merges.txt, where a tokenizer.json beside them is GPT-2's kind: plainGpt2Json),
 * else a Hugging Face tokenizer (tokenizer.json).
 */
export function folderTokenizer(
  dir: string,
):
  | { type: 'GPT2BPETokenizer'; vocabFile: string; mergeFile: string }
  | { type: Exclude<TokenizerType, 'GPT2BPETokenizer' | 'NullTokenizer'>; tokenizerModel: string }
  | null {
  const configFile = join(dir, 'tokenizer_config.json');
  const kind = existsSync(configFile) ? readJson(configFile).webtron_tokenizer : undefined;
  if (kind === 'ByteTokenizer' || kind === 'CharTokenizer') return { type: kind, tokenizerModel: join(dir, 'tokenizer.json') };
  const [vocabFile, mergeFile, json] = [join(dir, 'vocab.json'), join(dir, 'merges.txt'), join(dir, 'tokenizer.json')];
  if (existsSync(vocabFile) && existsSync(mergeFile) && (!existsSync(json) || plainGpt2Json(json)))
    return { type: 'GPT2BPETokenizer', vocabFile, mergeFile };
  if (existsSync(json)) return { type: 'HuggingFaceTokenizer', tokenizerModel: dir };
  return null;
}

/** The tokenizer a Hugging Face folder holds (folderTokenizer), GPT-2's BPE as the built-in one when its files are GPT-2's own. */
export async function readFolderTokenizer(dir: string): Promise<TokenizerState | null> {
  const found = folderTokenizer(dir);
  switch (found?.type) {
    case undefined:
      return null;
    case 'ByteTokenizer':
      return { type: 'ByteTokenizer' };
    case 'CharTokenizer': {
      const file = found.tokenizerModel;
      const vocab = (readJson(file).model as Json | undefined)?.vocab;
      const entries = typeof vocab === 'object' && vocab !== null ? Object.entries(vocab as Record<string, unknown>) : [];
      const chars: string[] = [];
      for (const [c, id] of entries) if (Number.isInteger(id) && Array.from(c).length === 1) chars[id as number] = c;
      if (entries.length === 0 || chars.length !== entries.length || chars.includes(undefined as unknown as string))
        throw new ConfigError(
          `initFrom: ${file}: a CharTokenizer's vocabulary must give single characters the ids 0 to n-1; export the folder again with webtron export --format hf`,
          'initFrom',
        );
      return { type: 'CharTokenizer', chars };
    }
    case 'GPT2BPETokenizer': {
      const state = readTokenizerFiles('GPT2BPETokenizer', found);
      if (state.type !== 'GPT2BPETokenizer' || !state.vocab || !state.merges) return state;
      const own = await builtinGpt2Files();
      const same =
        state.merges.length === own.merges.length &&
        state.merges.every((m, i) => m === own.merges[i]) &&
        Object.keys(state.vocab).length === Object.keys(own.vocab).length &&
        Object.entries(state.vocab).every(([t, id]) => own.vocab[t] === id);
      return same ? { type: 'GPT2BPETokenizer' } : state;
    }
    case 'HuggingFaceTokenizer':
      return readTokenizerFiles('HuggingFaceTokenizer', found);
  }
}
