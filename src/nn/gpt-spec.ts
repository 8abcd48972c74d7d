/**
 * The parameter list of a GPT in nanoGPT's shape, pure: token and (learned, unless rotary or none) position embeddings, pre-LN blocks
 * of attention (fused qkv) and MLP (4h unless given), a final layernorm, and an output head tied to the token
 * embedding or not. Registration order is forward order; names like `blocks.0.attn.qkv.weight`.
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
}

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
  return s.positionEmbeddingType === 'rope' ? rotaryChannels(s.hiddenSize / s.numAttentionHeads, s.rotaryPercent ?? 1) : 0;
}

/** The channels rope rotates in a head `headWidth` wide at `percent` (rotaryDim). */
export const rotaryChannels = (headWidth: number, percent: number): number => 2 * Math.ceil(Math.floor(headWidth * percent) / 2);

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
  if (s.rotaryBase !== undefined && !(Number.isFinite(s.rotaryBase) && s.rotaryBase > 1))
    throw new ShapeError(`rotaryBase must be a number above 1, got ${String(s.rotaryBase)}`, ['rotaryBase']);
  if (s.rotaryPercent !== undefined && !(s.rotaryPercent > 0 && s.rotaryPercent <= 1))
    throw new ShapeError(`rotaryPercent must be in (0, 1], got ${String(s.rotaryPercent)}`, ['rotaryPercent']);
  if (s.hiddenSize % s.numAttentionHeads !== 0) {
    throw new ShapeError(
      `hiddenSize ${s.hiddenSize} is not divisible by numAttentionHeads ${s.numAttentionHeads}; pick sizes where it is`,
      ['hiddenSize', 'numAttentionHeads'],
    );
  }
  const hd = s.hiddenSize / s.numAttentionHeads;
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
  const params = [p('wte.weight', s.vocabSize, h)];
  if (learnedPositions(s)) params.push(p('wpe.weight', s.maxPositionEmbeddings ?? s.seqLength, h));
  for (let l = 0; l < s.numLayers; l++) {
    const b = `blocks.${l}`;
    params.push(
      p(`${b}.ln_1.weight`, h),
      p(`${b}.ln_1.bias`, h),
      p(`${b}.attn.qkv.weight`, h, 3 * h),
      p(`${b}.attn.qkv.bias`, 3 * h),
      p(`${b}.attn.proj.weight`, h, h),
      p(`${b}.attn.proj.bias`, h),
      p(`${b}.ln_2.weight`, h),
      p(`${b}.ln_2.bias`, h),
      p(`${b}.mlp.fc.weight`, h, f),
      p(`${b}.mlp.fc.bias`, f),
      p(`${b}.mlp.proj.weight`, f, h),
      p(`${b}.mlp.proj.bias`, h),
    );
  }
  params.push(p('ln_f.weight', h), p('ln_f.bias', h));
  if (s.tiedHead === false) params.push(p('lm_head.weight', s.vocabSize, h));
  return params;
}

/**
 * Closed form of the param count, as a check on `gptParams`: V·h + P·h + L·(4h² + 2hf + 9h + f) + 2h
 * (+ V·h untied), P the learned positions (none with rope) and f the MLP's width (with f = 4h,
 * L·(12h² + 13h)).
 */
export function gptParamCount(s: GptShape): number {
  const h = s.hiddenSize;
  const f = ffnWidth(s);
  return (
    s.vocabSize * h +
    (learnedPositions(s) ? (s.maxPositionEmbeddings ?? s.seqLength) * h : 0) +
    s.numLayers * (4 * h * h + 2 * h * f + 9 * h + f) +
    2 * h +
    (s.tiedHead === false ? s.vocabSize * h : 0)
  );
}

/**
 * The params of each section of the forward, in order: the embeddings (with the first layernorm),
 * each block (with the layernorm after it), the head. What is whole at once under sharded params.
 */
export function gptSections(shape: GptShape): string[][] {
  const norm = (prefix: string) => [`${prefix}.weight`, `${prefix}.bias`];
  const blocks = Array.from({ length: shape.numLayers }, (_, l) => [
    ...[
      'attn.qkv.weight',
      'attn.qkv.bias',
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
    ['wte.weight', ...(learnedPositions(shape) ? ['wpe.weight'] : []), ...norm(shape.numLayers > 0 ? 'blocks.0.ln_1' : 'ln_f')],
    ...blocks,
    [shape.tiedHead === false ? 'lm_head.weight' : 'wte.weight'],
  ];
}
