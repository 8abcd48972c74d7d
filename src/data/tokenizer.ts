/**
 * Tokenizers behind one interface, saved with a run and its checkpoints so that sampling decodes
 * with the same one: CharTokenizer (one token per Unicode code point of the training text, in code
 * point order) and ByteTokenizer (the 256 byte values of UTF-8). Pure.
 */
import { FlagError } from '../train/flags.js';

export type TokenizerState = { type: 'CharTokenizer'; chars: string[] } | { type: 'ByteTokenizer' };

export interface Tokenizer {
  readonly type: TokenizerState['type'];
  /** Tokens the tokenizer can produce (before the model's padding). */
  readonly vocabSize: number;
  encode(text: string): Uint32Array;
  decode(ids: ArrayLike<number>): string;
  state(): TokenizerState;
}

export class CharTokenizer implements Tokenizer {
  readonly type = 'CharTokenizer' as const;
  private readonly index: Map<string, number>;

  constructor(private readonly chars: readonly string[]) {
    this.index = new Map(chars.map((c, i) => [c, i]));
    if (this.index.size !== chars.length) throw new FlagError('CharTokenizer: the vocabulary holds a character twice');
  }

  /** The code points of `text`, sorted: the vocabulary. */
  static fromText(text: string): CharTokenizer {
    return new CharTokenizer([...new Set(Array.from(text))].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!));
  }

  get vocabSize(): number {
    return this.chars.length;
  }

  encode(text: string): Uint32Array {
    const chars = Array.from(text);
    const out = new Uint32Array(chars.length);
    chars.forEach((c, i) => {
      const id = this.index.get(c);
      if (id === undefined)
        throw new FlagError(
          `CharTokenizer: character ${JSON.stringify(c)} (U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}) is not in the vocabulary of the training text; use characters it has, or ByteTokenizer`,
        );
      out[i] = id;
    });
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) s += this.chars[ids[i]!] ?? '\uFFFD'; // padding ids decode as the replacement character
    return s;
  }

  state(): TokenizerState {
    return { type: 'CharTokenizer', chars: [...this.chars] };
  }
}

export class ByteTokenizer implements Tokenizer {
  readonly type = 'ByteTokenizer' as const;
  readonly vocabSize = 256;

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

export function tokenizerFrom(state: TokenizerState): Tokenizer {
  if (state.type === 'CharTokenizer') return new CharTokenizer(state.chars);
  if (state.type === 'ByteTokenizer') return new ByteTokenizer();
  throw new FlagError(`unknown tokenizer type '${(state as { type: string }).type}'; webtron has CharTokenizer and ByteTokenizer`);
}

/** Megatron's padded vocabulary: the next multiple of `divisibleBy`. */
export function paddedVocabSize(vocab: number, divisibleBy: number): number {
  return Math.ceil(vocab / divisibleBy) * divisibleBy;
}
