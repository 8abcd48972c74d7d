/**
 * A webtron GPT with Llama's block (rope, RMSNorm, SwiGLU, no linear biases; grouped-query attention
 * or not) as Hugging Face's `LlamaForCausalLM` holds it, and with biases on q, k and v as its
 * `Qwen2ForCausalLM` does (modeling_qwen2: Llama's names and layout plus q_proj, k_proj and v_proj
 * biases), written from transformers' modeling_llama: the names, torch's
 * [out, in] layout of every linear weight (webtron keeps [in, out]), q, k and v as three projections
 * and the gated MLP as gate_proj and up_proj. Rope needs no change of weights in the rotate-half form,
 * which is Llama's; an interleaved model's q and k channels are reordered per head (even channels,
 * then odd) so that Llama's rotate-half pairs the channels webtron's interleaved rope paired. Pure.
 */
import { ConfigError } from '../errors.js';
import {
  attentionWidth,
  type GptShape,
  ffnWidth,
  gptParams,
  headDim,
  linearBias,
  normBias,
  normEpsilon,
  qkvBias,
  qkvWidth,
  queryGroups,
} from '../nn/gpt-spec.js';
import { LLAMA3_ROPE } from '../nn/rope.js';
import { type Gpt2Config, HF_DTYPES, type HfDtype, parseGpt2Config, readConfigJson } from './gpt2.js';

/** What of `config` Llama's architecture has no place for, in words, or null when it fits. */
export function unlikeLlama(config: GptShape): string | null {
  if (config.positionEmbeddingType !== 'rope') return 'learned or no positions (Llama has rope)';
  if ((config.rotaryPercent ?? 1) !== 1) return `rope on ${config.rotaryPercent} of each head (Llama rotates all of it)`;
  if (normBias(config)) return 'LayerNorm (Llama has RMSNorm)';
  if (!config.swiglu) return `a ${config.squaredRelu ? 'squared-ReLU' : 'GELU'} MLP (Llama has SwiGLU)`;
  if (linearBias(config)) return 'linear biases past q, k and v (Llama has none, Qwen2 only those)';
  if (config.qkLayernorm && qkvBias(config)) return 'norms of q and k with q, k and v biases (Qwen3 has the norms, Qwen2 the biases)';
  return null;
}

/**
 * Which of Hugging Face's Llama-shaped architectures holds `config` (unlikeLlama null): Qwen3's with
 * norms of q and k, Qwen2's when q, k and v have biases, else Llama's.
 */
export const llamaFamily = (config: GptShape): 'llama' | 'qwen2' | 'qwen3' =>
  config.qkLayernorm ? 'qwen3' : qkvBias(config) ? 'qwen2' : 'llama';

/** One tensor of the Llama folder: its name and shape, and how it comes from a webtron param's fp32 values. */
export interface LlamaTensor {
  name: string;
  shape: number[];
  /** The webtron param it is taken from. */
  from: string;
  take: (values: Float32Array) => Float32Array;
}

/** Columns [from, from + count) of a row-major [rows, cols] matrix, transposed: [count, rows], row c taken from column `order(c)`. */
function columnsTransposed(rows: number, cols: number, from: number, count: number, order: (c: number) => number = (c) => c) {
  return (v: Float32Array): Float32Array => {
    const out = new Float32Array(count * rows);
    for (let c = 0; c < count; c++) {
      const src = from + order(c);
      for (let r = 0; r < rows; r++) out[c * rows + r] = v[r * cols + src]!;
    }
    return out;
  };
}

/** A tensor taken as the param holds it (embeddings, norms, the head). */
const asIs = (v: Float32Array) => v;

/** Values [from, from + count) of a vector, value c taken from `order(c)` (q's, k's and v's biases). */
const slice =
  (from: number, count: number, order: (c: number) => number = (c) => c) =>
  (v: Float32Array): Float32Array =>
    Float32Array.from({ length: count }, (_, c) => v[from + order(c)]!);

