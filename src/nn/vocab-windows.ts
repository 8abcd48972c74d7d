/**
 * Tables of one row per token can pass a device's storage binding limit: GPT-2's 50,257 × 768 fp32
 * token embedding is 147 MiB, over lavapipe's 128 MiB (WebGPU's default). Training refuses such a
 * param at start-up (its fp32 grad would pass the limit too), but a forward without grads reads the
 * table a window of tokens at a time: the embedding lookup one dispatch per window, the output head
 * one product per window of the logits' columns.
 */
import type { GpuContext } from '../gpu/context.js';
import type { Graph } from './graph.js';
import { matmulInto } from './matmul.js';
import { DTYPE_BYTES, ShapeMismatch, Tensor } from './tensor.js';

/** Tokens [first, first + count) of a table, as a tensor of their rows. */
export interface VocabWindow {
  first: number;
  count: number;
  rows: Tensor;
}

/** Window starts are multiples of this many tokens, so that every window's bytes start aligned when the table's do. */
const WINDOW_STEP = 64;

/**
 * `table` [vocab, c] as windows of tokens that each fit one storage binding (at most
 * `ctx.vocabWindowTokens` each): the whole table where it fits.
 */
export function vocabWindows(ctx: GpuContext, table: Tensor): VocabWindow[] {
  const tokens = ctx.vocabWindowTokens;
  const [vocab, c] = table.shape as [number, number];
  if (table.fitsOneBinding(ctx) && tokens >= vocab) return [{ first: 0, count: vocab, rows: table }];
  const rowBytes = c * DTYPE_BYTES[table.dtype];
  // Room for the alignment below a window's first byte and the word above its last.
  const room = ctx.limits.maxStorageBufferBindingSize - ctx.limits.minStorageBufferOffsetAlignment - 4;
  const fit = Math.floor(room / rowBytes / WINDOW_STEP) * WINDOW_STEP;
  const size = Math.min(fit, tokens);
  if (size < 1)
    throw new ShapeMismatch(
      `a table row of ${rowBytes} B: ${WINDOW_STEP} of them pass this device's storage binding limit (${ctx.limits.maxStorageBufferBindingSize} B)`,
    );
  const windows: VocabWindow[] = [];
  for (let first = 0; first < vocab; first += size) {
    const count = Math.min(size, vocab - first);
    windows.push({ first, count, rows: new Tensor(table.buffer, table.offset + first * c, [count, c], table.dtype) });
  }
  return windows;
}

/**
 * logits = x @ headᵀ for a head [vocab, c] over the binding limit, window by window of its rows
 * (`windows`, vocabWindows' of the head: columns of the logits). A forward only: a backward through
 * it throws. Where the head fits one binding, the caller's plain linear serves instead.
 */
export function windowedHead(g: Graph, x: Tensor, head: Tensor, windows: readonly VocabWindow[]): Tensor {
  const [vocab, c] = head.shape as [number, number];
  if (x.shape[x.shape.length - 1] !== c)
    throw new ShapeMismatch(`output head: input [${x.shape.join(', ')}] does not end in the head's width ${c}`);
  const rows = x.numel / c;
  const y = g.output([...x.shape.slice(0, -1), vocab], 'logits', x.requiresGrad || head.requiresGrad);
  for (const w of windows) {
    // Columns [first, first + count) of every row of y: from its element `first`, rows `vocab` apart.
    const columns = new Tensor(y.buffer, y.offset + w.first, [(rows - 1) * vocab + w.count], 'float32');
    matmulInto(g, { m: rows, n: w.count, k: c }, { t: x, rs: c, cs: 1 }, { t: w.rows, rs: 1, cs: c }, { t: columns, rs: vocab, cs: 1 });
  }
  g.record('output head', [x, head], () => {
    throw new ShapeMismatch(
      `output head [${vocab}, ${c}]: it passes this device's storage binding limit (${g.ctx.limits.maxStorageBufferBindingSize} B) and is read in windows, which have no backward; train a smaller vocabulary or width on this device`,
    );
  });
  return y;
}
