/**
 * Column sums split over chunks of rows, for hardware GPUs (GpuContext.reductionKernel `split`). A
 * first pass (`colsum.part`, `layernorm.backward_params_part`, `gelu.backward_bias_part`) sums each
 * chunk of rows into a row of partials in a scratch buffer of the runner; `colsum.finish4` then adds
 * each column's partials into its grad in chunk order. A column walked whole by one invocation keeps
 * a few hundred of a GPU's threads busy for thousands of rows; split, tens of thousands of threads
 * each walk a chunk, and the finishing pass walks one partial per chunk. The token embedding's grad,
 * a scatter rather than a sum down columns, is split by sorting its rows by token (`tokenOrder`).
 */
import type { DeviceBuffer } from '../gpu/context.js';
import type { Binding } from '../gpu/kernels.js';
import type { Graph } from './graph.js';

/** Invocations the first pass aims for: enough to fill a large GPU. */
const TARGET_INVOCATIONS = 32768;
/** The fewest rows a chunk sums: below that the finishing pass would walk more than the first. */
const MIN_CHUNK_ROWS = 16;
/** Column quads per workgroup, in both passes. */
export const SPLIT_WG = 64;

/** Rows per chunk and chunks, for a split reduction over `rows` rows. */
export interface RowChunks {
  chunk: number;
  chunks: number;
}

/**
 * How to split a reduction over `rows` rows of `quads` column quads (four columns per invocation), or
 * null where the context's reductions are `lane` (one invocation per column quad walks every row).
 */
export function rowChunks(g: Graph, rows: number, quads: number): RowChunks | null {
  if (g.ctx.reductionKernel !== 'split') return null;
  const wanted = Math.max(1, Math.min(Math.ceil(TARGET_INVOCATIONS / quads), Math.ceil(rows / MIN_CHUNK_ROWS)));
  const chunk = Math.ceil(rows / wanted);
  return { chunk, chunks: Math.ceil(rows / chunk) };
}

/** The first pass's grid: blocks of column quads by chunks (its entry points run workgroups of `SPLIT_WG`). */
export function partGrid(quads: number, split: RowChunks): [number, number, number] {
  return [Math.ceil(quads / SPLIT_WG), split.chunks, 1];
}

/** The partials buffer for `split.chunks` rows of `quadsPerRow` column quads. */
export function partials(g: Graph, split: RowChunks, quadsPerRow: number): DeviceBuffer {
  return g.runner.scratch('partial-sums', split.chunks * quadsPerRow * 16);
}

/**
 * target[gOff + col] += the sum over chunks of the partials of `quads` column quads, which start at
 * quad `off4` of each partials row of `stride4` quads.
 */
export function finishColumnSums(
  g: Graph,
  parts: DeviceBuffer,
  split: RowChunks,
  quads: number,
  layout: { stride4: number; off4: number },
  target: Binding,
  gOff: number,
): void {
  const uniforms = { rows: split.chunks, cols: 4 * quads, g_off: gOff, p_stride4: layout.stride4, p_off4: layout.off4 };
  g.runner.dispatch('colsum', 'finish4', { WG: SPLIT_WG }, uniforms, { parts4: parts, g: target }, Math.ceil(quads / SPLIT_WG));
}

/** out[gOff + col] += the column sums of `rows` rows of `quads` column quads in `dy4`, split. */
export function splitColumnSums(g: Graph, dy4: Binding, rows: number, quads: number, split: RowChunks, out: Binding, gOff: number): void {
  const parts = partials(g, split, quads);
  const uniforms = { rows, cols: 4 * quads, chunk: split.chunk };
  g.runner.dispatch('colsum', 'part', { WG: SPLIT_WG }, uniforms, { dy4, part4: parts }, partGrid(quads, split));
  finishColumnSums(g, parts, split, quads, { stride4: quads, off4: 0 }, out, gOff);
}

/**
 * The rows of `ids` sorted by token (clamped into the table, as the kernels clamp), stably, for
 * embedding.backward_tokens_sorted, in one array: the sorted rows; where each distinct token's rows
 * start, and one past the last; the distinct tokens, ascending.
 */
export function tokenOrder(ids: Uint32Array, vocab: number): { index: Uint32Array; distinct: number } {
  const rows = ids.length;
  const token = (r: number) => Math.min(ids[r]!, vocab - 1);
  // A counting sort: starts[v] is where token v's rows begin.
  const starts = new Uint32Array(vocab + 1);
  for (let r = 0; r < rows; r++) starts[token(r) + 1]!++;
  let distinct = 0;
  for (let v = 0; v < vocab; v++) {
    if (starts[v + 1]! > 0) distinct++;
    starts[v + 1]! += starts[v]!;
  }
  const index = new Uint32Array(rows + 2 * distinct + 1);
  const next = starts.slice(0, vocab);
  for (let r = 0; r < rows; r++) index[next[token(r)]!++] = r;
  let k = 0;
  for (let v = 0; v < vocab; v++) {
    if (starts[v + 1] === starts[v]) continue;
    index[rows + k] = starts[v]!;
    index[rows + distinct + 1 + k] = v;
    k++;
  }
  index[rows + distinct] = rows;
  return { index, distinct };
}