/** The tensors of the Llama folder of `config` (unlikeLlama null), in modeling_llama's order. */
export function llamaTensors(config: GptShape): LlamaTensor[] {
  const h = config.hiddenSize;
  const f = ffnWidth(config);
  const hd = headDim(config);
  const a = attentionWidth(config); // q's width (h unless --kv-channels says otherwise)
  const kv = queryGroups(config) * hd; // k's and v's width
  const w = qkvWidth(config);
  // Interleaved rope pairs channels (2i, 2i + 1) of a head; Llama's rotate-half pairs (i, i + hd/2).
  const rotated = config.rotaryInterleaved
    ? (c: number) => {
        const head = Math.floor(c / hd);
        const j = c % hd;
        return head * hd + (j < hd / 2 ? 2 * j : 2 * (j - hd / 2) + 1);
      }
    : undefined;
  const out: LlamaTensor[] = [{ name: 'model.embed_tokens.weight', shape: [config.vocabSize, h], from: 'wte.weight', take: asIs }];
  for (let l = 0; l < config.numLayers; l++) {
    const b = `blocks.${l}`;
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], from: `${b}.ln_1.weight`, take: asIs },
      {
        name: `${p}.self_attn.q_proj.weight`,
        shape: [a, h],
        from: `${b}.attn.qkv.weight`,
        take: columnsTransposed(h, w, 0, a, rotated),
      },
      {
        name: `${p}.self_attn.k_proj.weight`,
        shape: [kv, h],
        from: `${b}.attn.qkv.weight`,
        take: columnsTransposed(h, w, a, kv, rotated),
      },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, h], from: `${b}.attn.qkv.weight`, take: columnsTransposed(h, w, a + kv, kv) },
    );
    // Qwen3's norms of q and k: a head's channels, in the order rope pairs them as q's and k's are.
    if (config.qkLayernorm)
      out.push(
        { name: `${p}.self_attn.q_norm.weight`, shape: [hd], from: `${b}.attn.ln_q.weight`, take: slice(0, hd, rotated) },
        { name: `${p}.self_attn.k_norm.weight`, shape: [hd], from: `${b}.attn.ln_k.weight`, take: slice(0, hd, rotated) },
      );
    if (qkvBias(config))
      out.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [a], from: `${b}.attn.qkv.bias`, take: slice(0, a, rotated) },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], from: `${b}.attn.qkv.bias`, take: slice(a, kv, rotated) },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], from: `${b}.attn.qkv.bias`, take: slice(a + kv, kv) },
      );
    out.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, a], from: `${b}.attn.proj.weight`, take: columnsTransposed(a, h, 0, h) },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], from: `${b}.ln_2.weight`, take: asIs },
      { name: `${p}.mlp.gate_proj.weight`, shape: [f, h], from: `${b}.mlp.fc.weight`, take: columnsTransposed(h, 2 * f, 0, f) },
      { name: `${p}.mlp.up_proj.weight`, shape: [f, h], from: `${b}.mlp.fc.weight`, take: columnsTransposed(h, 2 * f, f, f) },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, f], from: `${b}.mlp.proj.weight`, take: columnsTransposed(f, h, 0, h) },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [h], from: 'ln_f.weight', take: asIs });
  if (config.tiedHead === false) out.push({ name: 'lm_head.weight', shape: [config.vocabSize, h], from: 'lm_head.weight', take: asIs });
  return out;
}

