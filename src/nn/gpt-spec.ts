/**
 * The parameter list of a GPT in nanoGPT's shape, pure: token and (learned, unless rotary or none)
 * position embeddings, pre-norm blocks of attention (fused qkv) and MLP (4h unless given; a gated
 * fc with SwiGLU), a final norm, and an output head tied to the token embedding or not; norms
 * (LayerNorm or RMSNorm) and linear biases as Megatron's flags choose. Registration order is
 * forward order; names like `blocks.0.attn.qkv.weight`.
 */
import { WebtronError } from '../errors.js';
import type { GradDtype, ParamDtype, ParamSpec } from '../ddp/layout.js';

export interface GptShape {
  numLayers: number;
  hiddenSize: number;
  numAttentionHeads: number;
  seqLength: number;
  vocabSize: number;
  /** Rows of the position embedding (Megatron's --max-position-embeddings; default seqLength). */
  maxPositionEmbeddings?: number;
  /** Output head shares the token embedding (default true, as GPT-2). */
  tiedHead?: boolean;
  /** Width of the MLP's hidden layer (Megatron's --ffn-hidden-size, GPT-2's n_inner; default 4 · hiddenSize). */
  ffnHiddenSize?: number;
  /**
   * How positions enter (Megatron's --position-embedding-type): `learned_absolute` (default, GPT-2's
   * `wpe.weight` added to the token embedding), `rope` (rotary: q and k of every head rotated by
   * their position, no position table) or `none`.
   */
  positionEmbeddingType?: PositionEmbeddingType;
  /** Rotary: the base of the frequencies (Megatron's --rotary-base, default 10000). */
  rotaryBase?: number;
  /** Rotary: the fraction of each head's channels rotated (Megatron's --rotary-percent, default 1). */
  rotaryPercent?: number;
  /** Rotary: pairs of neighbouring channels (Megatron's --rotary-interleaved) instead of the two halves. */
  rotaryInterleaved?: boolean;
  /** Rotary: Llama 3's frequency scaling by this factor (Megatron's --use-rope-scaling --rope-scaling-factor). */
  ropeScalingFactor?: number;
  /** The norms (Megatron's --normalization): `LayerNorm` (default: weight and bias) or `RMSNorm` (weight only). */
  normalization?: Normalization;
  /** The MLP's fc layer gives a gate and a value, 2f wide, and silu(gate) · value goes on (Megatron's --swiglu). */
  swiglu?: boolean;
  /** The MLP's activation is max(x, 0)² instead of GELU (Megatron's --squared-relu; not with SwiGLU). */
  squaredRelu?: boolean;
  /** Biases on the linear layers: qkv, attention projection, fc and MLP projection (default true; Megatron's --disable-bias-linear makes it false). */
  addBiasLinear?: boolean;
  /** A bias on qkv even without the other linear biases (Megatron's --add-qkv-bias). */
  addQkvBias?: boolean;
  /**
   * Key and value heads, each shared by numAttentionHeads / numQueryGroups query heads (Megatron's
   * --group-query-attention --num-query-groups; default numAttentionHeads: one per query head).
   */
  numQueryGroups?: number;
  /** The norms' epsilon (Megatron's --norm-epsilon, default 1e-5). */
  normEpsilon?: number;
  /**
   * Zero-centered norm weights (Megatron's --apply-layernorm-1p, its layernorm_zero_centered_gamma):
   * every norm's weight param holds gamma - 1, starts at 0, and the norms scale by it plus 1.
   */
  applyLayernorm1p?: boolean;
  /**
   * Each head's width (Megatron's --kv-channels, transformers' head_dim; default hiddenSize /
   * numAttentionHeads). Given, q, k and v of the heads are H·kvChannels wide in all, which need not be
   * hiddenSize: the attention projection takes them back to hiddenSize.
   */
  kvChannels?: number;
  /**
   * Each head of q and of k normalized over its channels after the qkv projection, before rope, by
   * a norm of the model's kind (Megatron's --qk-layernorm; Qwen3's q_norm and k_norm):
   * `blocks.N.attn.ln_q` and `ln_k`, a head's width each.
   */
  qkLayernorm?: boolean;
}

/** The norms' epsilon: given, or Megatron's 1e-5. */
export const normEpsilon = (s: Pick<GptShape, 'normEpsilon'>): number => s.normEpsilon ?? 1e-5;

