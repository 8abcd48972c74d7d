/**
 * The activation bytes of one GPT forward and backward, counted from webtron's own graph: every
 * buffer the ops allocate (shape, batch, sequence; fp32, each rounded up to 16 bytes as the graph
 * allocates them) and the activation grads the backward creates, all alive until the graph is
 * released. The residual stream has one grad buffer in all: the final layernorm's backward makes it
 * for the last block's output, and each residual add hands its output's grad on to its input
 * (Graph.shareGrad), back to the embedding (or its dropout). So the prediction equals the
 * allocator's peak (test/memory/activations.test.ts checks it on real forward and backward passes).
 * Pure.
 */
import type { GptShape } from '../nn/gpt-spec.js';
import {
  attentionWidth,
  fcWidth,
  ffnWidth,
  gptParams,
  headDim,
  learnedPositions,
  qkvWidth,
  queryGroups,
  rotaryDim,
} from '../nn/gpt-spec.js';

/** Bytes the graph allocates for `elements` 4-byte values. */
const alloc = (elements: number) => Math.ceil(Math.max(1, elements) / 4) * 16;

export interface ActivationOptions {
  microBatchSize: number;
  /** Dropout on (training with p > 0): its outputs are buffers of their own. */
  hiddenDropout?: boolean;
  attentionDropout?: boolean;
  /** 16-bit grads (fp16, or bf16 main grads): each param's grad is accumulated in an fp32 buffer first. */
  halfGrads?: boolean;
  /** Forward only (evaluation): no grads. */
  forwardOnly?: boolean;
  /**
   * The attention kernel (GpuContext.attentionKernel): `unfused` stores the [B, H, T, T]
   * probabilities (and their dropout) with grads; `fused` only the output and a log-sum-exp per row,
   * plus a row sum in the backward. Default unfused.
   */
  attention?: 'fused' | 'unfused';
}

export function gptActivationBytes(shape: GptShape, o: ActivationOptions): number {
  const B = o.microBatchSize;
  const { numLayers: L, hiddenSize: C, numAttentionHeads: H, seqLength: T, vocabSize: V } = shape;
  const F = ffnWidth(shape);
  const A = attentionWidth(shape); // q of every head, the attention's output (C unless --kv-channels)
  const rows = B * T;
  // [elements, has a grad] of every buffer the forward allocates.
  // The embedding, or its dropout, is the first residual add's input: its grad is the shared one.
  const buffers: [number, boolean][] = [
    [rows, false],
    [rows, false],
    [rows * C, !!o.hiddenDropout],
  ]; // ids, targets, embedding
  if (o.hiddenDropout) buffers.push([rows * C, false]);
  if (rotaryDim(shape) > 0) buffers.push([T * rotaryDim(shape), false]); // rope's (cos, sin) table, shared by the layers
  for (let l = 0; l < L; l++) {
    buffers.push([rows * C, true], [rows * 2, false], [rows * qkvWidth(shape), true]); // ln_1 (+ stats), qkv
    if (shape.qkLayernorm) {
      // q's and k's heads as rows, each normalized (+ stats), then the new qkv.
      const [q, k] = [rows * H, rows * queryGroups(shape)];
      const hd = headDim(shape);
      buffers.push(
        [q * hd, true],
        [k * hd, true],
        [q * hd, true],
        [q * 2, false],
        [k * hd, true],
        [k * 2, false],
        [rows * qkvWidth(shape), true],
      );
    }
    if (queryGroups(shape) < H) buffers.push([rows * 3 * A, true]); // k and v repeated for every query head
    if (o.attention === 'fused') {
      buffers.push([B * H * T, false]); // log-sum-exp per row
      if (!o.forwardOnly) buffers.push([B * H * T, false]); // the backward's rowsum(dy ∘ y)
    } else {
      buffers.push([B * H * T * T, true]); // probabilities
      if (o.attentionDropout) buffers.push([B * H * T * T, true]);
    }
    buffers.push([rows * A, true], [rows * C, true]); // attention output, projection
    if (o.hiddenDropout) buffers.push([rows * C, true]);
    // add, ln_2 (+ stats), fc (gate and value with SwiGLU), GELU or SwiGLU, projection
    buffers.push([rows * C, false], [rows * C, true], [rows * 2, false], [rows * fcWidth(shape), true], [rows * F, true], [rows * C, true]);
    if (o.hiddenDropout) buffers.push([rows * C, true]);
    buffers.push([rows * C, l === L - 1]); // add: the last block's makes the residual stream's grad
  }
  buffers.push([rows * C, true], [rows * 2, false], [rows * V, true], [rows * 2, false], [1, true]); // ln_f (+ stats), logits, log-sum-exp rows, loss
  let bytes = 0;
  for (const [n, grad] of buffers) bytes += alloc(n) + (grad && !o.forwardOnly ? alloc(n) : 0);
  if (o.halfGrads && !o.forwardOnly) bytes += halfGradScratchBytes(shape);
  return bytes;
}

/**
 * Bytes of the fp32 scratches that 16-bit grads accumulate in (`Graph.gradOf`). The backward runs
 * the forward's param-using ops in reverse; an op takes a scratch for each of its params that has
 * none (one a finished param left, of the same size, or a new one) and gives back those whose last
 * use it was. The tied embedding's lives through the whole pass: the head uses it first.
 */
function halfGradScratchBytes(shape: GptShape): number {
  const elements = new Map(gptParams(shape).map((p) => [p.name, p.shape.reduce((a, b) => a * b, 1)]));
  const pair = (prefix: string) => [`${prefix}.weight`, `${prefix}.bias`].filter((name) => elements.has(name));
  const ops: string[][] = [learnedPositions(shape) ? ['wte.weight', 'wpe.weight'] : ['wte.weight']];
  for (let l = 0; l < shape.numLayers; l++) {
    for (const part of ['ln_1', 'attn.qkv', 'attn.ln_q', 'attn.ln_k', 'attn.proj', 'ln_2', 'mlp.fc', 'mlp.proj'])
      ops.push(pair(`blocks.${l}.${part}`));
  }
  ops.push(pair('ln_f'), [shape.tiedHead === false ? 'lm_head.weight' : 'wte.weight']);
  const uses = new Map<string, number>();
  for (const op of ops) for (const name of op) uses.set(name, (uses.get(name) ?? 0) + 1);
  const spare = new Map<number, number>();
  const live = new Set<string>();
  let bytes = 0;
  for (const op of ops.reverse()) {
    for (const name of op) {
      if (live.has(name)) continue;
      live.add(name);
      const size = alloc(elements.get(name)! + 1);
      if (spare.get(size)) spare.set(size, spare.get(size)! - 1);
      else bytes += size;
    }
    for (const name of op) {
      uses.set(name, uses.get(name)! - 1);
      if (uses.get(name) !== 0) continue;
      live.delete(name);
      const size = alloc(elements.get(name)! + 1);
      spare.set(size, (spare.get(size) ?? 0) + 1);
    }
  }
  return bytes;
}