/** config.json for a webtron GPT with Llama's block, as `LlamaConfig` writes it, or `Qwen2Config` or `Qwen3Config` (llamaFamily). */
export function llamaConfigJson(
  model: GptShape & { attentionDropout?: number },
  options: { dtype: HfDtype; eod: number | null },
): Record<string, unknown> {
  const family = llamaFamily(model);
  const common = {
    attention_dropout: model.attentionDropout ?? 0,
    bos_token_id: options.eod,
    eos_token_id: options.eod,
    hidden_act: 'silu',
    hidden_size: model.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: ffnWidth(model),
    max_position_embeddings: model.maxPositionEmbeddings ?? model.seqLength,
    num_attention_heads: model.numAttentionHeads,
    num_hidden_layers: model.numLayers,
    num_key_value_heads: queryGroups(model),
    rms_norm_eps: normEpsilon(model),
    rope_scaling:
      model.ropeScalingFactor === undefined
        ? null
        : {
            factor: model.ropeScalingFactor,
            high_freq_factor: LLAMA3_ROPE.highFreqFactor,
            low_freq_factor: LLAMA3_ROPE.lowFreqFactor,
            original_max_position_embeddings: LLAMA3_ROPE.originalMaxPositionEmbeddings,
            rope_type: 'llama3',
          },
    rope_theta: model.rotaryBase ?? 10000,
    tie_word_embeddings: model.tiedHead !== false,
    torch_dtype: HF_DTYPES[options.dtype],
    use_cache: true,
    vocab_size: model.vocabSize,
  };
  // Full attention in every layer.
  const window = { max_window_layers: model.numLayers, sliding_window: null, use_sliding_window: false };
  if (family === 'qwen2') return { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', ...common, ...window };
  if (family === 'qwen3')
    return {
      architectures: ['Qwen3ForCausalLM'],
      model_type: 'qwen3',
      attention_bias: false,
      head_dim: headDim(model),
      ...common,
      ...window,
    };
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    head_dim: headDim(model),
    mlp_bias: false,
    pretraining_tp: 1,
    ...common,
  };
}

/** What a Llama config.json says about the model webtron builds. */
export interface LlamaConfig extends Required<Pick<GptShape, 'numLayers' | 'hiddenSize' | 'numAttentionHeads' | 'vocabSize' | 'tiedHead'>> {
  maxPositionEmbeddings: number;
  /** intermediate_size: the gated MLP's width. */
  ffnHiddenSize: number;
  /** num_key_value_heads. */
  numQueryGroups: number;
  /** head_dim where it is not hidden_size / num_attention_heads (Megatron's --kv-channels), else null. */
  kvChannels: number | null;
  /** Norms of q's and k's heads: Qwen3's q_norm and k_norm (Megatron's --qk-layernorm). */
  qkLayernorm: boolean;
  /** rms_norm_eps (LlamaConfig's default 1e-6). */
  normEpsilon: number;
  /** rope_scaling's factor (Llama 3's scaling), or null. */
  ropeScalingFactor: number | null;
  /** rope_theta. */
  rotaryBase: number;
  attentionDropout: number;
  /** Biases on q, k and v: Qwen2's. */
  addQkvBias: boolean;
}

/** Whether `v` is a rope_scaling webtron computes: Llama 3's, at Megatron's fixed bands and any factor of at least 1. */
function isLlama3Scaling(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    (r.rope_type ?? r.type) === 'llama3' &&
    typeof r.factor === 'number' &&
    r.factor >= 1 &&
    r.low_freq_factor === LLAMA3_ROPE.lowFreqFactor &&
    r.high_freq_factor === LLAMA3_ROPE.highFreqFactor &&
    r.original_max_position_embeddings === LLAMA3_ROPE.originalMaxPositionEmbeddings
  );
}

/** The architectures of model_type values that are Llama's block: their base model's and causal LM's names. */
const LLAMA_LIKE: Record<string, [string, string]> = {
  llama: ['LlamaModel', 'LlamaForCausalLM'],
  qwen2: ['Qwen2Model', 'Qwen2ForCausalLM'],
  qwen3: ['Qwen3Model', 'Qwen3ForCausalLM'],
  mistral: ['MistralModel', 'MistralForCausalLM'],
};

/**
 * A Llama config.json's model (or Qwen2's, Qwen3's or Mistral's: Llama's names and tensors), every field
 * checked: a missing size, or what webtron's Llama block does not compute (key and value heads that
 * do not divide the heads, another activation, an eps outside (0, 1), rope scaling other than
 * Llama 3's, partial rope, biases, a sliding window shorter than the context) is a ConfigError of
 * one line naming the file, the field, its value and what webtron computes instead.
 */
