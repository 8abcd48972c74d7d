/**
 * `webtron train --init-from DIR` with a Hugging Face GPT-2 folder: the model's flags from its
 * config.json and its tokenizer from its files. A flag left out takes the folder's value; a flag
 * given must agree with it, else one line names both.
 */
import { join } from 'node:path';
import { type LlamaConfig, readHfConfig } from '../hf/llama.js';
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
const GPT2_HAS = {
  normalization: 'LayerNorm',
  swiglu: 'a GELU MLP',
  'squared-relu': 'a GELU MLP',
  'disable-bias-linear': 'biases on its linear layers',
  'qk-layernorm': 'no norms of q and k',
} as const;

/**
 * `values` with what the folder `--init-from` names says about the model and the tokenizer, and
 * the model's exact vocabulary (config.json's vocab_size, Megatron's padding included); the values
 * as they are, and null, for an ONNX model.
 */
export function withHfInit(values: FlagValues, argv: readonly string[]): { values: FlagValues; vocabSize: number | null } {
  const dir = values['init-from'] as string | undefined;
  if (dir === undefined || !isFolder(dir)) return { values, vocabSize: null };
  const folder = readHfConfig(dir);
  const given = givenFlags(argv);
  const file = join(dir, 'config.json');
  const out: FlagValues = { ...values };
  const take = (flag: string, field: string, value: number | boolean | string) =>
    takeFlag(out, given, flag, value, `${file}: ${field} is ${String(value)}; leave the flag out to take the folder's value`);
  if (folder.kind === 'llama') return withLlamaInit(dir, folder.config, out, given, take);
  const hf = folder.config;
  take('num-layers', 'n_layer', hf.numLayers);
  take('hidden-size', 'n_embd', hf.hiddenSize);
  take('num-attention-heads', 'n_head', hf.numAttentionHeads);
  take('max-position-embeddings', 'n_positions', hf.maxPositionEmbeddings);
  take('ffn-hidden-size', 'n_inner', hf.ffnHiddenSize);
  take('norm-epsilon', 'layer_norm_epsilon', hf.normEpsilon);
  takeHeadAndLength(out, given, file, hf.tiedHead, hf.maxPositionEmbeddings, 'n_positions');
  heldHeadWidth(out, given, file, hf.hiddenSize / hf.numAttentionHeads, 'n_embd / n_head');
  if (out['position-embedding-type'] !== 'learned_absolute' || out['use-rotary-position-embeddings'])
    throw new FlagError(
      `--position-embedding-type ${out['use-rotary-position-embeddings'] ? 'rope' : String(out['position-embedding-type'])} contradicts ${file}: GPT-2 has learned positions (wpe); leave the flag out`,
    );
  for (const [flag, has] of [
    ['normalization', out.normalization !== 'LayerNorm'],
    ['swiglu', out.swiglu],
    ['squared-relu', out['squared-relu']],
    ['disable-bias-linear', out['disable-bias-linear']],
    ['qk-layernorm', out['qk-layernorm']],
  ] as const) {
    if (has)
      throw new FlagError(
        `--${flag}${flag === 'normalization' ? ` ${String(out.normalization)}` : ''} contradicts ${file}: GPT-2 has ${GPT2_HAS[flag]}; leave the flag out`,
      );
  }
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
  folderTokenizerFlags(dir, out, given);
  return { values: out, vocabSize: hf.vocabSize };
}

/**
 * A Llama or Qwen2 folder's model as flags: its sizes, and Llama's block (rope with its rope_theta,
 * RMSNorm, SwiGLU, no linear biases but Qwen2's on q, k and v); dropout on the residual stream 0
 * unless given (Llama has none).
 */
