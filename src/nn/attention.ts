/**
 * Fused causal attention (shaders/attention.wgsl): the forward keeps only y and each row's
 * log-sum-exp, never the [B, H, T, T] probabilities; the backward recomputes them block by block.
 * Its dropout masks are the unfused path's (the same dropout call of the graph, the same element
 * keys), so the two paths agree to rounding and either may run.
 */
import { dropoutSeed } from './dropout-seed.js';
import type { Graph } from './graph.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

/** The graph's document starts (Graph.documents) for `rows` queries, or null: each query attends within its document. */
export function queryStarts(g: Graph, rows: number): Tensor | null {
  const starts = g.documents.starts;
  if (starts && (starts.dtype !== 'uint32' || starts.numel !== rows))
    throw new ShapeMismatch(
      `attention: document starts ${starts.dtype} [${starts.shape.join(', ')}] must be uint32 with one per query (${rows})`,
    );
  return starts;
}

/**
 * Query rows per workgroup and key rows per staged block, given the head dimension and the device's
 * workgroup memory: two blocks of BC rows of HD floats (whole vec4s) and three words per row must fit.
 */
export function attentionBlocks(headDim: number, software: boolean, workgroupBytes: number): { br: number; bc: number } {
  // Each workgroup variable takes whole 16-byte units.
  const bytes = (bc: number) => 2 * bc * 16 * Math.ceil(headDim / 4) + 3 * Math.ceil((bc * 4) / 16) * 16;
  let bc = 32;
  while (bc > 4 && bytes(bc) > workgroupBytes) bc -= 1;
  return { br: software ? 8 : 64, bc };
}

/**
 * Floats of rows an invocation of the backward may hold: NVIDIA's 255 registers per thread, less
 * room for addresses, counters and the scores. Past it the compiler spills rows to memory that every
 * key visits.
 */
const ROW_FLOATS = 224;

/**
 * The key-side backward's passes (the shader's DKV): one pass holding k, v, dk and dv where four rows
 * of the head fit ROW_FLOATS, else a dv pass (k, dv) and a dk pass (k, v, dk), which recompute the
 * scores once more (GPT-2's heads of 64: 256 floats in one pass, 128 and 192 in two).
 */
export function dkvPasses(headDim: number): number[] {
  return 4 * 4 * Math.ceil(headDim / 4) <= ROW_FLOATS ? [3] : [2, 1];
}

export function fusedCausalAttention(g: Graph, qkv: Tensor, heads: number, dropoutP: number): Tensor {
  const [batch, t, c3] = qkv.shape as [number, number, number];
  const c = c3 / 3;
  const hd = c / heads;
  const scale = 1 / Math.sqrt(hd);
  const dropout = g.training && dropoutP > 0;
  const samples = g.samples;
  if (dropout && samples.count !== batch)
    throw new ShapeMismatch(`attention: dropout needs one sample per batch row, got ${samples.count} samples for a batch of ${batch}`);
  // One dropout call, as the unfused path's dropout of the probabilities takes.
  const seed = dropout ? dropoutSeed(g.seed, g.dropoutCalls++) : 0;
  const { br, bc } = attentionBlocks(hd, g.ctx.software, g.ctx.limits.maxComputeWorkgroupStorageSize);
  // Row loops with a constant count (unrolled into registers) on hardware; on a CPU driver only for
  // rows of at most two vec4s, which lavapipe compiles in seconds (the tests run both forms).
  const unrolled = !g.ctx.software || hd <= 8;
  const defines = { HD: hd, HD4: Math.ceil(hd / 4), BR: br, BC: bc, UNROLLED: unrolled ? 1 : 0 };
  const uniforms = {
    B: batch,
    T: t,
    H: heads,
    C: c,
    scale,
    seed,
    p: dropout ? dropoutP : 0,
    dropout: dropout ? 1 : 0,
    sample0: samples.first,
    hd4: Math.ceil(hd / 4),
  };
  const y = g.output([batch, t, c], 'attention', qkv.requiresGrad);
  const lse = g.output([batch * heads * t], 'attention.lse');
  const Q = qkv.binding(g.ctx).binding;
  // Each query within its document (--reset-attention-mask): the shader's DOCS.
  const docs = queryStarts(g, batch * t);
  const starts = docs?.binding(g.ctx).binding ?? g.runner.dummy;
  const code = { DOCS: docs ? 1 : 0 };
  const rowBlocks: [number, number, number] = [Math.ceil(t / br), batch * heads, 1];
  g.runner.dispatch(
    'attention',
    'forward',
    code,
    uniforms,
    { qkv: Q, y: y.binding(g.ctx).binding, lse: lse.binding(g.ctx).binding, starts },
    rowBlocks,
    defines,
  );
  g.record('attention', [qkv], () => {
    const dy = g.gradOf(y).binding(g.ctx).binding;
    const d = g.output([batch * heads * t], 'attention.d');
    const D = d.binding(g.ctx).binding;
    g.runner.dispatch(
      'attention',
      'backward_d',
      {},
      uniforms,
      { dy, yd: y.binding(g.ctx).binding, dsum: D },
      Math.ceil((batch * heads * t) / br),
      defines,
    );
    const grads = { qkv: Q, dy, dqkv: g.gradOf(qkv).binding(g.ctx).binding, lse_in: lse.binding(g.ctx).binding, dsum_in: D, starts };
    g.runner.dispatch('attention', 'backward_dq', code, uniforms, grads, rowBlocks, defines);
    for (const DKV of dkvPasses(hd)) g.runner.dispatch('attention', 'backward_dkv', { ...code, DKV }, uniforms, grads, rowBlocks, defines);
  });
  return y;
}