export function parseLlamaConfig(c: Record<string, unknown>, file: string): LlamaConfig {
  const fail = (what: string) => new ConfigError(`initFrom: ${file}: ${what}`, 'initFrom');
  const show = (v: unknown) => JSON.stringify(v) ?? 'undefined';
  const qwen2 = c.model_type === 'qwen2';
  const qwen3 = c.model_type === 'qwen3';
  const [model, lm] = Object.hasOwn(LLAMA_LIKE, c.model_type as string) ? LLAMA_LIKE[c.model_type as string]! : LLAMA_LIKE.llama!;
  const archs = c.architectures;
  if (archs !== undefined && archs !== null && !(Array.isArray(archs) && archs.every((a) => a === lm || a === model)))
    throw fail(`architectures is ${show(archs)}; webtron reads ${lm} and ${model}, not other heads`);
  const size = (key: string): number => {
    const v = c[key];
    if (!Number.isInteger(v) || (v as number) < 1) throw fail(`${key} is ${show(v)}, not a positive integer; a Llama config.json has it`);
    return v as number;
  };
  const numLayers = size('num_hidden_layers');
  const hiddenSize = size('hidden_size');
  const numAttentionHeads = size('num_attention_heads');
  const ffnHiddenSize = size('intermediate_size');
  const maxPositionEmbeddings = size('max_position_embeddings');
  const vocabSize = size('vocab_size');
  const headDimGiven = c.head_dim ?? null;
  if (headDimGiven !== null && !(Number.isInteger(headDimGiven) && (headDimGiven as number) >= 1))
    throw fail(`head_dim is ${show(headDimGiven)}, not a positive integer or null`);
  if (headDimGiven === null && hiddenSize % numAttentionHeads !== 0)
    throw fail(`num_attention_heads ${numAttentionHeads} does not divide hidden_size ${hiddenSize}, and head_dim is not given`);
  const kvChannels = headDimGiven === null || headDimGiven === hiddenSize / numAttentionHeads ? null : (headDimGiven as number);
  const refuse = (key: string, ok: (v: unknown) => boolean, webtron: string) => {
    if (key in c && c[key] !== null && !ok(c[key]))
      throw fail(`${key} is ${show(c[key])}, which webtron does not compute (it computes ${webtron})`);
  };
  refuse(
    'num_key_value_heads',
    (v) => Number.isInteger(v) && (v as number) >= 1 && numAttentionHeads % (v as number) === 0,
    'key and value heads that divide the query heads',
  );
  refuse('hidden_act', (v) => v === 'silu', 'SwiGLU with silu, "silu"');
  refuse('rms_norm_eps', (v) => typeof v === 'number' && v > 0 && v < 1, 'RMSNorm with an eps in (0, 1)');
  refuse(
    'rope_scaling',
    isLlama3Scaling,
    "rope without scaling (null) or Llama 3's, with low_freq_factor 1, high_freq_factor 4 and original_max_position_embeddings 8192",
  );
  refuse('partial_rotary_factor', (v) => v === 1, 'rope on the whole head, 1');
  refuse('attention_bias', (v) => v === false, 'attention without biases');
  refuse('mlp_bias', (v) => v === false, 'an MLP without biases');
  refuse('pretraining_tp', (v) => v === 1, 'one tensor-parallel slice, 1');
  refuse('tie_word_embeddings', (v) => typeof v === 'boolean', 'a head tied to embed_tokens (true) or its own lm_head (false)');
  refuse('rope_theta', (v) => typeof v === 'number' && v > 1, 'a rope base above 1');
  refuse('attention_dropout', (v) => typeof v === 'number' && v >= 0 && v < 1, 'a dropout probability in [0, 1)');
  if (qwen2 || qwen3) refuse('use_sliding_window', (v) => v === false, 'full attention in every layer, false');
  // Mistral's window: no window, or one the whole context fits in, is full attention.
  if (c.model_type === 'mistral')
    refuse(
      'sliding_window',
      (v) => Number.isInteger(v) && (v as number) >= maxPositionEmbeddings,
      `full attention: no window (null) or one of at least max_position_embeddings, ${maxPositionEmbeddings}`,
    );
  return {
    numLayers,
    hiddenSize,
    numAttentionHeads,
    maxPositionEmbeddings,
    ffnHiddenSize,
    vocabSize,
    tiedHead: (c.tie_word_embeddings as boolean | undefined) ?? false,
    numQueryGroups: (c.num_key_value_heads as number | undefined) ?? numAttentionHeads,
    kvChannels,
    qkLayernorm: qwen3,
    normEpsilon: (c.rms_norm_eps as number | undefined) ?? 1e-6,
    ropeScalingFactor: c.rope_scaling ? ((c.rope_scaling as Record<string, number>).factor as number) : null,
    rotaryBase: (c.rope_theta as number | undefined) ?? 10000,
    attentionDropout: (c.attention_dropout as number | undefined) ?? 0,
    addQkvBias: qwen2,
  };
}

