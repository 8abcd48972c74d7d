/**
 * Linear layers: y = x W + b, and an MLP's fc layer with its GELU fused (Megatron's bias-GELU
 * fusion): gelu(x W + b) in the matmul's epilogue where the kernel has one, and a backward that
 * takes gelu's derivative and the bias grad's column sums in one pass over the grads.
 */
import type { Graph } from './graph.js';
import { matmulInto } from './matmul.js';
import { quadBinding } from './quads.js';
import { finishColumnSums, partGrid, partials, rowChunks, SPLIT_WG, splitColumnSums } from './split-sums.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

function shapeOf(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

interface LinearShape {
  rows: number;
  inF: number;
  outF: number;
  /** W's strides along its input and output dimensions. */
  wk: number;
  wn: number;
  transposed: boolean;
}

function linearShape(x: Tensor, w: Tensor, b: Tensor | undefined, transposed: boolean): LinearShape {
  if (x.dtype !== 'float32') throw new ShapeMismatch(`linear input: expected an fp32 activation, got ${x.dtype}`);
  if (w.shape.length !== 2) throw new ShapeMismatch(`linear: weight must be 2-D, got ${shapeOf(w)}`);
  const [inF, outF] = transposed ? [w.shape[1]!, w.shape[0]!] : [w.shape[0]!, w.shape[1]!];
  if (x.shape[x.shape.length - 1] !== inF)
    throw new ShapeMismatch(`linear: input ${shapeOf(x)} does not end in ${inF} (weight ${shapeOf(w)})`);
  if (b && b.numel !== outF) throw new ShapeMismatch(`linear: bias ${shapeOf(b)} does not match ${outF} outputs`);
  // W[k, n] (k < in, n < out) sits at k·out + n, or at n·in + k when transposed.
  return { rows: x.numel / inF, inF, outF, wk: transposed ? 1 : outF, wn: transposed ? inF : 1, transposed };
}

/** dx += dy Wᵀ and dW += xᵀ dy (or dyᵀ x for a transposed W). */
function linearBackward(g: Graph, x: Tensor, w: Tensor, dy: Tensor, l: LinearShape): void {
  const { rows, inF, outF, wk, wn } = l;
  if (x.requiresGrad) {
    // dx[r, k] += sum_n dy[r, n] W[k, n]
    matmulInto(
      g,
      { m: rows, n: inF, k: outF },
      { t: dy, rs: outF, cs: 1 },
      { t: w, rs: wn, cs: wk },
      { t: g.gradOf(x), rs: inF, cs: 1 },
      { accumulate: true },
    );
  }
  if (!w.requiresGrad) return;
  const dw = g.gradOf(w);
  if (l.transposed) {
    // dW[n, k] += sum_r dy[r, n] x[r, k]
    matmulInto(
      g,
      { m: outF, n: inF, k: rows },
      { t: dy, rs: 1, cs: outF },
      { t: x, rs: inF, cs: 1 },
      { t: dw, rs: inF, cs: 1 },
      { accumulate: true },
    );
  } else {
    // dW[k, n] += sum_r x[r, k] dy[r, n]
    matmulInto(
      g,
      { m: inF, n: outF, k: rows },
      { t: x, rs: 1, cs: inF },
      { t: dy, rs: outF, cs: 1 },
      { t: dw, rs: outF, cs: 1 },
      { accumulate: true },
    );
  }
}

/** out[n] += sum over rows of dy[row, n]. */
function columnSumsInto(g: Graph, dy: Tensor, rows: number, cols: number, out: Tensor): void {
  const D = dy.binding(g.ctx);
  const O = out.binding(g.ctx);
  if (D.shift !== 0) throw new ShapeMismatch('column sums: dy must start its buffer');
  const D4 = cols % 4 === 0 ? quadBinding(g, dy, D) : null;
  if (D4) {
    const split = rowChunks(g, rows, cols / 4);
    if (split) {
      splitColumnSums(g, D4, rows, cols / 4, split, O.binding, O.shift);
      return;
    }
    // Four columns per invocation, in workgroups of 16 so that narrow layers still spread over threads.
    const uniforms = { rows, cols, g_off: O.shift };
    g.runner.dispatch('colsum', 'main4', { WG: 16 }, uniforms, { dy4: D4, g: O.binding }, Math.ceil(cols / 4 / 16));
    return;
  }
  g.runner.dispatch('colsum', 'main', { WG: 64 }, { rows, cols, g_off: O.shift }, { dy: D.binding, g: O.binding }, Math.ceil(cols / 64));
}

/**
 * y = x @ W + b over the last dimension of x. W is [in, out], or [out, in] with `transposed`
 * (torch's Linear layout; a tied output head reads the [vocab, hidden] embedding this way).
 */
export function linear(g: Graph, x: Tensor, w: Tensor, b?: Tensor, options: { transposed?: boolean } = {}): Tensor {
  const l = linearShape(x, w, b, options.transposed ?? false);
  const y = g.output([...x.shape.slice(0, -1), l.outF], 'linear', x.requiresGrad || w.requiresGrad || (b?.requiresGrad ?? false));
  matmulInto(
    g,
    { m: l.rows, n: l.outF, k: l.inF },
    { t: x, rs: l.inF, cs: 1 },
    { t: w, rs: l.wk, cs: l.wn },
    { t: y, rs: l.outF, cs: 1 },
    b ? { bias: b } : {},
  );
  recordLinearBackward(g, x, w, b, l, () => g.gradOf(y));
  return y;
}

/**
 * The backward of y = x W + b recorded on `g` without its forward, for a y whose grad is `dy` (a
 * grad another graph holds): what recomputation records for a layer whose input it needs again but
 * whose output it does not.
 */
export function linearBackwardOf(g: Graph, x: Tensor, w: Tensor, b: Tensor | undefined, dy: Tensor): void {
  const l = linearShape(x, w, b, false);
  if (dy.numel !== l.rows * l.outF) throw new ShapeMismatch(`linear backward: grad ${shapeOf(dy)} does not match ${l.rows} × ${l.outF}`);
  recordLinearBackward(g, x, w, b, l, () => dy);
}

function recordLinearBackward(g: Graph, x: Tensor, w: Tensor, b: Tensor | undefined, l: LinearShape, gradOfY: () => Tensor): void {
  g.record('linear', b ? [x, w, b] : [x, w], () => {
    const dy = gradOfY();
    linearBackward(g, x, w, dy, l);
    if (b?.requiresGrad) columnSumsInto(g, dy, l.rows, l.outF, g.gradOf(b));
  });
}

/**
 * gelu(x @ W + b): an MLP's fc layer and its activation. The pre-activation is kept for the backward
 * (the buffers are those of linear then gelu); gelu is applied in the matmul's epilogue where the
 * kernel has one, else by the GELU kernel. The backward's first pass computes the pre-activation's
 * grad and, for vec4-wide layers, the bias grad's column sums with it.
 */
export function linearGelu(g: Graph, x: Tensor, w: Tensor, b: Tensor): Tensor {
  const l = linearShape(x, w, b, false);
  const grad = x.requiresGrad || w.requiresGrad || b.requiresGrad;
  const shape = [...x.shape.slice(0, -1), l.outF];
  const pre = g.output(shape, 'linear', grad);
  const h = g.output(shape, 'gelu', grad);
  const fused = matmulInto(
    g,
    { m: l.rows, n: l.outF, k: l.inF },
    { t: x, rs: l.inF, cs: 1 },
    { t: w, rs: l.wk, cs: l.wn },
    { t: pre, rs: l.outF, cs: 1 },
    { bias: b, gelu: h },
  );
  if (!fused) geluInto(g, pre, h);
  g.record('linear.gelu', [x, w, b], () => {
    const dh = g.gradOf(h);
    const P = pre.binding(g.ctx);
    const pre4 = l.outF % 4 === 0 && P.shift === 0 ? quadBinding(g, pre, P) : null;
    const dh4 = pre4 && quadBinding(g, dh, dh.binding(g.ctx));
    if (pre4 && dh4 && b.requiresGrad) {
      const { grad: dpre, fresh } = g.gradToWrite(pre);
      const dpre4 = quadBinding(g, dpre, dpre.binding(g.ctx));
      if (dpre4) {
        const B = g.gradOf(b).binding(g.ctx);
        const q = l.outF / 4;
        const split = rowChunks(g, l.rows, q);
        if (split) {
          const parts = partials(g, split, q);
          const uniforms = { rows: l.rows, cols: l.outF, chunk: split.chunk };
          const bindings = { pre4, dh4, dpre4, part4: parts };
          g.runner.dispatch(
            'gelu',
            'backward_bias_part',
            { WG: SPLIT_WG, ACCUMULATE: fresh ? 0 : 1 },
            uniforms,
            bindings,
            partGrid(q, split),
          );
          finishColumnSums(g, parts, split, q, { stride4: q, off4: 0 }, B.binding, B.shift);
        } else {
          g.runner.dispatch(
            'gelu',
            'backward_bias4',
            { WG: 16, ACCUMULATE: fresh ? 0 : 1 },
            { rows: l.rows, cols: l.outF, bias_off: B.shift },
            { pre4, dh4, dpre4, dbias: B.binding },
            Math.ceil(q / 16),
          );
        }
        linearBackward(g, x, w, dpre, l);
        return;
      }
    }
    // The general path: gelu's backward, then the bias's column sums over the result.
    geluBackwardInto(g, pre, dh, g.gradOf(pre));
    linearBackward(g, x, w, g.gradOf(pre), l);
    if (b.requiresGrad) columnSumsInto(g, g.gradOf(pre), l.rows, l.outF, g.gradOf(b));
  });
  return h;
}

/** y = gelu(x), element by element (vec4s where the data lines up). */
export function geluInto(g: Graph, x: Tensor, y: Tensor): void {
  const X4 = x.numel % 4 === 0 && x.binding(g.ctx).shift === 0 ? quadBinding(g, x, x.binding(g.ctx)) : null;
  const Y4 = X4 && y.binding(g.ctx).shift === 0 ? quadBinding(g, y, y.binding(g.ctx)) : null;
  if (X4 && Y4) {
    g.runner.dispatch('gelu', 'forward4', { WG: 256 }, { n: x.numel }, { x4: X4, y4: Y4 }, Math.ceil(x.numel / 4 / 256));
    return;
  }
  const bindings = { x: x.binding(g.ctx).binding, y: y.binding(g.ctx).binding };
  g.runner.dispatch('gelu', 'forward', { WG: 256 }, { n: x.numel }, bindings, Math.ceil(x.numel / 256));
}

/** dx += dy · gelu'(x). */
export function geluBackwardInto(g: Graph, x: Tensor, dy: Tensor, dx: Tensor): void {
  const quad = (t: Tensor) => {
    const r = t.binding(g.ctx);
    return x.numel % 4 === 0 && r.shift === 0 ? quadBinding(g, t, r) : null;
  };
  const X4 = quad(x);
  const DX4 = X4 && quad(dx);
  const DY4 = DX4 && quad(dy);
  if (X4 && DX4 && DY4) {
    g.runner.dispatch('gelu', 'backward4', { WG: 256 }, { n: x.numel }, { x4: X4, y4: DX4, dy4: DY4 }, Math.ceil(x.numel / 4 / 256));
    return;
  }
  const bindings = { x: x.binding(g.ctx).binding, y: dx.binding(g.ctx).binding, dy: dy.binding(g.ctx).binding };
  g.runner.dispatch('gelu', 'backward', { WG: 256 }, { n: x.numel }, bindings, Math.ceil(x.numel / 256));
}
