/**
 * The matmul for products of a few rows (shaders/matmul-rows.wgsl): a decoder's single-token step,
 * where every weight multiplies one row. The other kernels compute blocks of 16 to 64 rows and would
 * spend as much on one row as on a block.
 */
import type { GpuContext } from '../gpu/context.js';
import type { Graph } from './graph.js';
import type { MatmulOptions, MatmulShape, Operand } from './matmul.js';
import { quadReads, stridedOperands } from './matmul-operands.js';
import { paramCode } from './tensor.js';

/** The most rows of C the kernel takes. */
export const ROWS_MAX = 8;

/**
 * The most rows matmulInto sends here on `ctx`: 4 on a CPU driver, where each row's A is another
 * lane-by-lane load and 8 rows gained nothing over the texture kernel (0.97-1.19x, against 1.3-2.5x
 * at 1 row: `npm run bench -- decode-products`, lavapipe); ROWS_MAX on a GPU, whose block kernels
 * compute 64 rows for them.
 */
export const rowsLimit = (ctx: GpuContext): number => (ctx.software ? 4 : ROWS_MAX);

/** How the lanes of a workgroup split the work: `ks` lanes share each quad of columns' k (a workgroup of `wg`). */
export interface RowsLanes {
  wg: number;
  ks: number;
}

/**
 * The lanes for an adapter: on a CPU driver a quad per SIMD lane and no split (a barrier and a
 * reduction buy nothing there); on a GPU 64 lanes, 16 of them on one quad's k when B is read along
 * k (adjacent lanes read adjacent memory) and 4 otherwise.
 */
function lanesFor(g: Graph, kFast: boolean): RowsLanes {
  if (g.ctx.software) return { wg: Math.max(8, g.ctx.subgroupMaxSize), ks: 1 };
  return { wg: 64, ks: kFast ? 16 : 4 };
}

/**
 * C = alpha · A @ B (+ bias) (+ C) for s.m <= ROWS_MAX, any operand layout (matmul.ts's contract;
 * no gelu). `lanes` overrides the adapter's split (tests run the GPU's here).
 */
export function rowsMatmul(g: Graph, s: MatmulShape, a: Operand, b: Operand, c: Operand, options: MatmulOptions, lanes?: RowsLanes): void {
  if (s.m > ROWS_MAX) throw new RangeError(`rowsMatmul: ${s.m} rows, at most ${ROWS_MAX}`);
  const operands = stridedOperands(g, s, a, b, c, { ...options, gelu: undefined });
  const { aVec, bMode, bVec } = quadReads(g, s, a, b);
  // Lanes of a quad side by side where B runs along k (read as vec4s or not: b.rs 1).
  const kFast = b.rs === 1 && b.cs !== 1;
  const { wg, ks } = lanes ?? lanesFor(g, kFast);
  const rows = 2 ** Math.ceil(Math.log2(s.m));
  g.runner.dispatch(
    'matmul-rows',
    'main',
    { WG: wg, ROWS: rows, KS: ks, K_FAST: kFast ? 1 : 0, B_DTYPE: paramCode(b.t, 'matmul B'), A_VEC: aVec ? 1 : 0, B_MODE: bMode },
    operands.uniforms,
    { ...operands.bindings, A4: aVec ?? g.runner.dummy, B4: bVec ?? g.runner.dummy },
    [Math.ceil(Math.ceil(s.n / 4) / (wg / ks)), 1, (s.nb0 ?? 1) * (s.nb1 ?? 1)],
  );
}
