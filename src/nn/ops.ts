/**
 * Ops: each runs its WGSL forward now and records a backward that accumulates into its inputs'
 * grads. Activations are fp32; params (weights, biases, embeddings, norms) may be fp32, bf16 or
 * fp16 and are read in their own dtype by the kernels.
 */
import type { Graph } from './graph.js';
import type { Binding } from '../gpu/kernels.js';
import { fusedCausalAttention, queryStarts } from './attention.js';
import { dropoutSeed } from './dropout-seed.js';
import { matmulInto, type Operand } from './matmul.js';
import { quadAtStart } from './quads.js';
import { tokenOrder } from './split-sums.js';
import { vocabWindows } from './vocab-windows.js';
import { paramCode, ShapeMismatch, type Tensor } from './tensor.js';

export { matmulInto, type MatmulShape, type Operand } from './matmul.js';
export { linear, linearBackwardOf, linearGelu } from './linear.js';
import { geluBackwardInto, geluInto } from './linear.js';
export { dropoutSeed } from './dropout-seed.js';
export { addLayerNorm, addRmsNorm, layerNorm, rmsNorm } from './norm.js';
export { add, addInto } from './add.js';

const WG = 256;

function groups(n: number): number {
  return Math.ceil(n / WG);
}

function shapeOf(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

function requireF32(t: Tensor, what: string): void {
  if (t.dtype !== 'float32') throw new ShapeMismatch(`${what}: expected an fp32 activation, got ${t.dtype}`);
}

/**
 * y[b, t] = wte[ids[b, t]] + wpe[position + t] for ids of shape [B, T] (position: where the sequence
 * starts); the token embedding alone without `wpe` (rope, or no positions). With the graph's
 * document positions (Graph.documents), wpe[positions[b, t]] instead.
 */
export function embedding(g: Graph, ids: Tensor, wte: Tensor, wpe: Tensor | null, position = 0): Tensor {
  if (ids.dtype !== 'uint32' || ids.shape.length !== 2)
    throw new ShapeMismatch(`embedding: ids must be uint32 [batch, time], got ${ids.dtype} ${shapeOf(ids)}`);
  const [batch, t] = ids.shape as [number, number];
  const [vocab, c] = wte.shape as [number, number];
  if (wpe && (wpe.shape[1] !== c || wpe.shape[0]! < position + t))
    throw new ShapeMismatch(`embedding: positions ${shapeOf(wpe)} cannot cover ${position + t} steps of width ${c}`);
  if (wpe && wte.dtype !== wpe.dtype) throw new ShapeMismatch(`embedding: token table is ${wte.dtype} but position table is ${wpe.dtype}`);
  const ids2 = wpe ? g.documents.positions : null;
  if (ids2 && (position !== 0 || ids2.dtype !== 'uint32' || ids2.numel !== batch * t))
    throw new ShapeMismatch(
      `embedding: document positions ${ids2.dtype} ${shapeOf(ids2)} must be uint32 [${batch}, ${t}], from position 0`,
    );
  const rows = batch * t;
  const y = g.output([batch, t, c], 'embedding', wte.requiresGrad || !!wpe?.requiresGrad);
  const I = ids.binding(g.ctx);
  // A table over the binding limit: a dispatch per window of tokens, each row written by its token's.
  // (Its backward binds the whole table and its grad: a table over the limit trains nowhere, and
  // training refuses such a param at start-up.)
  const windows = vocabWindows(g.ctx, wte);
  const code = { WG, P_DTYPE: paramCode(wte, 'embedding'), POSITIONS: wpe ? 1 : 0, POSITION_IDS: ids2 ? 1 : 0 };
  const pos = ids2?.binding(g.ctx).binding ?? g.runner.dummy;
  for (const w of windows) {
    const E = w.rows.binding(g.ctx);
    const P = wpe ? wpe.binding(g.ctx) : E;
    g.runner.dispatch(
      'embedding',
      'forward',
      code,
      { rows, c, t, vocab, wte_off: E.shift, wpe_off: P.shift + position * c, first: w.first, count: w.count },
      { ids: I.binding, table: E.binding, table2: P.binding, y: y.binding(g.ctx).binding, pos },
      groups(rows * c),
    );
  }
  g.record('embedding', wpe ? [wte, wpe] : [wte], () => {
    if (position !== 0) throw new ShapeMismatch('embedding: backward of an offset position is not supported (decoding runs without grads)');
    const dy = g.gradOf(y).binding(g.ctx).binding;
    if (wte.requiresGrad) scatterRows(g, ids, vocab, g.gradOf(wte), dy, code, 'token-order');
    if (!wpe?.requiresGrad) return;
    // Positions of documents add up like tokens: the rows of each position, in row order.
    if (ids2) scatterRows(g, ids2, wpe.shape[0]!, g.gradOf(wpe), dy, code, 'position-order');
    else {
      const G = g.gradOf(wpe).binding(g.ctx);
      g.runner.dispatch(
        'embedding',
        'backward_positions',
        code,
        { rows, c, t, vocab, dwpe_off: G.shift },
        { dy, grad: G.binding },
        groups(t * c),
      );
    }
  });
  return y;
}

/**
 * grad[ids[r]] += dy[r] for every row r of `ids` (a table of `count` rows of dy's width): duplicate
 * ids add up in row order, deterministically, with no atomics.
 */
function scatterRows(g: Graph, ids: Tensor, count: number, grad: Tensor, dy: Binding, code: Record<string, number>, scratch: string): void {
  const [rows, c, t] = [ids.numel, grad.shape[1]!, ids.shape[1]!];
  const G = grad.binding(g.ctx);
  // The ids on the host (a graph input) let the split form sort them: a column's walk over every
  // row is then a walk per distinct id over its own rows.
  const hostIds = g.ctx.reductionKernel === 'split' ? g.integerInput(ids) : undefined;
  if (hostIds) {
    const { index, distinct } = tokenOrder(hostIds, count);
    const buffer = g.runner.scratch(scratch, index.byteLength);
    // Written by the queue before the work recorded since, which may read the last index: submit that first.
    g.runner.flush();
    g.ctx.transfers.upload(buffer, index);
    g.runner.dispatch(
      'embedding',
      'backward_tokens_sorted',
      code,
      { rows, c, t, vocab: count, dwte_off: G.shift, distinct, starts_off: rows, tokens_off: rows + distinct + 1 },
      { index: buffer, dy, grad: G.binding },
      groups(distinct * c),
    );
  } else {
    g.runner.dispatch(
      'embedding',
      'backward_tokens',
      code,
      { rows, c, t, vocab: count, dwte_off: G.shift },
      { ids: ids.binding(g.ctx).binding, dy, grad: G.binding },
      groups(c),
    );
  }
}

/** Squared ReLU (Megatron's --squared-relu): y = max(x, 0)² (shaders/relu2.wgsl). */
export function squaredRelu(g: Graph, x: Tensor): Tensor {
  requireF32(x, 'squared ReLU input');
  const y = g.output(x.shape, 'relu2', x.requiresGrad);
  const n = x.numel;
  g.runner.dispatch('relu2', 'forward', { WG }, { n }, { x: x.binding(g.ctx).binding, y: y.binding(g.ctx).binding }, groups(n));
  g.record('relu2', [x], () => {
    const bindings = { x: x.binding(g.ctx).binding, y: g.gradOf(x).binding(g.ctx).binding, dy: g.gradOf(y).binding(g.ctx).binding };
    g.runner.dispatch('relu2', 'backward', { WG }, { n }, bindings, groups(n));
  });
  return y;
}

export function gelu(g: Graph, x: Tensor): Tensor {
  requireF32(x, 'gelu input');
  const y = g.output(x.shape, 'gelu', x.requiresGrad);
  geluInto(g, x, y);
  g.record('gelu', [x], () => geluBackwardInto(g, x, g.gradOf(y), g.gradOf(x)));
  return y;
}

/**
 * SwiGLU of x [.., 2f] (Megatron's --swiglu: the fc layer's gate columns, then its value columns):
 * y [.., f] = silu(gate) · value.
 */
export function swiglu(g: Graph, x: Tensor): Tensor {
  requireF32(x, 'swiglu input');
  const f2 = x.shape[x.shape.length - 1]!;
  if (f2 % 2 !== 0) throw new ShapeMismatch(`swiglu: input ${shapeOf(x)} must have an even last dimension (gate, then value)`);
  const f = f2 / 2;
  const rows = x.numel / f2;
  const y = g.output([...x.shape.slice(0, -1), f], 'swiglu', x.requiresGrad);
  const sizes = { rows, f };
  const quad = (t: Tensor) => (f % 4 === 0 ? quadAtStart(g, t) : null);
  const X4 = quad(x);
  const Y4 = X4 && quad(y);
  if (X4 && Y4) g.runner.dispatch('swiglu', 'forward4', { WG }, sizes, { x4: X4, y4: Y4 }, groups((rows * f) / 4));
  else
    g.runner.dispatch('swiglu', 'forward', { WG }, sizes, { x: x.binding(g.ctx).binding, y: y.binding(g.ctx).binding }, groups(rows * f));
  g.record('swiglu', [x], () => {
    const dy = g.gradOf(y);
    const dx = g.gradOf(x);
    const DY4 = X4 && quad(dy);
    const DX4 = DY4 && quad(dx);
    if (X4 && DY4 && DX4) g.runner.dispatch('swiglu', 'backward4', { WG }, sizes, { x4: X4, dy4: DY4, dx4: DX4 }, groups((rows * f) / 4));
    else
      g.runner.dispatch(
        'swiglu',
        'backward',
        { WG },
        sizes,
        { x: x.binding(g.ctx).binding, dy: dy.binding(g.ctx).binding, dx: dx.binding(g.ctx).binding },
        groups(rows * f),
      );
  });
  return y;
}

/**
 * Inverted dropout: kept elements scaled by 1/(1-p); identity when not training or p = 0. The
 * tensor holds the graph's samples back to back (its first dimension, when it is the batch), and
 * each element's mask is a function of the graph's seed, this call, the element's global sample
 * index and its offset in the sample (shaders/dropout.wgsl).
 */
export function dropout(g: Graph, x: Tensor, p: number): Tensor {
  if (!(p >= 0 && p < 1)) throw new ShapeMismatch(`dropout: p must be in [0, 1), got ${p}`);
  if (!g.training || p === 0) return x;
  const seed = dropoutSeed(g.seed, g.dropoutCalls++);
  const { first, count } = g.samples;
  if (x.numel % count !== 0) throw new ShapeMismatch(`dropout: ${x.numel} elements do not split into the graph's ${count} samples`);
  const y = g.output(x.shape, 'dropout', x.requiresGrad);
  const uniforms = { n: x.numel, seed, p, scale: 1 / (1 - p), per_sample: x.numel / count, sample0: first };
  g.runner.dispatch('dropout', 'forward', { WG }, uniforms, { x: x.binding(g.ctx).binding, y: y.binding(g.ctx).binding }, groups(x.numel));
  g.record('dropout', [x], () => {
    g.runner.dispatch(
      'dropout',
      'backward',
      { WG },
      uniforms,
      { x: g.gradOf(y).binding(g.ctx).binding, y: g.gradOf(x).binding(g.ctx).binding },
      groups(x.numel),
    );
  });
  return y;
}

/**
 * Causal multi-head self-attention core on a fused qkv [B, T, 3C] (q, k, v each [B, T, H, C/H]):
 * y[B, T, C] = softmax(q kᵀ / sqrt(C/H), causal) v, heads read from qkv in place.
 */
export function causalAttention(g: Graph, qkv: Tensor, heads: number, dropoutP = 0): Tensor {
  requireF32(qkv, 'attention input');
  const [batch, t, c3] = qkv.shape as [number, number, number];
  const c = c3 / 3;
  if (qkv.shape.length !== 3 || c3 % 3 !== 0 || c % heads !== 0)
    throw new ShapeMismatch(`attention: qkv ${shapeOf(qkv)} must be [B, T, 3C] with C divisible by ${heads} heads`);
  if (g.ctx.attentionKernel === 'fused') return fusedCausalAttention(g, qkv, heads, dropoutP);
  const hd = c / heads;
  const scale = 1 / Math.sqrt(hd);
  const probs = g.output([batch, heads, t, t], 'attention.probs', qkv.requiresGrad);
  const bh = { nb0: batch, nb1: heads };
  // Per (b, h): q[i, d] at b·T·3C + i·3C + h·hd + d; k at +C; v at +2C.
  const q = (off: number, rowIsTime: boolean): Operand =>
    rowIsTime ? { t: qkv, off, rs: c3, cs: 1, b0: t * c3, b1: hd } : { t: qkv, off, rs: 1, cs: c3, b0: t * c3, b1: hd };
  const p = (transposed: boolean, tensor: Tensor): Operand =>
    transposed ? { t: tensor, rs: 1, cs: t, b0: heads * t * t, b1: t * t } : { t: tensor, rs: t, cs: 1, b0: heads * t * t, b1: t * t };
  // S = q kᵀ (scaled inside the softmax)
  matmulInto(g, { m: t, n: t, k: hd, ...bh }, q(0, true), q(c, false), p(false, probs));
  const P = probs.binding(g.ctx).binding;
  // vec4 entry points when whole rows are quads (every tensor here is a fresh one, at its binding's start).
  const quad = (tensor: Tensor) => (t % 4 === 0 ? quadAtStart(g, tensor) : null);
  const P4 = quad(probs);
  const softmaxSizes = { rows: batch * heads * t, t, scale, q: t, heads };
  const softmaxGroups = Math.ceil((batch * heads * t) / 64);
  // Each query within its document (--reset-attention-mask): the shader's DOCS.
  const docs = queryStarts(g, batch * t);
  const code = { WG: 64, DOCS: docs ? 1 : 0 };
  const starts = docs?.binding(g.ctx).binding ?? g.runner.dummy;
  if (P4) g.runner.dispatch('softmax', 'forward4', code, softmaxSizes, { s4: P4, starts }, softmaxGroups);
  else g.runner.dispatch('softmax', 'forward', code, softmaxSizes, { s: P, starts }, softmaxGroups);
  // Recorded first so that it runs last: after the values' (and any dropout's) backward filled dP.
  g.record('attention.scores', [qkv], () => {
    const dqkv = g.gradOf(qkv);
    const ds = g.gradOf(probs); // dP, turned into dS in place
    const DS4 = P4 && quad(ds);
    if (P4 && DS4) g.runner.dispatch('softmax', 'backward4', code, softmaxSizes, { s4: DS4, p4: P4, starts }, softmaxGroups);
    else g.runner.dispatch('softmax', 'backward', code, softmaxSizes, { s: ds.binding(g.ctx).binding, p: P, starts }, softmaxGroups);
    // dq += dS k ; dk += dSᵀ q
    matmulInto(g, { m: t, n: hd, k: t, ...bh }, p(false, ds), q(c, true), { ...q(0, true), t: dqkv }, { accumulate: true });
    matmulInto(g, { m: t, n: hd, k: t, ...bh }, p(true, ds), q(0, true), { ...q(c, true), t: dqkv }, { accumulate: true });
  });
  let attn = probs;
  if (g.training && dropoutP > 0) attn = dropout(g, probs, dropoutP);
  const y = g.output([batch, t, c], 'attention', qkv.requiresGrad);
  const yOp = (tensor: Tensor): Operand => ({ t: tensor, rs: c, cs: 1, b0: t * c, b1: hd });
  matmulInto(g, { m: t, n: hd, k: t, ...bh }, p(false, attn), q(2 * c, true), yOp(y));
  // Backward through y = attn v (attention dropout, when present, records its own backward).
  g.record('attention.values', [qkv], () => {
    const dy = g.gradOf(y);
    const dqkv = g.gradOf(qkv);
    // dattn = dy vᵀ
    matmulInto(g, { m: t, n: t, k: hd, ...bh }, yOp(dy), q(2 * c, false), p(false, g.gradOf(attn)), { accumulate: true });
    // dv += attnᵀ dy
    matmulInto(g, { m: t, n: hd, k: t, ...bh }, p(true, attn), yOp(dy), { ...q(2 * c, true), t: dqkv }, { accumulate: true });
  });
  return y;
}

/**
 * Grouped-query attention's k and v repeated for every query head: qkv [B, T, C + 2·G·hd] (q of
 * `heads` heads, k and v of `groups`) to [B, T, 3C], each group's k and v for its heads / groups
 * query heads (shaders/gqa.wgsl); the backward sums each group's grads over its heads.
 */
export function repeatKv(g: Graph, qkv: Tensor, heads: number, kvHeads: number): Tensor {
  requireF32(qkv, 'grouped qkv');
  const [batch, t, width] = qkv.shape as [number, number, number];
  const hd = (width / (heads + 2 * kvHeads)) | 0;
  if (qkv.shape.length !== 3 || hd * (heads + 2 * kvHeads) !== width || heads % kvHeads !== 0)
    throw new ShapeMismatch(
      `repeatKv: qkv ${shapeOf(qkv)} must be [B, T, (heads + 2 · groups) · head width] with groups dividing ${heads} heads`,
    );
  const c = heads * hd;
  const rows = batch * t;
  const y = g.output([batch, t, 3 * c], 'attention.qkv', qkv.requiresGrad);
  const sizes = { rows, c, hd, groups: kvHeads, rep: heads / kvHeads };
  const run = (entry: string, x: Tensor, out: Tensor, n: number) =>
    g.runner.dispatch('gqa', entry, { WG }, sizes, { x: x.binding(g.ctx).binding, y: out.binding(g.ctx).binding }, groups(n));
  run('forward', qkv, y, rows * 3 * c);
  g.record('gqa', [qkv], () => run('backward', g.gradOf(y), g.gradOf(qkv), rows * width));
  return y;
}

/**
 * The norms of q and k (Megatron's --qk-layernorm; Qwen3's q_norm and k_norm): each head of q and
 * of k in a fused qkv [B, T, (H + 2·G)·hd] normalized over its hd channels by `norm`, with q's
 * weights or k's, and v as it is; a new qkv. q's heads are gathered as rows [B·T·H, hd] and k's as
 * [B·T·G, hd] (shaders/qk-heads.wgsl), normalized by the norm ops (which record their own
 * backward), and scattered into the new qkv; the backward gathers its grads the same way.
 */
export function qkNorm(g: Graph, qkv: Tensor, heads: number, kvHeads: number, norm: (x: Tensor, part: 'q' | 'k') => Tensor): Tensor {
  requireF32(qkv, 'qk norm input');
  const [batch, t, width] = qkv.shape as [number, number, number];
  const hd = (width / (heads + 2 * kvHeads)) | 0;
  if (qkv.shape.length !== 3 || hd * (heads + 2 * kvHeads) !== width)
    throw new ShapeMismatch(`qkNorm: qkv ${shapeOf(qkv)} must be [B, T, (heads + 2 · groups) · head width]`);
  const rows = batch * t;
  const sizes = { rows, hd, heads, groups: kvHeads };
  const at = (x: Tensor) => x.binding(g.ctx).binding;
  const run = (entry: string, acc: boolean, bindings: Record<string, ReturnType<typeof at>>, n: number) =>
    g.runner.dispatch('qk-heads', entry, { WG, ACC: acc ? 1 : 0 }, sizes, bindings, groups(n));
  const qk = rows * (heads + kvHeads) * hd;
  const xq = g.output([rows * heads, hd], 'attention.q', qkv.requiresGrad);
  const xk = g.output([rows * kvHeads, hd], 'attention.k', qkv.requiresGrad);
  run('gather', false, { x: at(qkv), q: at(xq), k: at(xk) }, qk);
  g.record('qk-heads.gather', [qkv], () => run('scatter', true, { q: at(g.gradOf(xq)), k: at(g.gradOf(xk)), y: at(g.gradOf(qkv)) }, qk));
  const [yq, yk] = [norm(xq, 'q'), norm(xk, 'k')];
  const y = g.output([batch, t, width], 'attention.qkv', qkv.requiresGrad);
  run('scatter', false, { q: at(yq), k: at(yk), y: at(y) }, qk);
  run('values', false, { x: at(qkv), y: at(y) }, rows * kvHeads * hd);
  g.record('qk-heads.scatter', [yq, yk, qkv], () => {
    const dy = g.gradOf(y);
    run('gather', true, { x: at(dy), q: at(g.gradOf(yq)), k: at(g.gradOf(yk)) }, qk);
    run('values', true, { x: at(dy), y: at(g.gradOf(qkv)) }, rows * kvHeads * hd);
  });
  return y;
}

/**
 * The target of a token whose loss is masked (Megatron's loss mask, PyTorch's ignore_index): it adds
 * nothing to the cross-entropy and is not counted in its mean.
 */
export const IGNORED_TARGET = 0xffffffff;

/**
 * Mean cross-entropy of logits [N, V] against uint32 targets [N] (fused log-softmax), over the rows
 * whose target is not IGNORED_TARGET (0 where every row is). A scalar.
 */
export function crossEntropy(g: Graph, logits: Tensor, targets: Tensor): Tensor {
  requireF32(logits, 'cross-entropy logits');
  const v = logits.shape[logits.shape.length - 1]!;
  const rows = logits.numel / v;
  if (targets.dtype !== 'uint32' || targets.numel !== rows)
    throw new ShapeMismatch(`cross-entropy: targets must be ${rows} uint32 values, got ${targets.dtype} ${shapeOf(targets)}`);
  const lse = g.output([rows, 2], 'cross-entropy.rows');
  const loss = g.output([1], 'loss', logits.requiresGrad);
  const L = logits.binding(g.ctx).binding;
  const T = targets.binding(g.ctx).binding;
  const R = lse.binding(g.ctx).binding;
  // Each row's log-sum-exp: one invocation per row (lane reductions), or a workgroup per row.
  if (g.ctx.reductionKernel === 'split')
    g.runner.dispatch('cross-entropy', 'rows_split', {}, { rows, v }, { logits: L, targets: T, lse: R }, rows);
  else g.runner.dispatch('cross-entropy', 'rows', { WG: 64 }, { rows, v }, { logits: L, targets: T, lse: R }, Math.ceil(rows / 64));
  g.runner.dispatch('cross-entropy', 'mean', { WG: 64 }, { rows, v }, { targets: T, lse: R, out: loss.binding(g.ctx).binding }, [1, 1, 1]);
  g.record('cross-entropy', [logits], () => {
    g.runner.dispatch(
      'cross-entropy',
      'backward',
      { WG },
      { rows, v },
      { logits: L, targets: T, lse: R, out: g.gradOf(logits).binding(g.ctx).binding, dloss: g.gradOf(loss).binding(g.ctx).binding },
      groups(rows * v),
    );
  });
  return loss;
}
