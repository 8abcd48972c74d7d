/**
 * Hugging Face's GPT-2 as webtron's GPT, pure: the names of `transformers`' GPT2LMHeadModel for
 * webtron's params, and its config.json both ways.
 *
 * webtron's GPT is GPT-2's architecture with GPT-2's layout: weights [in, out] as GPT-2's Conv1D
 * keeps them, the qkv projection fused with q, k and v each holding its heads side by side
 * (`c_attn`), learned positions, pre-LayerNorm with eps 1e-5, tanh GELU (`gelu_new`) and scores
 * scaled by 1/sqrt(head size). So the mapping is names only: no tensor is transposed or split.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { type GptShape, headDim, linearBias, normBias, normEpsilon, qkvBias } from '../nn/gpt-spec.js';

/** The prefix of GPT2LMHeadModel's base model in its own state dict. */
export const BASE_PREFIX = 'transformer.';

const RENAMES: readonly (readonly [string, string])[] = [
  ['.attn.qkv.', '.attn.c_attn.'],
  ['.attn.proj.', '.attn.c_proj.'],
  ['.mlp.fc.', '.mlp.c_fc.'],
  ['.mlp.proj.', '.mlp.c_proj.'],
];

/**
 * The Hugging Face name of webtron param `name`: `blocks.N.…` is `h.N.…` and the four projections
 * take GPT-2's names; embeddings, layernorms and `lm_head.weight` keep theirs. With `prefixed`,
 * the base model's params carry `transformer.` (GPT2LMHeadModel's own state dict).
 */
export function hfName(name: string, prefixed = false): string {
  if (name === 'lm_head.weight') return name;
  let out = name.replace(/^blocks\.(\d+)\./, 'h.$1.');
  for (const [from, to] of RENAMES) out = out.replace(from, to);
  return prefixed ? BASE_PREFIX + out : out;
}

/** The webtron name of Hugging Face tensor `name` (with or without `transformer.`), or null for a name that is no GPT-2 param. */
export function webtronName(name: string): string | null {
  const bare = name.startsWith(BASE_PREFIX) ? name.slice(BASE_PREFIX.length) : name;
  if (bare === 'lm_head.weight') return name === bare ? bare : null;
  if (/^(wte|wpe)\.weight$|^ln_f\.(weight|bias)$/.test(bare)) return bare;
  const m = /^h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$/.exec(bare);
  if (!m) return null;
  let out = `blocks.${m[1]}.${m[2]}.${m[3]}`;
  for (const [to, from] of RENAMES) out = out.replace(from, to);
  return out;
}

/**
 * Tensors a GPT-2 state dict may hold that are no params: the causal-mask buffers older
 * `transformers` saved (`attn.bias`, `attn.masked_bias`). webtron's attention is causal by
 * construction, so they carry nothing it needs.
 */
export function isMaskBuffer(name: string): boolean {
  return /^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/.test(name);
}

/** The dtypes `--dtype` of `webtron export --format hf` writes, with config.json's `torch_dtype` for each. */
export const HF_DTYPES = { fp32: 'float32', fp16: 'float16', bf16: 'bfloat16' } as const;
export type HfDtype = keyof typeof HF_DTYPES;

/** What a GPT-2 config.json says about the model webtron builds. */
export interface Gpt2Config extends Required<Pick<GptShape, 'numLayers' | 'hiddenSize' | 'numAttentionHeads' | 'vocabSize' | 'tiedHead'>> {
  /** n_positions: rows of the position embedding. */
  maxPositionEmbeddings: number;
  /** n_inner: the MLP's hidden width (null or absent in the file: 4 × n_embd). */
  ffnHiddenSize: number;
  /** layer_norm_epsilon (GPT2Config's default 1e-5). */
  normEpsilon: number;
  /** resid_pdrop and embd_pdrop (webtron's --hidden-dropout serves both), or null when they differ. */
  hiddenDropout: number | null;
  attentionDropout: number;
  bosTokenId: number | null;
  eosTokenId: number | null;
}

