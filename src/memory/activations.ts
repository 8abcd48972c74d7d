/**
 * The activation bytes of one GPT forward and backward, counted from webtron's own graph: every
 * buffer the ops allocate (shape, batch, sequence; fp32, each rounded up to 16 bytes as the graph
 * allocates them) and the activation grads the backward creates, all alive until the graph is
 * released. The residual stream has one grad buffer in all: the final layernorm's backward makes it
 * for the last block's output, and each residual add hands its output's grad on to its input
 * (Graph.shareGrad), back to the embedding (or its dropout). With full recomputation the blocks of
 * a recomputed span run in child graphs that hand their buffers on by size, so of the spans' buffers
 * the peak holds, of each size, the most one span holds at once; so do the MLPs that selective
 * recomputation runs again (--recompute-modules mlp). So the prediction equals the
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
  type Recompute,
  recomputesMlp,
  rotaryDim,
  blockSpans,
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
  /**
   * Megatron's full recomputation: the spans it names keep only their output stream; selective with
   * the MLP: each block's MLP keeps only its output (training only).
   */
  recompute?: Recompute | null;
  /**
   * Documents inside the samples (src/nn/documents.ts): a position per token for a learned table
   * (--reset-position-ids), and where each token's document starts (--reset-attention-mask).
   */
  documents?: { positions: boolean; attention: boolean };
}

export function gptActivationBytes(shape: GptShape, o: ActivationOptions): number {
  const B = o.microBatchSize;
  const { numLayers: L, hiddenSize: C, seqLength: T, vocabSize: V } = shape;
  const rows = B * T;
  const train = !o.forwardOnly;
  // [elements, has a grad] of the buffers the top graph allocates: the embedding, or its dropout, is
  // the first residual add's input, and its grad is the residual stream's one.
  const main: Buffers = [
    [rows, false],
    [rows, false],
    [rows * C, !!o.hiddenDropout],
  ]; // ids, targets, embedding
  if (o.documents?.positions && learnedPositions(shape)) main.push([rows, false]);
  if (o.documents?.attention) main.push([rows, false]);
  if (o.hiddenDropout) main.push([rows * C, false]);
  if (rotaryDim(shape) > 0) main.push([T * rotaryDim(shape), false]); // rope's (cos, sin) table, shared by the layers
  main.push([rows * C, true], [rows * 2, false]); // the first block's ln_1 (+ stats), or ln_f without blocks
  // Spans recomputed in the backward run in child graphs, which take each other's buffers by size:
  // together they hold, of each size, the most any one of them holds at once.
  const children = new Map<number, number>();
  const mainOps: string[][] = [...embeddingOp(shape), ...normOp(shape, L > 0 ? 'blocks.0.ln_1' : 'ln_f')];
  const childNeeds = (buffers: Buffers, ops: string[][]) => {
    const need = new Map<number, number>();
    for (const [n, grad] of buffers) for (let k = grad ? 2 : 1; k > 0; k--) need.set(alloc(n), (need.get(alloc(n)) ?? 0) + 1);
    if (o.halfGrads) for (const [size, count] of halfGradScratches(shape, ops)) need.set(size, (need.get(size) ?? 0) + count);
    for (const [size, count] of need) children.set(size, Math.max(children.get(size) ?? 0, count));
  };
  const mlpAgain = train && recomputesMlp(o.recompute);
  // The MLP's children: the forward's, its buffers without grads (the same for every block); the
  // backward's, the fc's and the activation's with their grads (the projection's backward needs its
  // input, not its output).
  const mlp = mlpBuffers(shape, o);
  if (mlpAgain)
    childNeeds(
      mlp.map(([n]) => [n, false]),
      [],
    );
  for (const span of blockSpans(L, train ? o.recompute : null)) {
    const body: Buffers = [];
    for (let l = span.first; l < span.end; l++) {
      body.push(...blockBuffers(shape, o, !span.recompute && l === L - 1, mlpAgain));
      if (mlpAgain) childNeeds(mlp.slice(0, -1), mlpOps(shape, l));
    }
    const ops = Array.from({ length: span.end - span.first }, (_, i) => blockOps(shape, span.first + i, mlpAgain)).flat();
    if (!span.recompute) {
      main.push(...body);
      mainOps.push(...ops);
      continue;
    }
    // Its output stream copied into the top graph (the residual stream's grad if it is the last),
    // and the grad of its last norm's output there, not in the child.
    main.push([rows * C, span.end === L], [rows * C, true]);
    body[body.length - 2] = [rows * C, false];
    childNeeds(body, ops);
  }
  main.push([rows * V, true], [rows * 2, false], [1, true]); // logits, log-sum-exp rows, loss
  mainOps.push([shape.tiedHead === false ? 'lm_head.weight' : 'wte.weight']);
  let bytes = 0;
  for (const [n, grad] of main) bytes += alloc(n) + (grad && train ? alloc(n) : 0);
  for (const [size, count] of children) bytes += size * count;
  if (o.halfGrads && train) for (const [size, count] of halfGradScratches(shape, mainOps)) bytes += size * count;
  return bytes;
}