/** Key and value heads: numQueryGroups, or one per query head. */
export const queryGroups = (s: Pick<GptShape, 'numAttentionHeads' | 'numQueryGroups'>): number => s.numQueryGroups ?? s.numAttentionHeads;

/** Each head's width: kvChannels, or hiddenSize / numAttentionHeads. */
export const headDim = (s: Pick<GptShape, 'hiddenSize' | 'numAttentionHeads' | 'kvChannels'>): number =>
  s.kvChannels ?? s.hiddenSize / s.numAttentionHeads;

/** The width of the attention's output, q of every head: numAttentionHeads · headDim (hiddenSize unless kvChannels says otherwise). */
export const attentionWidth = (s: Pick<GptShape, 'hiddenSize' | 'numAttentionHeads' | 'kvChannels'>): number =>
  s.numAttentionHeads * headDim(s);

/** The width of the qkv projection's output: q of every head, then k and v of every group. */
export const qkvWidth = (s: Pick<GptShape, 'hiddenSize' | 'numAttentionHeads' | 'numQueryGroups' | 'kvChannels'>): number =>
  (s.numAttentionHeads + 2 * queryGroups(s)) * headDim(s);

export const NORMALIZATIONS = ['LayerNorm', 'RMSNorm'] as const;
export type Normalization = (typeof NORMALIZATIONS)[number];

/** Whether the norms have a bias (LayerNorm's; RMSNorm has none). */
export const normBias = (s: Pick<GptShape, 'normalization'>): boolean => (s.normalization ?? 'LayerNorm') === 'LayerNorm';

/** Whether the linear layers other than qkv have biases. */
export const linearBias = (s: Pick<GptShape, 'addBiasLinear'>): boolean => s.addBiasLinear !== false;

/** Whether qkv has a bias: with the other linear biases, or on its own (--add-qkv-bias). */
export const qkvBias = (s: Pick<GptShape, 'addBiasLinear' | 'addQkvBias'>): boolean => linearBias(s) || s.addQkvBias === true;

/** The width of the fc layer's output: the MLP's width, twice it with SwiGLU (gate and value). */
export const fcWidth = (s: Pick<GptShape, 'hiddenSize' | 'ffnHiddenSize' | 'swiglu'>): number => (s.swiglu ? 2 : 1) * ffnWidth(s);

export const POSITION_EMBEDDING_TYPES = ['learned_absolute', 'rope', 'none'] as const;
export type PositionEmbeddingType = (typeof POSITION_EMBEDDING_TYPES)[number];

/** Whether the model has a learned position table (`wpe.weight`). */
export const learnedPositions = (s: Pick<GptShape, 'positionEmbeddingType'>): boolean =>
  (s.positionEmbeddingType ?? 'learned_absolute') === 'learned_absolute';

/**
 * The channels of each head that rope rotates, as Megatron counts them: d = ⌊head width · percent⌋
 * channels give d/2 frequencies rounded up, so 2·⌈d/2⌉ channels (0 without rope).
 */
export function rotaryDim(s: GptShape): number {
  return s.positionEmbeddingType === 'rope' ? rotaryChannels(headDim(s), s.rotaryPercent ?? 1) : 0;
}

/** The channels rope rotates in a head `headWidth` wide at `percent` (rotaryDim). */
export const rotaryChannels = (headWidth: number, percent: number): number => 2 * Math.ceil(Math.floor(headWidth * percent) / 2);

/**
 * Megatron's MLP width when --ffn-hidden-size is not given: 4h, or with SwiGLU int(4h · 2/3 / 64) · 64
 * (the gated MLP's three products then hold about the params of two at 4h; 0 below h 24).
 */
export const defaultFfnHiddenSize = (hiddenSize: number, swiglu: boolean): number =>
  swiglu ? Math.floor((4 * hiddenSize * 2) / 3 / 64) * 64 : 4 * hiddenSize;

/** The MLP's hidden width: given, or 4h. */
export const ffnWidth = (s: Pick<GptShape, 'hiddenSize' | 'ffnHiddenSize'>): number => s.ffnHiddenSize ?? 4 * s.hiddenSize;

