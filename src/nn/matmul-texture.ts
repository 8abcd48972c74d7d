/**
 * The texture matmul for CPU drivers (shaders/matmul-texture-body.wgsl): A and B are read from copies
 * of their tensors in storage textures, made with copyBufferToTexture (a memcpy on lavapipe, 17-24
 * GB/s measured), with branch-free image loads instead of lane-by-lane buffer loads.
 *
 * A copy holds a whole tensor, one buffer row per texture row, and each operand is a block of it:
 * the tensor qualifies when one dimension of the operand is contiguous, its rows lie 256 bytes apart
 * (WebGPU's bytesPerRow rule) from a texel-aligned start, and every batch's block sits at whole texels
 * inside the rows. So x is A for y = x W and Aᵀ for dW = xᵀ dy, W is B for y = x W and Bᵀ for
 * dx = dy Wᵀ, q, k and v of every head are blocks of one copy of qkv, and the runner makes each copy
 * once until something overwrites it (texture-copies.ts). Anything else runs on the buffer kernel.
 */
import type { TextureRequest } from '../gpu/context.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { quadBinding } from './quads.js';
import { DTYPE_BYTES, paramCode } from './tensor.js';
import type { TextureRegion } from './texture-copies.js';

/** Rows and columns of C per workgroup (the shader's 32 rows and 8 lanes x 2 quads x 4). */
const TILE_ROWS = 32;
const TILE_COLS = 64;

const FORMATS: Record<string, { format: TextureRequest['format']; shader: string }> = {
  float32: { format: 'rgba32float', shader: 'matmul-texture' },
  float16: { format: 'rgba16float', shader: 'matmul-texture-f16' },
  bfloat16: { format: 'rgba16uint', shader: 'matmul-texture-bf16' },
};

/** An operand as a block of its tensor's texture copy (shaders/matmul-texture-body.wgsl). */
interface TextureOperand {
  region: TextureRegion;
  /** Rows of the texture run along the operand's second dimension (A_T, B_T). */
  transposed: boolean;
  /** The block's origin for batch (0, 0) and its steps per batch level, in texels and rows. */
  x0: number;
  y0: number;
  bx0: number;
  by0: number;
  bx1: number;
  by1: number;
}

/**
 * Operand `op` (`rows` x `cols` per batch, nb0 x nb1 batches) as a block of a copy of its whole
 * tensor, rows of the tensor as they lie: null when no copy can hold it. A copy takes whole rows of
 * a dimension that is contiguous (stride 1) and 256 bytes apart (WebGPU's bytesPerRow rule), from a
 * texel-aligned start; each batch's block must sit at whole texels inside the rows.
 */
function textureOperand(g: Graph, op: Operand, rows: number, cols: number, nb0: number, nb1: number): TextureOperand | null {
  const t = op.t;
  const format = FORMATS[t.dtype]?.format;
  if (!format) return null;
  const bytes = DTYPE_BYTES[t.dtype];
  let transposed: boolean;
  if (op.cs === 1) transposed = false;
  else if (op.rs === 1) transposed = true;
  else return null;
  // Along a texture row: the operand's contiguous dimension; across rows: the other.
  const [along, across] = transposed ? [rows, cols] : [cols, rows];
  const rowLength = transposed ? op.cs : op.rs;
  const max = g.ctx.limits.maxTextureDimension2D;
  const start = t.offset * bytes;
  const height = t.numel / rowLength;
  if (rowLength % 4 !== 0 || (rowLength * bytes) % 256 !== 0 || start % (4 * bytes) !== 0 || !Number.isInteger(height)) return null;
  if (rowLength / 4 > max || height > max || along % 4 !== 0) return null;
  const split = (e: number) => ({ x: e % rowLength, y: Math.floor(e / rowLength) });
  const o = split(op.off ?? 0);
  const s0 = split(op.b0 ?? 0);
  const s1 = split(op.b1 ?? 0);
  if (o.x % 4 !== 0 || s0.x % 4 !== 0 || s1.x % 4 !== 0) return null;
  // Every batch's block inside the rows and the tensor (no batch step may carry into the next row).
  if (o.x + (nb0 - 1) * s0.x + (nb1 - 1) * s1.x + along > rowLength) return null;
  if (o.y + (nb0 - 1) * s0.y + (nb1 - 1) * s1.y + across > height) return null;
  return {
    region: { buffer: t.buffer, offset: start, bytesPerRow: rowLength * bytes, width: rowLength / 4, height, format },
    transposed,
    x0: o.x / 4,
    y0: o.y,
    bx0: s0.x / 4,
    by0: s0.y,
    bx1: s1.x / 4,
    by1: s1.y,
  };
}