/** [elements, has a grad] of buffers a graph allocates. */
type Buffers = [number, boolean][];

/**
 * The buffers a block allocates: its attention and MLP, the residual adds, and the norm after the
 * last add (the next block's ln_1, or ln_f), whose output carries a grad. The last add's output is
 * the residual stream: its grad is made there only by the last block (`makesStreamGrad`); every
 * other block's is handed on from the block after it.
 */
function blockBuffers(shape: GptShape, o: ActivationOptions, makesStreamGrad: boolean, mlpAgain: boolean): Buffers {
  const { hiddenSize: C, numAttentionHeads: H, seqLength: T } = shape;
  const B = o.microBatchSize;
  const rows = B * T;
  const A = attentionWidth(shape); // q of every head, the attention's output (C unless --kv-channels)
  const buffers: Buffers = [[rows * qkvWidth(shape), true]]; // qkv
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
  buffers.push([rows * C, false], [rows * C, true], [rows * 2, false]); // add, ln_2 (+ stats)
  // The MLP's buffers, or with it recomputed the copy of its output.
  buffers.push(...(mlpAgain ? ([[rows * C, true]] as Buffers) : mlpBuffers(shape, o)));
  if (o.hiddenDropout) buffers.push([rows * C, true]);
  buffers.push([rows * C, makesStreamGrad], [rows * C, true], [rows * 2, false]); // add, the next norm (+ stats)
  return buffers;
}

/** The MLP's buffers: fc (gate and value with SwiGLU), GELU (or SwiGLU, or squared ReLU), projection. */
function mlpBuffers(shape: GptShape, o: ActivationOptions): Buffers {
  const rows = o.microBatchSize * shape.seqLength;
  return [
    [rows * fcWidth(shape), true],
    [rows * ffnWidth(shape), true],
    [rows * shape.hiddenSize, true],
  ];
}

/** The param-using op of the embedding: the token table, and the position table where there is one. */
function embeddingOp(shape: GptShape): string[][] {
  return [learnedPositions(shape) ? ['wte.weight', 'wpe.weight'] : ['wte.weight']];
}

/** The norm `prefix`'s params as one op. */
function normOp(shape: GptShape, prefix: string): string[][] {
  const have = new Set(gptParams(shape).map((p) => p.name));
  return [[`${prefix}.weight`, `${prefix}.bias`].filter((name) => have.has(name))];
}

/**
 * Block `l`'s param-using ops in forward order, the norm after its last add (the next ln_1, or ln_f)
 * last; the MLP's only where it runs in this graph (not `mlpAgain`).
 */
function blockOps(shape: GptShape, l: number, mlpAgain: boolean): string[][] {
  const next = l + 1 < shape.numLayers ? `blocks.${l + 1}.ln_1` : 'ln_f';
  return [
    ...['attn.qkv', 'attn.ln_q', 'attn.ln_k', 'attn.proj', 'ln_2'].flatMap((part) => normOp(shape, `blocks.${l}.${part}`)),
    ...(mlpAgain ? [] : mlpOps(shape, l)),
    ...normOp(shape, next),
  ].filter((op) => op.length > 0);
}

/** Block `l`'s MLP ops: fc, then the projection. */
function mlpOps(shape: GptShape, l: number): string[][] {
  return ['mlp.fc', 'mlp.proj'].flatMap((part) => normOp(shape, `blocks.${l}.${part}`)).filter((op) => op.length > 0);
}

/**
 * The fp32 scratches that 16-bit grads accumulate in (`Graph.gradOf`), by size, that one graph
 * makes for `ops` (its param-using ops in forward order). Its backward runs them in reverse; an op
 * takes a scratch for each of its params that has none (one a finished param left, of the same
 * size, or a new one) and gives back those whose last use it was. The tied embedding's lives through
 * the top graph's pass: the head uses it first.
 */
function halfGradScratches(shape: GptShape, ops: string[][]): Map<number, number> {
  const elements = new Map(gptParams(shape).map((p) => [p.name, p.shape.reduce((a, b) => a * b, 1)]));
  const uses = new Map<string, number>();
  for (const op of ops) for (const name of op) uses.set(name, (uses.get(name) ?? 0) + 1);
  const spare = new Map<number, number>();
  const made = new Map<number, number>();
  const live = new Set<string>();
  for (const op of [...ops].reverse()) {
    for (const name of op) {
      if (live.has(name)) continue;
      live.add(name);
      const size = alloc(elements.get(name)! + 1);
      if (spare.get(size)) spare.set(size, spare.get(size)! - 1);
      else made.set(size, (made.get(size) ?? 0) + 1);
    }
    for (const name of op) {
      uses.set(name, uses.get(name)! - 1);
      if (uses.get(name) !== 0) continue;
      live.delete(name);
      const size = alloc(elements.get(name)! + 1);
      spare.set(size, (spare.get(size) ?? 0) + 1);
    }
  }
  return made;
}
