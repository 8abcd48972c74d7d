/**
 * `webtron train --init-from DIR` with a Hugging Face GPT-2 folder: the model's flags from its
 * config.json and its tokenizer from its files. A flag left out takes the folder's value; a flag
 * given must agree with it, else one line names both.
 */
import { join } from 'node:path';
import { readGpt2Config } from '../hf/gpt2.js';
import { folderTokenizer } from '../hf/tokenizer.js';
import { isFolder } from '../hf/weights.js';
import { FlagError, type FlagValues } from './flags.js';

/** The flags given on the command line (`--name` or `--name=value`), by name. */
export function givenFlags(argv: readonly string[]): Set<string> {
  return new Set(argv.filter((a) => a.startsWith('--') && a.length > 2).map((a) => a.slice(2).split('=')[0]!));
}

/**
 * A model flag another source fixes: `out[flag]` becomes `value`, unless the command line gave the
 * flag another value; then one line, `--FLAG GIVEN contradicts ` and `conflict`.
 */
export function takeFlag(out: FlagValues, given: Set<string>, flag: string, value: string | number | boolean, conflict: string): void {
  if (given.has(flag) && out[flag] !== value) throw new FlagError(`--${flag} ${String(out[flag])} contradicts ${conflict}`);
  out[flag] = value;
}

/** What a GPT-2 folder's model has where these flags would change it. */
const GPT2_HAS = { normalization: 'LayerNorm', swiglu: 'a GELU MLP', 'disable-bias-linear': 'biases on its linear layers' } as const;

/**
 * `values` with what the folder `--init-from` names says about the model and the tokenizer, and
 * the model's exact vocabulary (config.json's vocab_size, Megatron's padding included); the values
 * as they are, and null, for an ONNX model.
 */
export function withHfInit(values: FlagValues, argv: readonly string[]): { values: FlagValues; vocabSize: number | null } {
  const dir = values['init-from'] as string | undefined;
  if (dir === undefined || !isFolder(dir)) return { values, vocabSize: null };
  const hf = readGpt2Config(dir);
  const given = givenFlags(argv);
  const file = join(dir, 'config.json');
  const out: FlagValues = { ...values };
  const take = (flag: string, field: string, value: number | boolean) =>
    takeFlag(out, given, flag, value, `${file}: ${field} is ${String(value)}; leave the flag out to take the folder's value`);
  take('num-layers', 'n_layer', hf.numLayers);
  take('hidden-size', 'n_embd', hf.hiddenSize);
  take('num-attention-heads', 'n_head', hf.numAttentionHeads);
  take('max-position-embeddings', 'n_positions', hf.maxPositionEmbeddings);
  take('ffn-hidden-size', 'n_inner', hf.ffnHiddenSize);
  if (given.has('untie-embeddings-and-output-weights') && hf.tiedHead)
    throw new FlagError(`--untie-embeddings-and-output-weights contradicts ${file}: tie_word_embeddings is true`);
  out['untie-embeddings-and-output-weights'] = !hf.tiedHead;
  if (out['position-embedding-type'] !== 'learned_absolute' || out['use-rotary-position-embeddings'])
    throw new FlagError(
      `--position-embedding-type ${out['use-rotary-position-embeddings'] ? 'rope' : String(out['position-embedding-type'])} contradicts ${file}: GPT-2 has learned positions (wpe); leave the flag out`,
    );
  for (const [flag, has] of [
    ['normalization', out.normalization !== 'LayerNorm'],
    ['swiglu', out.swiglu],
    ['disable-bias-linear', out['disable-bias-linear']],
  ] as const) {
    if (has)
      throw new FlagError(
        `--${flag}${flag === 'normalization' ? ` ${String(out.normalization)}` : ''} contradicts ${file}: GPT-2 has ${GPT2_HAS[flag]}; leave the flag out`,
      );
  }
  if (!given.has('seq-length')) out['seq-length'] = hf.maxPositionEmbeddings;
  else if ((out['seq-length'] as number) > hf.maxPositionEmbeddings)
    throw new FlagError(
      `--seq-length ${String(out['seq-length'])} is longer than ${file} allows: n_positions is ${hf.maxPositionEmbeddings}; give --seq-length ${hf.maxPositionEmbeddings} or less`,
    );
  const divisor = out['make-vocab-size-divisible-by'] as number;
  if (given.has('make-vocab-size-divisible-by') && hf.vocabSize % divisor !== 0)
    throw new FlagError(
      `--make-vocab-size-divisible-by ${divisor} contradicts ${file}: vocab_size ${hf.vocabSize} is no multiple of it; leave the flag out (the folder's vocabulary is used as it is)`,
    );
  if (!given.has('hidden-dropout')) {
    if (hf.hiddenDropout === null)
      throw new FlagError(`${file}: resid_pdrop and embd_pdrop differ, and webtron's --hidden-dropout serves both; give --hidden-dropout`);
    out['hidden-dropout'] = hf.hiddenDropout;
  }
  if (!given.has('attention-dropout')) out['attention-dropout'] = hf.attentionDropout;
  const tokenizer = folderTokenizer(dir);
  if (tokenizer) {
    for (const flag of ['vocab-file', 'merge-file', 'tokenizer-model'])
      if (given.has(flag))
        throw new FlagError(`--${flag} contradicts --init-from ${dir}: the tokenizer comes from the folder; leave the flag out`);
    if (given.has('tokenizer-type') && out['tokenizer-type'] !== tokenizer.type)
      throw new FlagError(
        `--tokenizer-type ${String(out['tokenizer-type'])} contradicts --init-from ${dir}: its files are a ${tokenizer.type}; leave the flag out`,
      );
    out['tokenizer-type'] = tokenizer.type;
    // The file flags the tokenizer type's checks ask for; the tokenizer itself is read from the folder.
    if (tokenizer.type === 'GPT2BPETokenizer') Object.assign(out, { 'vocab-file': tokenizer.vocabFile, 'merge-file': tokenizer.mergeFile });
    if (tokenizer.type === 'HuggingFaceTokenizer') out['tokenizer-model'] = tokenizer.tokenizerModel;
  }
  return { values: out, vocabSize: hf.vocabSize };
}
