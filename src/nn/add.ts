/** Residual adds and the accumulation of one tensor into another (grads), on vec4s where the data lines up. */
import type { Graph } from './graph.js';
import { quadBindings } from './quads.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

const WG = 256;

function groups(n: number): number {
  return Math.ceil(n / WG);
}

function shapeOf(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** dst += scale · src (fp32, same element count). */
export function addInto(g: Graph, dst: Tensor, src: Tensor, scale = 1): void {
  if (dst.numel !== src.numel) throw new ShapeMismatch(`add: ${shapeOf(dst)} and ${shapeOf(src)} differ`);
  const D = dst.binding(g.ctx);
  const S = src.binding(g.ctx);
  const quads = quadBindings(g, dst.numel, [dst, D], [src, S]);
  if (quads) {
    g.runner.dispatch(
      'accumulate',
      'add_f32_4',
      { WG },
      { n: dst.numel, dst_shift: D.shift, src_shift: S.shift, scale },
      { dst4: quads[0]!, src4: quads[1]! },
      groups(dst.numel / 4),
    );
    return;
  }
  g.runner.dispatch(
    'accumulate',
    'add_f32',
    { WG },
    { n: dst.numel, dst_shift: D.shift, src_shift: S.shift, scale },
    { src: S.binding, dst: D.binding },
    groups(dst.numel),
  );
}

/**
 * Residual add. Forward, one pass writes y = a + b where the data allows vec4s. Backward, y's grad
 * becomes a's (Graph.shareGrad: nothing to add or copy) and is added to b's.
 */
export function add(g: Graph, a: Tensor, b: Tensor): Tensor {
  if (a.numel !== b.numel) throw new ShapeMismatch(`add: ${shapeOf(a)} and ${shapeOf(b)} differ`);
  const A = a.binding(g.ctx);
  const B = b.binding(g.ctx);
  // The one-pass vec4 sum writes all of y; the element-wise fallback adds both into a zeroed y.
  const onePass = quadBindings(g, a.numel, [a, A], [b, B]) !== null;
  const y = onePass
    ? g.output(a.shape, 'add', a.requiresGrad || b.requiresGrad)
    : g.tensor(a.shape, 'add', a.requiresGrad || b.requiresGrad);
  const Y = y.binding(g.ctx);
  const quads = quadBindings(g, y.numel, [y, Y], [a, A], [b, B]);
  if (quads) {
    g.runner.dispatch(
      'accumulate',
      'sum_f32_4',
      { WG },
      { n: y.numel, dst_shift: Y.shift, a_shift: A.shift, src_shift: B.shift, scale: 1 },
      { dst4: quads[0]!, a4: quads[1]!, src4: quads[2]! },
      groups(y.numel / 4),
    );
  } else {
    addInto(g, y, a);
    addInto(g, y, b);
  }
  recordAddBackward(g, a, b, y);
  return y;
}

/** The backward of y = a + b: y's grad becomes a's (shared where it can) and is added to b's. */
export function recordAddBackward(g: Graph, a: Tensor, b: Tensor, y: Tensor): void {
  g.record('add', [a, b], () => {
    const dy = g.gradOf(y);
    const shared = a.requiresGrad && a.buffer !== b.buffer && g.shareGrad(a, y);
    if (a.requiresGrad && !shared) addInto(g, g.gradOf(a), dy);
    if (b.requiresGrad) addInto(g, g.gradOf(b), dy);
  });
}
