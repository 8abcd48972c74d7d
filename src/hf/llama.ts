/**
 * A webtron GPT with Llama's block (rope, RMSNorm, SwiGLU, no linear biases) as Hugging Face's
 * `LlamaForCausalLM` holds it, written from transformers' modeling_llama: the names, torch's
 * [out, in] layout of every linear weight (webtron keeps [in, out]), q, k and v as three projections
 * and the gated MLP as gate_proj and up_proj. Rope needs no change of weights in the rotate-half form,
 * which is Llama's; an interleaved model's q and k channels are reordered per head (even channels,
 * then odd) so that Llama's rotate-half pairs the channels webtron's interleaved rope paired. Pure.
 */
import { type GptShape, ffnWidth, linearBias, normBias, qkvBias } from '../nn/gpt-spec.js';
import { HF_DTYPES, type HfDtype } from './gpt2.js';

/** What of `config` Llama's architecture has no place for, in words, or null when it fits. */
export function unlikeLlama(config: GptShape): string | null {
  if (config.positionEmbeddingType !== 'rope') return 'learned or no positions (Llama has rope)';
  if ((config.rotaryPercent ?? 1) !== 1) return `rope on ${config.rotaryPercent} of each head (Llama rotates all of it)`;
  if (normBias(config)) return 'LayerNorm (Llama has RMSNorm)';
  if (!config.swiglu) return 'a GELU MLP (Llama has SwiGLU)';
  if (linearBias(config) || qkvBias(config)) return 'linear biases (Llama has none)';
  return null;
}

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

/** The tensors of the Llama folder of `config` (unlikeLlama null), in modeling_llama's order. */
export function llamaTensors(config: GptShape): LlamaTensor[] {
  const h = config.hiddenSize;
  const f = ffnWidth(config);
  const hd = h / config.numAttentionHeads;
  const same = (v: Float32Array) => v;
  // Interleaved rope pairs channels (2i, 2i + 1) of a head; Llama's rotate-half pairs (i, i + hd/2).
  const rotated = config.rotaryInterleaved
    ? (c: number) => {
        const head = Math.floor(c / hd);
        const j = c % hd;
        return head * hd + (j < hd / 2 ? 2 * j : 2 * (j - hd / 2) + 1);
      }
    : undefined;
  const out: LlamaTensor[] = [{ name: 'model.embed_tokens.weight', shape: [config.vocabSize, h], from: 'wte.weight', take: same }];
  for (let l = 0; l < config.numLayers; l++) {
    const b = `blocks.${l}`;
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [h], from: `${b}.ln_1.weight`, take: same },
      {
        name: `${p}.self_attn.q_proj.weight`,
        shape: [h, h],
        from: `${b}.attn.qkv.weight`,
        take: columnsTransposed(h, 3 * h, 0, h, rotated),
      },
      {
        name: `${p}.self_attn.k_proj.weight`,
        shape: [h, h],
        from: `${b}.attn.qkv.weight`,
        take: columnsTransposed(h, 3 * h, h, h, rotated),
      },
      { name: `${p}.self_attn.v_proj.weight`, shape: [h, h], from: `${b}.attn.qkv.weight`, take: columnsTransposed(h, 3 * h, 2 * h, h) },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, h], from: `${b}.attn.proj.weight`, take: columnsTransposed(h, h, 0, h) },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h], from: `${b}.ln_2.weight`, take: same },
      { name: `${p}.mlp.gate_proj.weight`, shape: [f, h], from: `${b}.mlp.fc.weight`, take: columnsTransposed(h, 2 * f, 0, f) },
      { name: `${p}.mlp.up_proj.weight`, shape: [f, h], from: `${b}.mlp.fc.weight`, take: columnsTransposed(h, 2 * f, f, f) },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, f], from: `${b}.mlp.proj.weight`, take: columnsTransposed(f, h, 0, h) },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [h], from: 'ln_f.weight', take: same });
  if (config.tiedHead === false) out.push({ name: 'lm_head.weight', shape: [config.vocabSize, h], from: 'lm_head.weight', take: same });
  return out;
}

/** config.json for a webtron GPT with Llama's block, as `LlamaConfig` writes it. */
export function llamaConfigJson(
  model: GptShape & { attentionDropout?: number },
  options: { dtype: HfDtype; eod: number | null },
): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: model.attentionDropout ?? 0,
    bos_token_id: options.eod,
    eos_token_id: options.eod,
    head_dim: model.hiddenSize / model.numAttentionHeads,
    hidden_act: 'silu',
    hidden_size: model.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: ffnWidth(model),
    max_position_embeddings: model.maxPositionEmbeddings ?? model.seqLength,
    mlp_bias: false,
    num_attention_heads: model.numAttentionHeads,
    num_hidden_layers: model.numLayers,
    num_key_value_heads: model.numAttentionHeads,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: model.rotaryBase ?? 10000,
    tie_word_embeddings: model.tiedHead !== false,
    torch_dtype: HF_DTYPES[options.dtype],
    use_cache: true,
    vocab_size: model.vocabSize,
  };
}