/** config.json for a webtron GPT, as `GPT2Config` writes it. */
export function gpt2ConfigJson(
  model: GptShape & { hiddenDropout?: number; attentionDropout?: number },
  options: { dtype: HfDtype; eod: number | null; transformersVersion?: string },
): Record<string, unknown> {
  const dropout = model.hiddenDropout ?? 0;
  return {
    architectures: ['GPT2LMHeadModel'],
    model_type: 'gpt2',
    activation_function: 'gelu_new',
    attn_pdrop: model.attentionDropout ?? 0,
    bos_token_id: options.eod,
    embd_pdrop: dropout,
    eos_token_id: options.eod,
    initializer_range: 0.02,
    layer_norm_epsilon: normEpsilon(model),
    n_ctx: model.maxPositionEmbeddings ?? model.seqLength,
    n_embd: model.hiddenSize,
    n_head: model.numAttentionHeads,
    n_inner: model.ffnHiddenSize !== undefined && model.ffnHiddenSize !== 4 * model.hiddenSize ? model.ffnHiddenSize : null,
    n_layer: model.numLayers,
    n_positions: model.maxPositionEmbeddings ?? model.seqLength,
    reorder_and_upcast_attn: false,
    resid_pdrop: dropout,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: 'cls_index',
    summary_use_proj: true,
    tie_word_embeddings: model.tiedHead !== false,
    torch_dtype: HF_DTYPES[options.dtype],
    use_cache: true,
    vocab_size: model.vocabSize,
  };
}

/** generation_config.json: the end-of-text token where the tokenizer has one. */
export function generationConfigJson(eod: number | null): Record<string, unknown> {
  return { _from_model_config: true, ...(eod === null ? {} : { bos_token_id: eod, eos_token_id: eod }) };
}

const isPositiveInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 1;
const isProbability = (v: unknown): v is number => typeof v === 'number' && v >= 0 && v < 1;

/**
 * A GPT-2 config.json's model, every field checked: a missing size, another architecture, or a
 * feature webtron's GPT does not compute (another activation or eps, attention
 * scaled otherwise, cross-attention) is a ConfigError of one line naming the file, the field, its
 * value and what webtron computes instead. Unknown fields that change nothing about the forward
 * (summary_*, use_cache, transformers_version, …) are not read.
 */