export class ShapeError extends WebtronError {
  override name = 'ShapeError';
  override readonly code: string = 'ERR_SHAPE';
}

export function checkGptShape(s: GptShape): void {
  for (const key of ['numLayers', 'hiddenSize', 'numAttentionHeads', 'seqLength', 'vocabSize'] as const) {
    const v = s[key];
    if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${key} must be a positive integer, got ${String(v)}`, [key]);
  }
  if (s.maxPositionEmbeddings !== undefined && (!Number.isInteger(s.maxPositionEmbeddings) || s.maxPositionEmbeddings < s.seqLength)) {
    throw new ShapeError(`maxPositionEmbeddings ${s.maxPositionEmbeddings} must be an integer of at least seqLength ${s.seqLength}`, [
      'maxPositionEmbeddings',
      'seqLength',
    ]);
  }
  if (s.ffnHiddenSize !== undefined && (!Number.isInteger(s.ffnHiddenSize) || s.ffnHiddenSize < 1))
    throw new ShapeError(`ffnHiddenSize must be a positive integer, got ${String(s.ffnHiddenSize)}`, ['ffnHiddenSize']);
  const type = s.positionEmbeddingType ?? 'learned_absolute';
  if (!POSITION_EMBEDDING_TYPES.includes(type))
    throw new ShapeError(`positionEmbeddingType must be one of ${POSITION_EMBEDDING_TYPES.join(', ')}, got ${String(type)}`, [
      'positionEmbeddingType',
    ]);
  if (s.normEpsilon !== undefined && !(s.normEpsilon > 0 && s.normEpsilon < 1))
    throw new ShapeError(`normEpsilon must be in (0, 1), got ${String(s.normEpsilon)}`, ['normEpsilon']);
  if (s.normalization !== undefined && !NORMALIZATIONS.includes(s.normalization))
    throw new ShapeError(`normalization must be LayerNorm or RMSNorm, got ${String(s.normalization)}`, ['normalization']);
  if (s.squaredRelu && s.swiglu)
    throw new ShapeError('squaredRelu and swiglu exclude each other: the MLP has one activation', ['squaredRelu']);
  if (s.rotaryBase !== undefined && !(Number.isFinite(s.rotaryBase) && s.rotaryBase > 1))
    throw new ShapeError(`rotaryBase must be a number above 1, got ${String(s.rotaryBase)}`, ['rotaryBase']);
  if (s.ropeScalingFactor !== undefined && !(Number.isFinite(s.ropeScalingFactor) && s.ropeScalingFactor >= 1))
    throw new ShapeError(`ropeScalingFactor must be a number of at least 1, got ${String(s.ropeScalingFactor)}`, ['ropeScalingFactor']);
  if (s.rotaryPercent !== undefined && !(s.rotaryPercent > 0 && s.rotaryPercent <= 1))
    throw new ShapeError(`rotaryPercent must be in (0, 1], got ${String(s.rotaryPercent)}`, ['rotaryPercent']);
  if (s.kvChannels !== undefined && !(Number.isInteger(s.kvChannels) && s.kvChannels >= 1))
    throw new ShapeError(`kvChannels must be a positive integer, got ${String(s.kvChannels)}`, ['kvChannels']);
  if (s.kvChannels === undefined && s.hiddenSize % s.numAttentionHeads !== 0) {
    throw new ShapeError(
      `hiddenSize ${s.hiddenSize} is not divisible by numAttentionHeads ${s.numAttentionHeads}; pick sizes where it is, or give each head's width (kvChannels)`,
      ['hiddenSize', 'numAttentionHeads', 'kvChannels'],
    );
  }
  const hd = headDim(s);
  const groups = queryGroups(s);
  if (!Number.isInteger(groups) || groups < 1 || s.numAttentionHeads % groups !== 0)
    throw new ShapeError(`numQueryGroups ${String(s.numQueryGroups)} must divide numAttentionHeads ${s.numAttentionHeads}`, [
      'numQueryGroups',
      'numAttentionHeads',
    ]);
  if (type === 'rope' && (rotaryDim(s) < 2 || rotaryDim(s) > hd))
    throw new ShapeError(
      `rotaryPercent ${s.rotaryPercent ?? 1} of heads ${hd} wide rotates ${rotaryDim(s)} channels; it must be at least 2 and at most ${hd}`,
      ['rotaryPercent'],
    );
}

