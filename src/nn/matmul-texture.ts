/**
 * The texture matmul for CPU drivers (shaders/matmul-texture-body.wgsl): A and B are copied into
 * scratch storage textures with copyBufferToTexture, a memcpy on lavapipe (17-24 GB/s measured, so
 * about 0.07 ms for a 768 x 512 activation against 1.5 ms for the product), and the kernel reads them
 * with branch-free image loads instead of lane-by-lane buffer loads.
 *
 * A copy takes whole rows: every texture row is one row of the operand as it lies in memory, so an
 * operand qualifies when it is contiguous along one of its two dimensions, its rows start 256 bytes
 * apart (WebGPU's bytesPerRow rule) at a texel-aligned offset, and that dimension is a multiple of 4.
 * Which dimension is contiguous picks the kernel's layout (A_T, B_T): x [rows, in] is A for y = x W
 * and Aᵀ for dW = xᵀ dy, W [in, out] is B for y = x W and Bᵀ for dx = dy Wᵀ, all copied as they lie.
 * Anything else (batched products, odd strides) runs on the buffer kernel.
 */
import type { DeviceTexture, TextureRequest } from '../gpu/context.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { quadBinding } from './quads.js';
import { DTYPE_BYTES, paramCode, type Tensor } from './tensor.js';

/** Rows and columns of C per workgroup (the shader's ROWS and 8 lanes x QUADS x 4). */
const TILE_ROWS = 32;
const TILE_COLS = 64;

/** How one operand goes into a texture: rows of `width` texels, `bytesPerRow` apart from `offset`. */
interface TextureCopy {
  offset: number;
  bytesPerRow: number;
  width: number;
  height: number;
  /** The texture holds the operand's transpose (rows along its second dimension). */
  transposed: boolean;
}

const FORMATS: Record<string, { format: TextureRequest['format']; shader: string }> = {
  float32: { format: 'rgba32float', shader: 'matmul-texture' },
  float16: { format: 'rgba16float', shader: 'matmul-texture-f16' },
  bfloat16: { format: 'rgba16uint', shader: 'matmul-texture-bf16' },
};

/**
 * The copy of operand `op` of `rows` x `cols` (row r, column j at off + r·rs + j·cs), or null when no
 * texture copy can hold it: rows along the contiguous dimension, whose length must be a multiple of 4.
 */
function copyOf(g: Graph, op: Operand, rows: number, cols: number): TextureCopy | null {
  const bytes = DTYPE_BYTES[op.t.dtype];
  const texel = 4 * bytes;
  const max = g.ctx.limits.maxTextureDimension2D;
  const start = (op.t.offset + (op.off ?? 0)) * bytes;
  const plan = (stride: number, width: number, height: number, transposed: boolean): TextureCopy | null => {
    const bytesPerRow = stride * bytes;
    const fits = width % 4 === 0 && width / 4 <= max && height <= max;
    if (!fits || bytesPerRow % 256 !== 0 || start % texel !== 0) return null;
    return { offset: start, bytesPerRow, width: width / 4, height, transposed };
  };
  if (op.cs === 1) return plan(op.rs, cols, rows, false);
  if (op.rs === 1) return plan(op.cs, rows, cols, true);
  return null;
}

function copyIn(g: Graph, t: Tensor, copy: TextureCopy, role: string): DeviceTexture {
  const format = FORMATS[t.dtype]!.format;
  const texture = g.ctx.scratch.texture(role, format, copy.width, copy.height);
  g.runner.copyBufferToTexture({ buffer: t.buffer, offset: copy.offset, bytesPerRow: copy.bytesPerRow }, texture, copy.width, copy.height);
  return texture;
}

/** Run C = alpha · A @ B (+ bias) (+ C) on the texture kernel; false (nothing recorded) when it cannot take the operands. */
export function textureMatmul(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions): boolean {
  if (!g.ctx.subgroupsOfExactly8 || (s.nb0 ?? 1) * (s.nb1 ?? 1) !== 1 || s.k % 4 !== 0 || !FORMATS[b.t.dtype]) return false;
  const aCopy = copyOf(g, a, s.m, s.k);
  const bCopy = copyOf(g, b, s.k, s.n);
  if (!aCopy || !bCopy) return false;
  const ctx = g.ctx;
  const C = c.t.binding(ctx);
  const cStart = C.shift + (c.off ?? 0);
  const C4 = s.n % 4 === 0 && cStart % 4 === 0 && c.rs % 4 === 0 ? quadBinding(g, c.t, C) : null;
  if (!C4) return false;
  const At = copyIn(g, a.t, aCopy, 'matmul.a');
  const Bt = copyIn(g, b.t, bCopy, 'matmul.b');
  const bias = options.bias?.binding(ctx);
  g.runner.dispatch(
    FORMATS[b.t.dtype]!.shader,
    'main',
    { B_DTYPE: paramCode(b.t, 'matmul B'), A_T: aCopy.transposed ? 1 : 0, B_T: bCopy.transposed ? 1 : 0 },
    {
      M: s.m,
      N: s.n,
      K: s.k,
      c_off: cStart,
      C_RS: c.rs,
      bias_off: bias?.shift ?? 0,
      alpha: options.alpha ?? 1,
      FLAGS: (bias ? 1 : 0) | (options.accumulate ? 2 : 0),
    },
    {
      At,
      Bt,
      C4,
      bias: bias?.binding ?? g.runner.dummy,
    },
    [Math.ceil(s.n / TILE_COLS), Math.ceil(s.m / TILE_ROWS), 1],
  );
  return true;
}
