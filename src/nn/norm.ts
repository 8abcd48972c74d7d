/**
 * LayerNorm and RMSNorm over the last dimension (shaders/layernorm.wgsl; RMSNorm is its RMS form,
 * without mean or bias), and the residual add before either fused into its forward pass where the
 * graph allows (a GPT block's second norm, the next block's first and the final one each follow a
 * residual add). With `zeroCentered` (Megatron's --apply-layernorm-1p) the weight param holds
 * gamma - 1: the kernels scale by the param plus 1, and its grad is gamma's.
 */
import type { Graph } from './graph.js';
import { add, recordAddBackward } from './add.js';
import { quadAtStart, quadBinding, quadBindings } from './quads.js';
import { finishColumnSums, partGrid, partials, rowChunks, SPLIT_WG } from './split-sums.js';
import { paramCode, rangeBinding, ShapeMismatch, type RangeBinding, type Tensor } from './tensor.js';

function shapeOf(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** What the forward and backward kernels of one layernorm share. */
interface LayerNormPlan {
  rows: number;
  c: number;
  code: { WG: number; P_DTYPE: number; W_VEC: number; RMS: number };
  uniforms: { rows: number; c: number; w_off: number; b_off: number; eps: number; w_add: number };
  /** Both params in one binding, and as vec4s when they line up. */
  W: RangeBinding;
  W4: RangeBinding['binding'] | null;
  rowGroups: number;
  /**
   * The vec4 entry points' workgroups per row (split reductions: `name` becomes the workgroup-per-row
   * entry `*_rows4`, over one workgroup per row), else their own (one invocation per row).
   */
  rowEntry: (name: 'forward4' | 'add_forward4' | 'backward_input4') => [string, number];
  /** `t` as vec4s when the width allows and `t` starts its binding. */
  quad: (t: Tensor) => RangeBinding['binding'] | null;
}

/** The plan of a layernorm with bias `b`, or of an RMSNorm (`b` null). */
function plan(g: Graph, x: Tensor, w: Tensor, bias: Tensor | null, eps: number, zeroCentered: boolean): LayerNormPlan {
  if (x.dtype !== 'float32') throw new ShapeMismatch(`layernorm input: expected an fp32 activation, got ${x.dtype}`);
  const c = x.shape[x.shape.length - 1]!;
  const b = bias ?? w; // RMSNorm reads no bias: the weight stands in for its binding
  if (w.numel !== c || b.numel !== c)
    throw new ShapeMismatch(`layernorm: weight ${shapeOf(w)} / bias ${shapeOf(b)} do not match width ${c}`);
  if (w.buffer !== b.buffer || w.dtype !== b.dtype)
    throw new ShapeMismatch('layernorm: weight and bias must live in the same param buffer');
  const rows = x.numel / c;
  const rowGroups = Math.ceil(rows / 64);
  // One binding covers both params; their offsets are relative to its start.
  const lo = Math.min(w.offset, b.offset);
  const span = Math.max(w.offset, b.offset) + c - lo;
  const W = rangeBinding(g.ctx, w.buffer, lo, span, w.dtype, 'layernorm params');
  const wOff = W.shift + w.offset - lo;
  const bOff = W.shift + b.offset - lo;
  const W4 = wOff % 4 === 0 && bOff % 4 === 0 ? quadBinding(g, w, W) : null;
  return {
    rows,
    c,
    code: { WG: 64, P_DTYPE: paramCode(w, 'layernorm'), W_VEC: W4 ? 1 : 0, RMS: bias ? 0 : 1 },
    uniforms: { rows, c, w_off: wOff, b_off: bOff, eps, w_add: zeroCentered ? 1 : 0 },
    W,
    W4,
    rowGroups,
    rowEntry: (name) => (g.ctx.reductionKernel === 'split' ? [name.replace(/4$/, '_rows4'), rows] : [name, rowGroups]),
    quad: (t) => (c % 4 === 0 ? quadAtStart(g, t) : null),
  };
}

/** The backward of y = layernorm(x) (RMSNorm without `b`) with the saved stats: dx, and dw and db in one pass over the rows. */
function recordBackward(g: Graph, p: LayerNormPlan, x: Tensor, w: Tensor, b: Tensor | null, y: Tensor, stats: Tensor): void {
  const { rows, c, code, uniforms, W, W4, rowGroups, rowEntry, quad } = p;
  const X4 = quad(x);
  const X = x.binding(g.ctx).binding;
  const S = stats.binding(g.ctx).binding;
  g.record('layernorm', b ? [x, w, b] : [x, w], () => {
    const DY4 = X4 && quad(g.gradOf(y));
    const dy = g.gradOf(y).binding(g.ctx).binding;
    if (x.requiresGrad) {
      const dx = g.gradOf(x);
      const DX4 = DY4 && quad(dx);
      const [entry, workgroups, bindings] =
        X4 && DY4 && DX4
          ? [...rowEntry('backward_input4'), { x4: X4, w4: W4 ?? g.runner.dummy, y4: DX4, dy4: DY4 }]
          : ['backward_input', rowGroups, { x: X, y: dx.binding(g.ctx).binding, dy }];
      g.runner.dispatch('layernorm', entry, code, uniforms, { ...bindings, w: W.binding, stats: S }, workgroups);
    }
    if (w.requiresGrad || b?.requiresGrad) {
      const dw = g.gradOf(w);
      const db = b ? g.gradOf(b) : null;
      // Writable bindings may not overlap: one binding over both grads when they share a buffer.
      // Four columns per invocation on vec4s, in workgroups of 16 so that a narrow layer still spreads over threads.
      const q = c / 4;
      const split = X4 && DY4 ? rowChunks(g, rows, q) : null;
      const parts = split ? partials(g, split, 2 * q) : null;
      if (split && parts && X4 && DY4) {
        // One first pass for both grads (dw's partials, then db's, in each row), finished per grad.
        const bindings = { x4: X4, stats: S, dy4: DY4, part4: parts };
        g.runner.dispatch(
          'layernorm',
          'backward_params_part',
          { ...code, WG: SPLIT_WG },
          { rows, c, chunk: split.chunk },
          bindings,
          partGrid(q, split),
        );
      }
      const run = (which: number, G: RangeBinding, dwOff: number, dbOff: number) => {
        const grads = { rows, c, dw_off: dwOff, db_off: dbOff, which };
        if (split && parts) {
          if (which & 1) finishColumnSums(g, parts, split, q, { stride4: 2 * q, off4: 0 }, G.binding, dwOff);
          if (which & 2) finishColumnSums(g, parts, split, q, { stride4: 2 * q, off4: q }, G.binding, dbOff);
        } else if (X4 && DY4) {
          g.runner.dispatch(
            'layernorm',
            'backward_params4',
            { ...code, WG: 16 },
            grads,
            { x4: X4, stats: S, dy4: DY4, grad: G.binding },
            Math.ceil(c / 4 / 16),
          );
        } else {
          g.runner.dispatch('layernorm', 'backward_params', code, grads, { x: X, stats: S, dy, grad: G.binding }, Math.ceil(c / 64));
        }
      };
      if (!db) {
        const Wg = dw.binding(g.ctx);
        run(1, Wg, Wg.shift, 0);
      } else if (dw.buffer === db.buffer) {
        const lo = Math.min(dw.offset, db.offset);
        const G = rangeBinding(g.ctx, dw.buffer, lo, Math.max(dw.offset, db.offset) + c - lo, 'float32', 'layernorm grads');
        run(3, G, G.shift + dw.offset - lo, G.shift + db.offset - lo);
      } else {
        const Wg = dw.binding(g.ctx);
        const Bg = db.binding(g.ctx);
        run(1, Wg, Wg.shift, 0);
        run(2, Bg, 0, Bg.shift);
      }
    }
  });
}

/** LayerNorm: (x - mean) / sqrt(var + eps) · w + b, with w + 1 in place of w when `zeroCentered`. */
export function layerNorm(g: Graph, x: Tensor, w: Tensor, b: Tensor, eps = 1e-5, zeroCentered = false): Tensor {
  return normalize(g, x, w, b, eps, zeroCentered);
}

/** RMSNorm: x / sqrt(mean(x²) + eps) · w (Megatron's --normalization RMSNorm), with w + 1 when `zeroCentered`. */
export function rmsNorm(g: Graph, x: Tensor, w: Tensor, eps = 1e-5, zeroCentered = false): Tensor {
  return normalize(g, x, w, null, eps, zeroCentered);
}

/** A layernorm with bias `b`, or an RMSNorm without. */
function normalize(g: Graph, x: Tensor, w: Tensor, b: Tensor | null, eps: number, zeroCentered: boolean): Tensor {
  const p = plan(g, x, w, b, eps, zeroCentered);
  const y = g.output(x.shape, 'layernorm', true);
  const stats = g.output([p.rows, 2], 'layernorm.stats');
  const S = stats.binding(g.ctx).binding;
  // The vec4 entry points where the width allows and every activation starts its binding.
  const X4 = p.quad(x);
  const Y4 = X4 && p.quad(y);
  const [forward, workgroups, ends] =
    X4 && Y4
      ? [...p.rowEntry('forward4'), { x4: X4, w4: p.W4 ?? g.runner.dummy, y4: Y4 }]
      : ['forward', p.rowGroups, { x: x.binding(g.ctx).binding, y: y.binding(g.ctx).binding }];
  g.runner.dispatch('layernorm', forward, p.code, p.uniforms, { ...ends, w: p.W.binding, stats: S }, workgroups);
  recordBackward(g, p, x, w, b, y, stats);
  return y;
}

/**
 * s = a + b (the residual stream's next value) and layernorm(s), in one pass over each row where
 * the width and the bindings allow vec4s, else an add and a layernorm. The buffers and the backward
 * are those of add then layerNorm.
 */
export function addLayerNorm(
  g: Graph,
  a: Tensor,
  b: Tensor,
  w: Tensor,
  bias: Tensor,
  eps = 1e-5,
  zeroCentered = false,
): { sum: Tensor; y: Tensor } {
  return addNormalize(g, a, b, w, bias, eps, zeroCentered);
}

/** s = a + b and rmsNorm(s), fused as addLayerNorm fuses the layernorm. */
export function addRmsNorm(g: Graph, a: Tensor, b: Tensor, w: Tensor, eps = 1e-5, zeroCentered = false): { sum: Tensor; y: Tensor } {
  return addNormalize(g, a, b, w, null, eps, zeroCentered);
}

function addNormalize(
  g: Graph,
  a: Tensor,
  b: Tensor,
  w: Tensor,
  bias: Tensor | null,
  eps: number,
  zeroCentered: boolean,
): { sum: Tensor; y: Tensor } {
  if (a.numel !== b.numel) throw new ShapeMismatch(`add: ${shapeOf(a)} and ${shapeOf(b)} differ`);
  const p = plan(g, a, w, bias, eps, zeroCentered);
  const AB = p.c % 4 === 0 ? quadBindings(g, a.numel, [a, a.binding(g.ctx)], [b, b.binding(g.ctx)]) : null;
  const atStart = p.quad(a) && p.quad(b);
  if (!AB || !atStart) {
    const sum = add(g, a, b);
    return { sum, y: normalize(g, sum, w, bias, eps, zeroCentered) };
  }
  const sum = g.output(a.shape, 'add', a.requiresGrad || b.requiresGrad);
  const y = g.output(a.shape, 'layernorm', true);
  const stats = g.output([p.rows, 2], 'layernorm.stats');
  const S4 = p.quad(sum)!;
  const Y4 = p.quad(y)!;
  // The add's backward is recorded first: it runs after the layernorm's, as unfused.
  recordAddBackward(g, a, b, sum);
  const [entry, workgroups] = p.rowEntry('add_forward4');
  g.runner.dispatch(
    'layernorm',
    entry,
    p.code,
    p.uniforms,
    { a4: AB[0]!, b4: AB[1]!, s4: S4, y4: Y4, w4: p.W4 ?? g.runner.dummy, w: p.W.binding, stats: stats.binding(g.ctx).binding },
    workgroups,
  );
  recordBackward(g, p, sum, w, bias, y, stats);
  return { sum, y };
}