export function gptParams(s: GptShape, dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32'): ParamSpec[] {
  checkGptShape(s);
  const h = s.hiddenSize;
  const f = ffnWidth(s);
  const p = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype, gradDtype });
  const norm = (prefix: string, width = h) => [p(`${prefix}.weight`, width), ...(normBias(s) ? [p(`${prefix}.bias`, width)] : [])];
  const linear = (prefix: string, inF: number, outF: number, bias: boolean) => [
    p(`${prefix}.weight`, inF, outF),
    ...(bias ? [p(`${prefix}.bias`, outF)] : []),
  ];
  const params = [p('wte.weight', s.vocabSize, h)];
  if (learnedPositions(s)) params.push(p('wpe.weight', s.maxPositionEmbeddings ?? s.seqLength, h));
  for (let l = 0; l < s.numLayers; l++) {
    const b = `blocks.${l}`;
    params.push(
      ...norm(`${b}.ln_1`),
      ...linear(`${b}.attn.qkv`, h, qkvWidth(s), qkvBias(s)),
      ...(s.qkLayernorm ? [...norm(`${b}.attn.ln_q`, headDim(s)), ...norm(`${b}.attn.ln_k`, headDim(s))] : []),
      ...linear(`${b}.attn.proj`, attentionWidth(s), h, linearBias(s)),
      ...norm(`${b}.ln_2`),
      ...linear(`${b}.mlp.fc`, h, fcWidth(s), linearBias(s)),
      ...linear(`${b}.mlp.proj`, f, h, linearBias(s)),
    );
  }
  params.push(...norm('ln_f'));
  if (s.tiedHead === false) params.push(p('lm_head.weight', s.vocabSize, h));
  return params;
}

/** Whether param `name` is a norm's weight (`ln_1`, `ln_2`, `ln_f`, `attn.ln_q`, `attn.ln_k`): what --apply-layernorm-1p centers at 0. */
export function isNormWeight(name: string): boolean {
  return /(^|\.)ln_\w+\.weight$/.test(name);
}

/**
 * Megatron's embedding and output layer (its `is_embedding_or_output_parameter`), which
 * --decoupled-lr trains at a rate of its own: the token embedding, and an untied output layer. The
 * position table is not one of them.
 */
export function embeddingOrOutput(name: string): boolean {
  return name === 'wte.weight' || name === 'lm_head.weight';
}

/**
 * Closed form of the param count, as a check on `gptParams`: V·h + P·h + L·(4h² + 2hf + 9h + f) + 2h
 * (+ V·h untied), P the learned positions (none with rope) and f the MLP's width (with f = 4h,
 * L·(12h² + 13h)). SwiGLU adds hf per layer (the gate), and f with biases; RMSNorm has no norm
 * biases (3h per layer and h less); without linear biases, 5h + f per layer less (3h of them kept
 * with --add-qkv-bias). With G query groups of H heads, k and v are G/H as wide: qkv is h + 2hG/H
 * wide instead of 3h. With heads of kvChannels d, qkv is (H + 2G)·d wide and the attention projection
 * takes H·d to h. --qk-layernorm adds two norms of d per layer.
 */
export function gptParamCount(s: GptShape): number {
  const h = s.hiddenSize;
  const f = ffnWidth(s);
  const g = s.swiglu ? 2 : 1;
  const normOf = (width: number) => (normBias(s) ? 2 : 1) * width;
  const norms = normOf(h);
  const qkv = qkvWidth(s);
  const biases = (qkvBias(s) ? qkv : 0) + (linearBias(s) ? 2 * h + g * f : 0);
  return (
    s.vocabSize * h +
    (learnedPositions(s) ? (s.maxPositionEmbeddings ?? s.seqLength) * h : 0) +
    s.numLayers * (h * qkv + attentionWidth(s) * h + (g + 1) * h * f + 2 * norms + biases + (s.qkLayernorm ? 2 * normOf(headDim(s)) : 0)) +
    norms +
    (s.tiedHead === false ? s.vocabSize * h : 0)
  );
}

/**
 * The params of each section of the forward, in order: the embeddings (with the first layernorm),
 * each block (with the layernorm after it), the head. What is whole at once under sharded params.
 */