/**
 * Reading a Llama folder into webtron's params: the tensors the folder must hold (their names and
 * shapes), and how each param is assembled from them (llamaTensors in reverse, rotate-half rope).
 */
export function llamaImport(config: GptShape): {
  expected: { name: string; shape: number[] }[];
  assemble: (param: string, tensor: (name: string) => Float32Array) => Float32Array;
} {
  const tensors = llamaTensors({ ...config, rotaryInterleaved: false });
  const sources = new Map<string, LlamaTensor[]>();
  for (const t of tensors) sources.set(t.from, [...(sources.get(t.from) ?? []), t]);
  const specs = new Map(gptParams(config).map((p) => [p.name, p.shape]));
  return {
    expected: tensors.map((t) => ({ name: t.name, shape: t.shape })),
    assemble(param, tensor) {
      const parts = sources.get(param);
      const shape = specs.get(param);
      if (!parts || !shape) throw new ConfigError(`initFrom: webtron's Llama block has no param '${param}'`, 'initFrom');
      if (parts.length === 1 && parts[0]!.take === asIs) return tensor(parts[0]!.name);
      // A bias: the parts end to end (q's, k's, v's).
      if (shape.length === 1) {
        const out = new Float32Array(shape[0]!);
        let from = 0;
        for (const part of parts) {
          out.set(tensor(part.name), from);
          from += part.shape[0]!;
        }
        return out;
      }
      // A linear weight [in, out] whose column ranges are the parts, each stored [its columns, in].
      const [rows, cols] = shape as [number, number];
      const out = new Float32Array(rows * cols);
      let from = 0;
      for (const part of parts) {
        const t = tensor(part.name);
        const count = part.shape[0]!;
        for (let c = 0; c < count; c++) for (let r = 0; r < rows; r++) out[r * cols + from + c] = t[c * rows + r]!;
        from += count;
      }
      return out;
    },
  };
}

/**
 * The model of a Hugging Face folder's config.json: GPT-2's or Llama's (by model_type; Qwen2's is
 * Llama's with q, k and v biases, Mistral's Llama's with a sliding window), checked.
 */
export function readHfConfig(dir: string): { kind: 'gpt2'; config: Gpt2Config } | { kind: 'llama'; config: LlamaConfig } {
  const { raw, file } = readConfigJson(dir);
  const c = raw as Record<string, unknown> | null;
  if (
    typeof c === 'object' &&
    c !== null &&
    !Array.isArray(c) &&
    typeof c.model_type === 'string' &&
    Object.hasOwn(LLAMA_LIKE, c.model_type)
  )
    return { kind: 'llama', config: parseLlamaConfig(c, file) };
  return { kind: 'gpt2', config: parseGpt2Config(raw, file) };
}