function withLlamaInit(
  dir: string,
  hf: LlamaConfig,
  out: FlagValues,
  given: Set<string>,
  take: (flag: string, field: string, value: number | boolean | string) => void,
): { values: FlagValues; vocabSize: number | null } {
  take('num-layers', 'num_hidden_layers', hf.numLayers);
  take('hidden-size', 'hidden_size', hf.hiddenSize);
  take('num-attention-heads', 'num_attention_heads', hf.numAttentionHeads);
  take('max-position-embeddings', 'max_position_embeddings', hf.maxPositionEmbeddings);
  take('ffn-hidden-size', 'intermediate_size', hf.ffnHiddenSize);
  take('norm-epsilon', 'rms_norm_eps', hf.normEpsilon);
  take('rotary-base', 'rope_theta', hf.rotaryBase);
  const file = join(dir, 'config.json');
  if (hf.ropeScalingFactor !== null) {
    take('rope-scaling-factor', 'rope_scaling.factor', hf.ropeScalingFactor);
    out['use-rope-scaling'] = true;
  } else if (given.has('use-rope-scaling'))
    throw new FlagError(`--use-rope-scaling contradicts ${file}: rope_scaling is null; leave the flag out`);
  takeHeadAndLength(out, given, file, hf.tiedHead, hf.maxPositionEmbeddings, 'max_position_embeddings');
  // Llama's block (Qwen2's: with q, k and v biases): what a flag given otherwise contradicts.
  const name = hf.qkLayernorm ? 'Qwen3' : hf.addQkvBias ? 'Qwen2' : 'Llama';
  for (const [flag, llama, has] of [
    ['position-embedding-type', 'rope', 'rope'],
    ['normalization', 'RMSNorm', 'RMSNorm'],
    ['rotary-percent', 1, 'rope on whole heads'],
    ['rotary-interleaved', false, 'rotate-half rope'],
    ['add-qkv-bias', hf.addQkvBias, hf.addQkvBias ? 'q, k and v biases' : 'no qkv bias'],
    ['qk-layernorm', hf.qkLayernorm, hf.qkLayernorm ? 'norms of q and k' : 'no norms of q and k'],
    ['squared-relu', false, 'a SwiGLU MLP'],
  ] as const) {
    if (given.has(flag) && out[flag] !== llama)
      throw new FlagError(`--${flag} contradicts ${file}: ${name} has ${has}; leave the flag out`);
    out[flag] = llama;
  }
  Object.assign(out, { swiglu: true, 'disable-bias-linear': true });
  if (hf.numQueryGroups < hf.numAttentionHeads) {
    take('num-query-groups', 'num_key_value_heads', hf.numQueryGroups);
    out['group-query-attention'] = true;
  } else if (given.has('group-query-attention'))
    throw new FlagError(`--group-query-attention contradicts ${file}: num_key_value_heads is num_attention_heads; leave the flag out`);
  if (hf.kvChannels !== null) take('kv-channels', 'head_dim', hf.kvChannels);
  else heldHeadWidth(out, given, file, hf.hiddenSize / hf.numAttentionHeads, 'hidden_size / num_attention_heads');
  if (!given.has('hidden-dropout')) out['hidden-dropout'] = 0;
  if (!given.has('attention-dropout')) out['attention-dropout'] = hf.attentionDropout;
  folderTokenizerFlags(dir, out, given);
  return { values: out, vocabSize: hf.vocabSize };
}

/** A folder whose heads are `width` wide (`field`): a --kv-channels given otherwise contradicts it. */
function heldHeadWidth(out: FlagValues, given: Set<string>, file: string, width: number, field: string): void {
  if (given.has('kv-channels') && out['kv-channels'] !== width)
    throw new FlagError(
      `--kv-channels ${String(out['kv-channels'])} contradicts ${file}: its heads are ${field} = ${width} wide; leave the flag out`,
    );
}

/**
 * The head and the sequence length from a folder: untied as it is (--untie-embeddings-and-output-weights
 * contradicts a tied one), and --seq-length its positions (`field`) unless given, at most that.
 */
function takeHeadAndLength(out: FlagValues, given: Set<string>, file: string, tied: boolean, positions: number, field: string): void {
  if (given.has('untie-embeddings-and-output-weights') && tied)
    throw new FlagError(`--untie-embeddings-and-output-weights contradicts ${file}: tie_word_embeddings is true`);
  out['untie-embeddings-and-output-weights'] = !tied;
  if (!given.has('seq-length')) out['seq-length'] = positions;
  else if ((out['seq-length'] as number) > positions)
    throw new FlagError(
      `--seq-length ${String(out['seq-length'])} is longer than ${file} allows: ${field} is ${positions}; give --seq-length ${positions} or less`,
    );
}

/** The tokenizer flags of the folder's tokenizer files, where it has them; given ones must agree. */
function folderTokenizerFlags(dir: string, out: FlagValues, given: Set<string>): void {
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
}
