/**
 * The operand description every strided matmul kernel reads (the buffer, tiled and tensor-core
 * kernels share one uniform struct): sizes, each operand's strides and offset in its binding, flags.
 */
import type { Binding } from '../gpu/kernels.js';
import type { RangeBinding } from './tensor.js';
import type { UniformValues } from '../gpu/bindings.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { aligned4, quadBinding } from './quads.js';

export interface StridedOperands {
  uniforms: UniformValues;
  /** A, B, C and the bias (B again when there is none: the kernel does not read it then). */
  bindings: Record<'A' | 'B' | 'C' | 'bias', Binding>;
  /** gelu(C)'s binding when asked for (FLAGS then has 4). */
  gelu: Binding | null;
}

export function stridedOperands(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions): StridedOperands {
  const ctx = g.ctx;
  const A = a.t.binding(ctx);
  const B = b.t.binding(ctx);
  const C = c.t.binding(ctx);
  const bias = options.bias?.binding(ctx);
  return {
    uniforms: {
      FLAGS: (bias ? 1 : 0) | (options.accumulate ? 2 : 0) | (options.gelu ? 4 : 0),
      M: s.m,
      N: s.n,
      K: s.k,
      NB1: s.nb1 ?? 1,
      A_RS: a.rs,
      A_CS: a.cs,
      A_B0: a.b0 ?? 0,
      A_B1: a.b1 ?? 0,
      B_RS: b.rs,
      B_CS: b.cs,
      B_B0: b.b0 ?? 0,
      B_B1: b.b1 ?? 0,
      C_RS: c.rs,
      C_B0: c.b0 ?? 0,
      C_B1: c.b1 ?? 0,
      a_off: A.shift + (a.off ?? 0),
      b_off: B.shift + (b.off ?? 0),
      c_off: C.shift + (c.off ?? 0),
      bias_off: bias ? bias.shift : 0,
      alpha: options.alpha ?? 1,
    },
    bindings: { A: A.binding, B: B.binding, C: C.binding, bias: (bias ?? B).binding },
    gelu: options.gelu ? options.gelu.binding(ctx).binding : null,
  };
}

/**
 * The vec4 reads of the kernels that read A and B in place (matmul-body.wgsl, matmul-rows.wgsl):
 * A as vec4s along k where it is contiguous there and 4-aligned (A_VEC), B as vec4s along n
 * (bMode 1) or along k (bMode 2) where it is fp32, contiguous that way and aligned, else element
 * by element (bMode 0). The vec4 bindings, or null where not read so.
 */
export function quadReads(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
): { aVec: RangeBinding['binding'] | null; bMode: 0 | 1 | 2; bVec: RangeBinding['binding'] | null } {
  const A = a.t.binding(g.ctx);
  const B = b.t.binding(g.ctx);
  const aVec = a.cs === 1 && aligned4(s.k, A.shift + (a.off ?? 0), a.rs, a.b0, a.b1) ? quadBinding(g, a.t, A) : null;
  const bStart = B.shift + (b.off ?? 0);
  const bF32 = b.t.dtype === 'float32';
  let bMode: 0 | 1 | 2 = 0;
  if (bF32 && b.cs === 1 && aligned4(s.n, bStart, b.rs, b.b0, b.b1)) bMode = 1;
  else if (bF32 && b.rs === 1 && aligned4(s.k, bStart, b.cs, b.b0, b.b1)) bMode = 2;
  const bVec = bMode > 0 ? quadBinding(g, b.t, B) : null;
  return { aVec, bMode: bVec ? bMode : 0, bVec };
}
