/**
 * --log-throughput: the model FLOPs of a GPT iteration by Megatron-LM's formula, and the device's
 * peak that MFU is taken against: from a table of known adapters, or measured on this one (the best
 * of a few fp32 matmuls through webtron's own kernels) and then marked as measured.
 */
import type { GpuContext } from '../gpu/context.js';
import { attentionWidth, ffnWidth, type GptShape, queryGroups } from '../nn/gpt-spec.js';
import { measuredFmaPeak } from '../gpu/peak.js';

/**
 * Model FLOPs of one iteration of `batch` sequences, forward and backward (3× the forward's
 * multiply-adds, 2 FLOPs each), as Megatron-LM's `num_floating_point_operations` counts a GPT
 * without experts (the formula it has had since March 2025):
 *
 *   12 · B · s · L · h² · (a/h · (1 + G/H + s/(2h)) + g · f/h + V / (2 · L · h))
 *
 * per layer the QKV projection (3h² per token; h² + 2h²·G/H with G query groups of H heads) and
 * the attention's output projection (h²): the `1 + G/H`; the attention scores and their weighted
 * sum, each 2 · s · h per token for the full s × s matrix, of which the causal mask leaves half:
 * `s/(2h)`; the MLP (two h·f products, f = 4h unless --ffn-hidden-size; three with SwiGLU's gate,
 * g = 3/2, else g = 1): `g · f/h`; and once the logits (V · h per token): `V / (2Lh)`. a is the
 * heads' width in all, H · --kv-channels: h unless that says otherwise, and the attention's terms
 * scale with it (a/h), as Megatron's query_projection_size. Layer norms, GELU, softmax and the loss
 * (element-wise work) are not counted.
 */
export function gptFlopsPerIteration(shape: GptShape, batch: number): number {
  const { numLayers: L, hiddenSize: h, seqLength: s, vocabSize: V } = shape;
  const gate = shape.swiglu ? 3 / 2 : 1;
  const kv = queryGroups(shape) / shape.numAttentionHeads;
  const a = attentionWidth(shape) / h;
  return 12 * batch * s * L * h * h * (a * (1 + kv + s / (2 * h)) + (gate * ffnWidth(shape)) / h + V / (2 * L * h));
}

/** A device's peak FLOP/s that MFU is taken against, and where the figure comes from. */
export interface Peak {
  /** TFLOP/s. */
  tflops: number;
  /** 'table: NVIDIA H200, dense bf16' or 'measured: fp32 fma chains through WGSL on …'. */
  source: string;
}

/**
 * Dense peaks from the vendors' data sheets, TFLOP/s: `fp32` and `fp16` without tensor cores (what
 * fp32 WGSL and f16 WGSL arithmetic reach), `half` the 16-bit matrix units' (what bf16 and fp16 runs
 * can reach through subgroup matrices); `fp16` is null where the data sheet gives none. Matched
 * against the adapter's model (`GpuContext.adapterModel`: description and device id).
 */
export interface GpuPeaks {
  name: string;
  fp32: number;
  fp16: number | null;
  half: number;
}

const KNOWN: (GpuPeaks & { pattern: RegExp })[] = [
  { pattern: /\bH200\b/i, name: 'NVIDIA H200', fp32: 66.9, fp16: 133.8, half: 989.4 },
  { pattern: /\bH100\b.*\bPCIe\b/i, name: 'NVIDIA H100 PCIe', fp32: 51.2, fp16: 102.4, half: 756.5 },
  { pattern: /\bH100\b/i, name: 'NVIDIA H100 SXM', fp32: 66.9, fp16: 133.8, half: 989.4 },
  { pattern: /\bA100\b/i, name: 'NVIDIA A100', fp32: 19.5, fp16: 78, half: 312 },
  { pattern: /\bL40S\b/i, name: 'NVIDIA L40S', fp32: 91.6, fp16: null, half: 362 },
  { pattern: /\bRTX 4090\b/i, name: 'NVIDIA GeForce RTX 4090', fp32: 82.6, fp16: 82.6, half: 165 },
  { pattern: /\bRTX 3090\b/i, name: 'NVIDIA GeForce RTX 3090', fp32: 35.6, fp16: 35.6, half: 71 },
  { pattern: /\bMI300X\b/i, name: 'AMD Instinct MI300X', fp32: 163.4, fp16: null, half: 1307.4 },
];

/** The table's row for `adapter` (its model), or null. */
export function knownPeaks(adapter: string): GpuPeaks | null {
  const row = KNOWN.find((k) => k.pattern.test(adapter));
  return row ? { name: row.name, fp32: row.fp32, fp16: row.fp16, half: row.half } : null;
}

/** The table's peak for `adapter` at `precision` (MFU's denominator); null when it is not in the table. */
export function knownPeak(adapter: string, precision: 'fp32' | 'bf16' | 'fp16'): Peak | null {
  const row = knownPeaks(adapter);
  if (!row) return null;
  const half = precision !== 'fp32';
  return { tflops: half ? row.half : row.fp32, source: `table: ${row.name}, dense ${half ? precision : 'fp32 without tensor cores'}` };
}

/**
 * The adapter's fp32 arithmetic peak through WGSL: fma chains on registers (src/gpu/peak.ts), the
 * most fp32 arithmetic any WGSL kernel gets from it, measured by the wall clock. It leaves no trace
 * in the memory accounting: the peaks start again from what is live.
 */
export async function measuredPeak(ctx: GpuContext): Promise<Peak> {
  try {
    const gflops = await measuredFmaPeak(ctx);
    return { tflops: gflops / 1e3, source: `measured: fp32 fma chains through WGSL on ${ctx.adapterName}` };
  } finally {
    ctx.memory.resetPeaks();
  }
}

/** TFLOP/s per rank and MFU (a fraction) of iterations taking `msPerIteration` on `d` ranks. */
export function throughput(flopsPerIteration: number, msPerIteration: number, d: number, peak: Peak): { tflops: number; mfu: number } {
  const tflops = flopsPerIteration / (msPerIteration / 1000) / d / 1e12;
  return { tflops, mfu: tflops / peak.tflops };
}