/** Run C = alpha · A @ B (+ bias) (+ C) on the texture kernel; false (nothing recorded) when it cannot take the operands. */
export function textureMatmul(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions): boolean {
  const nb0 = s.nb0 ?? 1;
  const nb1 = s.nb1 ?? 1;
  if (!g.ctx.subgroupsOfExactly8 || s.k % 4 !== 0 || !FORMATS[b.t.dtype] || a.t.dtype !== 'float32') return false;
  // A batch of products narrower than a tile leaves half its lanes idle: the buffer kernel's 32-wide
  // tiles were faster there (attention with 32-wide heads: 4.6 against 6.3 ms per layer, lavapipe).
  if (nb0 * nb1 > 1 && s.n < TILE_COLS) return false;
  const A = textureOperand(g, a, s.m, s.k, nb0, nb1);
  const B = textureOperand(g, b, s.k, s.n, nb0, nb1);
  if (!A || !B) return false;
  const ctx = g.ctx;
  const C = c.t.binding(ctx);
  const cStart = C.shift + (c.off ?? 0);
  const aligned = [s.n, cStart, c.rs, c.b0 ?? 0, c.b1 ?? 0].every((v) => v % 4 === 0);
  const C4 = aligned ? quadBinding(g, c.t, C) : null;
  const H4 = options.gelu ? quadBinding(g, options.gelu, options.gelu.binding(ctx)) : null;
  if (!C4 || (options.gelu && !H4)) return false;
  const At = g.runner.textureOf(A.region, [], a.t.isParam && g.runner.pinParams);
  const Bt = g.runner.textureOf(B.region, [At], b.t.isParam && g.runner.pinParams);
  const bias = options.bias?.binding(ctx);
  g.runner.dispatch(
    FORMATS[b.t.dtype]!.shader,
    'main',
    { B_DTYPE: paramCode(b.t, 'matmul B'), A_T: A.transposed ? 1 : 0, B_T: B.transposed ? 1 : 0 },
    {
      M: s.m,
      N: s.n,
      K: s.k,
      NB1: nb1,
      a_x0: A.x0,
      a_y0: A.y0,
      a_bx0: A.bx0,
      a_by0: A.by0,
      a_bx1: A.bx1,
      a_by1: A.by1,
      b_x0: B.x0,
      b_y0: B.y0,
      b_bx0: B.bx0,
      b_by0: B.by0,
      b_bx1: B.bx1,
      b_by1: B.by1,
      c_off: cStart,
      C_RS: c.rs,
      C_B0: c.b0 ?? 0,
      C_B1: c.b1 ?? 0,
      bias_off: bias?.shift ?? 0,
      alpha: options.alpha ?? 1,
      FLAGS: (bias ? 1 : 0) | (options.accumulate ? 2 : 0) | (H4 ? 4 : 0),
    },
    { At, Bt, C4, bias: bias?.binding ?? g.runner.dummy, H4: H4 ?? g.runner.writableDummy },
    [Math.ceil(s.n / TILE_COLS), Math.ceil(s.m / TILE_ROWS), nb0 * nb1],
  );
  return true;
}
