/**
 * Rotary position embedding (rope, Megatron's --position-embedding-type rope): q and k of every head
 * rotated in place in the fused qkv, channel pairs by their position's angle (shaders/rope.wgsl);
 * with grouped-query attention, the k of each group before it is repeated for its heads.
 * The angles are Megatron's, computed as it computes them in fp32: inverse frequencies
 * 1 / base^(2i / d) for i < ⌈d/2⌉ (d = ⌊head width · percent⌋), times the position, then cos and sin.
 */
import type { Graph } from './graph.js';
import { type GptShape, headDim, qkvWidth, queryGroups, rotaryDim } from './gpt-spec.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

const f = Math.fround;
const WG = 256;

/** The inverse frequencies of one head's channel pairs, each rounded to fp32 as torch rounds them. */
export function rotaryInverseFrequencies(s: GptShape): Float32Array {
  const d = Math.floor(headDim(s) * (s.rotaryPercent ?? 1));
  const base = s.rotaryBase ?? 10000;
  const inv = Float32Array.from({ length: rotaryDim(s) / 2 }, (_, i) => f(1 / f(base ** f(f(2 * i) / d))));
  return s.ropeScalingFactor === undefined ? inv : inv.map((x) => llama3Scaled(x, s.ropeScalingFactor!));
}

/** Llama 3's context of its unscaled training (8192 tokens), and the wavelengths past which frequencies scale (Megatron's and transformers' constants). */
export const LLAMA3_ROPE = { originalMaxPositionEmbeddings: 8192, lowFreqFactor: 1, highFreqFactor: 4 } as const;

/**
 * One inverse frequency with Llama 3's scaling (Megatron's RotaryEmbedding._apply_scaling, in fp32):
 * wavelengths under 8192 / 4 stay, those over 8192 are divided by `factor`, and those between
 * interpolate smoothly between the two.
 */
function llama3Scaled(freq: number, factor: number): number {
  const { originalMaxPositionEmbeddings: context, lowFreqFactor: low, highFreqFactor: high } = LLAMA3_ROPE;
  const wavelen = f((2 * Math.PI) / freq);
  const scaled = wavelen > context / low ? f(freq / factor) : freq;
  if (wavelen < context / high || wavelen > context / low) return scaled;
  const smooth = f(f(f(context / wavelen) - low) / (high - low));
  return f(f(f(f(1 - smooth) * scaled) / factor) + f(smooth * scaled));
}

/** (cos, sin) of every (position, pair) for `t` positions from `position`: [t, pairs, 2], fp32. */
export function rotaryTable(s: GptShape, t: number, position = 0): Float32Array {
  const inv = rotaryInverseFrequencies(s);
  const table = new Float32Array(t * inv.length * 2);
  for (let p = 0; p < t; p++) {
    for (let i = 0; i < inv.length; i++) {
      const angle = f(f(position + p) * inv[i]!);
      table[(p * inv.length + i) * 2] = Math.cos(angle);
      table[(p * inv.length + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return table;
}

/**
 * Rotate q and k of `qkv` [B, T, C + 2·G·hd] (q of H heads, k and v of G groups; 3C without
 * grouped-query attention) in place by `table` (rotaryTable for these T positions, uploaded once per
 * forward and shared by the layers), and record the backward, which rotates their grads back before
 * the qkv projection's backward reads them.
 */
export function rotary(g: Graph, qkv: Tensor, s: GptShape, table: Tensor): void {
  const [batch, t, width] = qkv.shape as [number, number, number];
  const hd = headDim(s);
  const half = rotaryDim(s) / 2;
  if (qkv.shape.length !== 3 || width !== qkvWidth(s) || qkv.dtype !== 'float32')
    throw new ShapeMismatch(`rope: qkv must be fp32 [B, T, ${qkvWidth(s)}], got ${qkv.dtype} [${qkv.shape.join(', ')}]`);
  if (table.numel !== t * half * 2)
    throw new ShapeMismatch(`rope: the table holds ${table.numel} values, ${t} positions need ${t * half * 2}`);
  const rows = batch * t;
  const heads = s.numAttentionHeads + queryGroups(s);
  const n = rows * heads * half;
  const code = { WG, INTERLEAVED: s.rotaryInterleaved ? 1 : 0 };
  const run = (target: Tensor, sign: number) => {
    const B = target.binding(g.ctx);
    g.runner.dispatch(
      'rope',
      'rotate',
      code,
      { rows, t, width, hd, half, heads, qkv_off: B.shift, sign },
      { table: table.binding(g.ctx).binding, qkv: B.binding },
      Math.ceil(n / WG),
    );
  };
  run(qkv, 1);
  g.record('rope', [qkv], () => run(g.gradOf(qkv), -1));
}
