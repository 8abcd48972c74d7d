/**
 * The strided batched matmul every linear layer and attention product runs through, and the buffer
 * kernel that takes any operand layout.
 */
import type { Graph } from './graph.js';
import { quadReads, stridedOperands } from './matmul-operands.js';
import { rowsLimit, rowsMatmul } from './matmul-rows.js';
import { textureMatmul } from './matmul-texture.js';
import { tiledMatmul } from './matmul-tiled.js';
import { aligned4, quadBinding } from './quads.js';
import { paramCode, ShapeMismatch, type Tensor } from './tensor.js';

function requireF32(t: Tensor, what: string): void {
  if (t.dtype !== 'float32') throw new ShapeMismatch(`${what}: expected an fp32 activation, got ${t.dtype}`);
}

/** One operand of a strided batched matmul: element (z0, z1, row, col) at off + z0·b0 + z1·b1 + row·rs + col·cs. */
export interface Operand {
  t: Tensor;
  off?: number;
  rs: number;
  cs: number;
  b0?: number;
  b1?: number;
}

export interface MatmulShape {
  m: number;
  n: number;
  k: number;
  /** Batch as two levels (z0 < nb0, z1 < nb1), e.g. (batch, head). */
  nb0?: number;
  nb1?: number;
}

export interface MatmulOptions {
  bias?: Tensor;
  accumulate?: boolean;
  alpha?: number;
  /**
   * Also store gelu(C) here (same shape and layout as C, the same offset in its binding; not with
   * `accumulate`): the fc layer of an MLP, whose C is kept as the pre-activation. Kernels that cannot
   * leave it to the caller (matmulInto returns false).
   */
  gelu?: Tensor;
}

/**
 * C = alpha · A @ B (+ bias[n]) (+ C when `accumulate`). A and C are fp32; B and the bias may be
 * params of any dtype (the same one). C's column stride is 1. A product of a few rows (a decoder's
 * step: rowsLimit) runs on the few-rows kernel (matmul-rows.ts); the rest on the adapter's kernel
 * family (GpuContext.matmulKernel): the tiled kernel on hardware (matmul-tiled.ts), on a CPU driver
 * the texture kernel where the operands can be copied into textures (matmul-texture.ts), and the
 * buffer kernel below for the rest.
 */
export function matmulInto(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions = {}): boolean {
  requireF32(a.t, 'matmul A');
  requireF32(c.t, 'matmul C');
  if (c.cs !== 1) throw new ShapeMismatch('matmul: C must have column stride 1');
  if (options.bias && options.bias.dtype !== b.t.dtype)
    throw new ShapeMismatch(`matmul: bias is ${options.bias.dtype} but the weight is ${b.t.dtype}`);
  if (options.gelu && options.accumulate) throw new ShapeMismatch('matmul: gelu(C) is for a C written whole, not accumulated into');
  if (s.m === 0 || s.n === 0 || (s.nb0 ?? 1) * (s.nb1 ?? 1) === 0) return true;
  if (s.m <= rowsLimit(g.ctx) && g.ctx.fewRowsMatmul) {
    rowsMatmul(g, s, a, b, c, options);
    return !options.gelu;
  }
  // gelu(C) lands where C does when both bindings start at the same element.
  const gelu = options.gelu && options.gelu.binding(g.ctx).shift === c.t.binding(g.ctx).shift + (c.off ?? 0) ? options.gelu : undefined;
  const kernel = g.ctx.matmulKernel;
  if (kernel === 'tiled') {
    tiledMatmul(g, s, a, b, c, { ...options, gelu });
    return !options.gelu || gelu !== undefined;
  }
  if (kernel === 'texture' && textureMatmul(g, s, a, b, c, { ...options, gelu })) return !options.gelu || gelu !== undefined;
  bufferMatmul(g, s, a, b, c, { ...options, gelu: undefined });
  return !options.gelu;
}

/** The buffer kernel (shaders/matmul-body.wgsl): operands read in place, any strides, batched. */
function bufferMatmul(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions): void {
  const nb0 = s.nb0 ?? 1;
  const nb1 = s.nb1 ?? 1;
  const ctx = g.ctx;
  const C = c.t.binding(ctx);
  const operands = stridedOperands(g, s, a, b, c, options);
  const lanes = Math.ceil(s.n / 4);
  // The widest workgroup that leaves the fewest idle invocations in the last column block; on a CPU
  // driver its SIMD width (wider workgroups only loop, and each width is another compile).
  const wg = ctx.software
    ? Math.max(8, ctx.subgroupMaxSize)
    : [64, 32, 16, 8].reduce((best, w) => (Math.ceil(lanes / w) * w - lanes < Math.ceil(lanes / best) * best - lanes ? w : best));
  const rows = ctx.matmulRows;
  // vec4 reads where an operand is contiguous in the direction read and 4-element aligned.
  const { aVec, bMode, bVec } = quadReads(g, s, a, b);
  const cStart = C.shift + (c.off ?? 0);
  const cVec = aligned4(s.n, cStart, c.rs, c.b0, c.b1) ? quadBinding(g, c.t, C) : null;
  g.runner.dispatch(
    ctx.hasSubgroupsOf8 ? 'matmul-subgroup' : 'matmul',
    'main',
    {
      WG: wg,
      ROWS: rows,
      B_DTYPE: paramCode(b.t, 'matmul B'),
      A_VEC: aVec ? 1 : 0,
      B_MODE: bMode,
      C_VEC: cVec ? 1 : 0,
    },
    operands.uniforms,
    {
      ...operands.bindings,
      C: cVec ? g.runner.writableDummy : C.binding,
      C4: cVec ?? g.runner.writableDummy,
      A4: aVec ?? g.runner.dummy,
      B4: bVec ?? g.runner.dummy,
    },
    [Math.ceil(lanes / wg), Math.ceil(s.m / rows), nb0 * nb1],
  );
}
