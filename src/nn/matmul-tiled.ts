/**
 * The tiled matmul for hardware GPUs (shaders/matmul-tiled-body.wgsl): workgroup-memory tiles and a
 * register block per invocation, tile shapes from the adapter's tuning (src/gpu/matmul-tuner.ts).
 * 16-bit params stage in f16 where the device has shader-f16 (matmul-tiled-f16.wgsl states the
 * conversion rules), in f32 otherwise.
 */
import type { SubgroupMatrixShape } from '../gpu/context.js';
import { tileFor, type TileShape } from '../gpu/matmul-tuner.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { stridedOperands } from './matmul-operands.js';
import { paramCode } from './tensor.js';

/**
 * Record C = alpha · A @ B (+ bias) (+ C) on the tiled kernel with `tile` (default: the adapter's
 * choice for the shape); 16-bit params on the tensor-core kernel where the adapter has subgroup matrices.
 */
export function tiledMatmul(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions, tile?: TileShape): void {
  const ctx = g.ctx;
  const shape = ctx.subgroupMatrix;
  if (b.t.dtype !== 'float32' && shape && !tile) {
    mmaMatmul(g, s, a, b, c, options, 'matmul-mma', shape, ctx.subgroupMaxSize);
    return;
  }
  const nb0 = s.nb0 ?? 1;
  const nb1 = s.nb1 ?? 1;
  const t = tile ?? tileFor(ctx, s.m, s.n, s.k);
  const half = b.t.dtype !== 'float32';
  const { uniforms, bindings, gelu } = stridedOperands(g, s, a, b, c, options);
  g.runner.dispatch(
    half && ctx.hasF16 ? 'matmul-tiled-f16' : 'matmul-tiled',
    'main',
    {
      BM: t.bm,
      BN: t.bn,
      BK: t.bk,
      TM: t.tm,
      TN: t.tn,
      B_DTYPE: paramCode(b.t, 'matmul B'),
      // Stage each operand along the dimension it is contiguous in.
      A_KFAST: a.cs === 1 ? 1 : 0,
      B_NFAST: b.cs === 1 ? 1 : 0,
    },
    uniforms,
    { ...bindings, H: gelu ?? g.runner.writableDummy },
    [Math.ceil(s.n / t.bn), Math.ceil(s.m / t.bm), nb0 * nb1],
  );
}

/**
 * Record the product on the tensor-core kernel (shaders/matmul-mma.wgsl) or its plain twin
 * (matmul-mma-twin.wgsl, for adapters without subgroup matrices: tests), with fragments of `shape`
 * and subgroups of `subgroupSize` lanes.
 */
export function mmaMatmul(
  g: Graph,
  s: MatmulShape,
  a: Operand,
  b: Operand,
  c: Operand,
  options: MatmulOptions,
  shader: 'matmul-mma' | 'matmul-mma-twin',
  shape: SubgroupMatrixShape,
  subgroupSize: number,
): void {
  const { uniforms, bindings, gelu } = stridedOperands(g, s, a, b, c, options);
  g.runner.dispatch(
    shader,
    'main',
    { B_DTYPE: paramCode(b.t, 'matmul B'), A_KFAST: a.cs === 1 ? 1 : 0, B_NFAST: b.cs === 1 ? 1 : 0, SG: subgroupSize },
    uniforms,
    { ...bindings, H: gelu ?? g.runner.writableDummy },
    [Math.ceil(s.n / (4 * shape.n)), Math.ceil(s.m / (4 * shape.m)), (s.nb0 ?? 1) * (s.nb1 ?? 1)],
    { FM: shape.m, FN: shape.n, FK: shape.k },
  );
}