export function gptSections(shape: GptShape): string[][] {
  const present = new Set(gptParams(shape).map((p) => p.name));
  return gptSectionsOfAll(shape).map((section) => section.filter((name) => present.has(name)));
}

/** The sections as GPT-2's shape has them (every bias); gptSections keeps the params the model has. */
function gptSectionsOfAll(shape: GptShape): string[][] {
  const norm = (prefix: string) => [`${prefix}.weight`, `${prefix}.bias`];
  const blocks = Array.from({ length: shape.numLayers }, (_, l) => [
    ...[
      'attn.qkv.weight',
      'attn.qkv.bias',
      'attn.ln_q.weight',
      'attn.ln_q.bias',
      'attn.ln_k.weight',
      'attn.ln_k.bias',
      'attn.proj.weight',
      'attn.proj.bias',
      'ln_2.weight',
      'ln_2.bias',
      'mlp.fc.weight',
      'mlp.fc.bias',
      'mlp.proj.weight',
      'mlp.proj.bias',
    ].map((n) => `blocks.${l}.${n}`),
    ...norm(l + 1 < shape.numLayers ? `blocks.${l + 1}.ln_1` : 'ln_f'),
  ]);
  return [
    ['wte.weight', 'wpe.weight', ...norm(shape.numLayers > 0 ? 'blocks.0.ln_1' : 'ln_f')],
    ...blocks,
    [shape.tiedHead === false ? 'lm_head.weight' : 'wte.weight'],
  ];
}

/**
 * Activation recomputation in the backward. Megatron's full recomputation (--recompute-granularity
 * full): `uniform` splits the layers into spans of `numLayers` (the last may be shorter) and
 * recomputes every span; `block` recomputes each of the first `numLayers` layers on its own and none
 * after them. Selective recomputation with `mlp` in --recompute-modules: `mlp` keeps only each
 * block's MLP output and runs its fc and activation again in the backward, from its input.
 */
export type Recompute = SpanRecompute | MlpRecompute;

export interface SpanRecompute {
  method: 'uniform' | 'block';
  numLayers: number;
}

export interface MlpRecompute {
  method: 'mlp';
}

/** Whether a training forward under `r` runs each block's MLP in a child graph and again in the backward. */
export const recomputesMlp = (r: Recompute | null | undefined): boolean => r?.method === 'mlp';

/** A run of blocks [first, end): recomputed in the backward from its input, or kept whole. */
export interface BlockSpan {
  first: number;
  end: number;
  recompute: boolean;
}

/** The blocks in the order they run, as spans: the recomputed ones full recomputation gives, each other block alone. */
export function blockSpans(numLayers: number, recompute?: Recompute | null): BlockSpan[] {
  const full = recompute && recompute.method !== 'mlp' ? recompute : null;
  const spans: BlockSpan[] = [];
  const n = full?.numLayers ?? 0;
  for (let l = 0; l < numLayers; ) {
    const width = full?.method === 'uniform' ? Math.min(n, numLayers - l) : 1;
    const again = !!full && (full.method === 'uniform' || l < n);
    spans.push({ first: l, end: l + width, recompute: again });
    l += width;
  }
  return spans;
}

/** The recomputation in words: `every span of 2 blocks recomputed in the backward`. */
export function recomputeText(r: Recompute): string {
  if (r.method === 'mlp') return "each block's MLP recomputed in the backward";
  const n = r.numLayers;
  const which =
    r.method === 'uniform' ? `every ${n === 1 ? 'block' : `span of ${n} blocks`}` : `the first ${n === 1 ? 'block' : `${n} blocks`}`;
  return `${which} recomputed in the backward`;
}

/**
 * The params a pass needs whole at once, as `gptSections` gives them per forward section, with the
 * sections of each recomputed span as one: its backward runs the span's blocks again and then
 * backpropagates through them, all its params at once.
 */
export function passSections(shape: GptShape, recompute?: Recompute | null): string[][] {
  const sections = gptSections(shape);
  if (!recompute || recompute.method === 'mlp') return sections;
  const merged = [sections[0]!];
  for (const span of blockSpans(shape.numLayers, recompute)) merged.push(sections.slice(span.first + 1, span.end + 1).flat());
  merged.push(sections.at(-1)!);
  return merged;
}