export function parseGpt2Config(raw: unknown, file: string): Gpt2Config {
  const fail = (what: string) => new ConfigError(`initFrom: ${file}: ${what}`, 'initFrom');
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fail('is not a JSON object; give a GPT-2 config.json');
  const c = raw as Record<string, unknown>;
  const show = (v: unknown) => JSON.stringify(v) ?? 'undefined';
  if (c.model_type !== undefined && c.model_type !== 'gpt2')
    throw fail(`model_type is ${show(c.model_type)}; webtron reads GPT-2 folders (model_type "gpt2") and Llama ones ("llama")`);
  const archs = c.architectures;
  if (archs !== undefined && archs !== null) {
    const ok = Array.isArray(archs) && archs.every((a) => a === 'GPT2LMHeadModel' || a === 'GPT2Model');
    if (!ok) throw fail(`architectures is ${show(archs)}; webtron reads GPT2LMHeadModel and GPT2Model, not other heads`);
  }
  const size = (key: string): number => {
    if (!isPositiveInt(c[key])) throw fail(`${key} is ${show(c[key])}, not a positive integer; a GPT-2 config.json has it`);
    return c[key] as number;
  };
  const numLayers = size('n_layer');
  const hiddenSize = size('n_embd');
  const numAttentionHeads = size('n_head');
  const maxPositionEmbeddings = size('n_positions');
  const vocabSize = size('vocab_size');
  if (hiddenSize % numAttentionHeads !== 0) throw fail(`n_head ${numAttentionHeads} does not divide n_embd ${hiddenSize}`);
  const refuse = (key: string, ok: (v: unknown) => boolean, webtron: string) => {
    if (key in c && !ok(c[key])) throw fail(`${key} is ${show(c[key])}, which webtron does not compute (it computes ${webtron})`);
  };
  refuse('activation_function', (v) => v === 'gelu_new' || v === 'gelu_pytorch_tanh', 'GELU in tanh form, "gelu_new"');
  refuse('layer_norm_epsilon', (v) => typeof v === 'number' && v > 0 && v < 1, 'layer norms with an eps in (0, 1)');
  refuse('scale_attn_weights', (v) => v === true, 'scores scaled by 1/sqrt(head size)');
  refuse('scale_attn_by_inverse_layer_idx', (v) => v === false, 'scores not scaled by the layer index');
  refuse('reorder_and_upcast_attn', (v) => v === false, 'attention in the order and precision of GPT-2, without the upcast');
  refuse('add_cross_attention', (v) => v === false, 'decoder-only blocks, without cross-attention');
  refuse('tie_word_embeddings', (v) => typeof v === 'boolean', 'a head tied to wte (true) or its own lm_head (false)');
  for (const key of ['resid_pdrop', 'embd_pdrop', 'attn_pdrop'])
    if (key in c && !isProbability(c[key])) throw fail(`${key} is ${show(c[key])}, not a probability in [0, 1)`);
  const tokenId = (key: string): number | null => {
    const v = c[key];
    if (v === undefined || v === null) return null;
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= vocabSize)
      throw fail(`${key} is ${show(v)}, not a token id below vocab_size ${vocabSize}`);
    return v as number;
  };
  if (c.n_inner !== undefined && c.n_inner !== null && !isPositiveInt(c.n_inner))
    throw fail(`n_inner is ${show(c.n_inner)}, neither null nor a positive integer (the MLP's width)`);
  const resid = (c.resid_pdrop as number | undefined) ?? 0.1;
  const embd = (c.embd_pdrop as number | undefined) ?? 0.1;
  return {
    numLayers,
    hiddenSize,
    numAttentionHeads,
    maxPositionEmbeddings,
    ffnHiddenSize: (c.n_inner as number | null | undefined) ?? 4 * hiddenSize,
    normEpsilon: (c.layer_norm_epsilon as number | undefined) ?? 1e-5,
    vocabSize,
    tiedHead: (c.tie_word_embeddings as boolean | undefined) ?? true,
    hiddenDropout: resid === embd ? resid : null,
    attentionDropout: (c.attn_pdrop as number | undefined) ?? 0.1,
    bosTokenId: tokenId('bos_token_id'),
    eosTokenId: tokenId('eos_token_id'),
  };
}

/** DIR/config.json read and checked (parseGpt2Config); a missing or unreadable file is one ConfigError. */
export function readGpt2Config(dir: string): Gpt2Config {
  const { raw, file } = readConfigJson(dir);
  return parseGpt2Config(raw, file);
}

/** DIR/config.json's JSON; a missing, unreadable or malformed file is one ConfigError. */
export function readConfigJson(dir: string): { raw: unknown; file: string } {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `initFrom: ${dir} has no readable config.json (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); give a Hugging Face GPT-2 folder (config.json and model.safetensors) or an .onnx file`,
      'initFrom',
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`initFrom: ${file} is not JSON (${(error as Error).message}); give a GPT-2 config.json`, 'initFrom');
  }
  return { raw, file };
}

/**
 * What of `config` GPT-2's architecture has no place for (rope or no positions, RMSNorm, SwiGLU,
 * linear layers without biases), in words, or null when it is GPT-2's.
 */
export function unlikeGpt2(config: GptShape): string | null {
  const type = config.positionEmbeddingType ?? 'learned_absolute';
  if (type !== 'learned_absolute')
    return type === 'rope' ? 'rotary positions (rope; GPT-2 has a learned table)' : 'no position embedding (GPT-2 has a learned table)';
  if (!normBias(config)) return 'RMSNorm (GPT-2 has LayerNorm)';
  if (config.swiglu) return 'a SwiGLU MLP (GPT-2 has GELU)';
  if (config.squaredRelu) return 'a squared-ReLU MLP (GPT-2 has GELU)';
  if (!linearBias(config) || !qkvBias(config)) return 'linear layers without biases (GPT-2 has them)';
  if (headDim(config) * config.numAttentionHeads !== config.hiddenSize)
    return `heads ${headDim(config)} wide by --kv-channels (GPT-2's are n_embd / n_head)`;
  if (config.qkLayernorm) return 'norms of q and k (--qk-layernorm; GPT-2 has none)';
  return null;
}
