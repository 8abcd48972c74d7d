/**
 * Activation buffers pooled across graphs: the next graph of the same shapes allocates nothing, a
 * reused buffer given out as zeroed reads zero, idle bytes count as 'pooled' (so a graph's activation
 * bytes read as without the pool), and buffers nobody asks for again are destroyed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { Graph } from '../../src/nn/graph.js';
import { gelu } from '../../src/nn/ops.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

/** One small forward and backward: an input, gelu, and the grad of the input. */
async function step(values: Float32Array): Promise<{ y: Float32Array; dx: Float32Array }> {
  const g = new Graph(ctx);
  const x = g.input(values, [values.length], 'x', true);
  const y = gelu(g, x);
  g.backwardFrom(y, new Float32Array(values.length).fill(1));
  const out = { y: await g.read(y), dx: await g.read(g.gradOf(x)) };
  g.release();
  return out;
}

describe('buffer pool', () => {
  it('the next graph of the same shapes reuses every buffer, and its results are the same', async () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
    const first = await step(values);
    const buffersAfterFirst = ctx.memoryReport().buffers;
    const second = await step(values);
    expect(ctx.memoryReport().buffers).toBe(buffersAfterFirst);
    // The grad accumulates into a reused buffer: it must have been zeroed, or dx would double.
    expect(second.dx).toEqual(first.dx);
    expect(second.y).toEqual(first.y);
  });

  it('a reused buffer given out as a new tensor reads zero', async () => {
    const n = 4096;
    const g1 = new Graph(ctx);
    g1.input(new Float32Array(n).fill(7), [n], 'dirty');
    g1.release();
    const g2 = new Graph(ctx);
    const before = ctx.memoryReport().buffers;
    const t = g2.tensor([n], 'clean');
    expect(ctx.memoryReport().buffers).toBe(before); // the dirty buffer, given out again
    expect(Array.from(await g2.read(t)).every((v) => v === 0)).toBe(true);
    g2.release();
  });

  it('an output tensor (every element written by its kernel) is not cleared: it records no clear', async () => {
    const n = 2048;
    const g1 = new Graph(ctx);
    g1.input(new Float32Array(n).fill(3), [n], 'dirty');
    g1.release();
    const g2 = new Graph(ctx);
    let clears = 0;
    const clear = g2.runner.clearBuffer.bind(g2.runner);
    g2.runner.clearBuffer = (b) => {
      clears++;
      clear(b);
    };
    const out = g2.output([n], 'out');
    expect(clears).toBe(0);
    expect(Array.from(await g2.read(out)).every((v) => v === 3)).toBe(true); // what the last graph left
    g2.tensor([n], 'zeroed'); // a second buffer of the size: a new one, nothing to clear
    g2.release();
    const g3 = new Graph(ctx);
    const clear3 = g3.runner.clearBuffer.bind(g3.runner);
    g3.runner.clearBuffer = (b) => {
      clears++;
      clear3(b);
    };
    g3.tensor([n], 'zeroed');
    expect(clears).toBe(1);
    g3.release();
  });

  it('idle bytes count as pooled, and buffers unused for a release are destroyed', async () => {
    const fresh = await GpuContext.create();
    try {
      const n = 8192;
      const bytes = n * 4;
      const g = new Graph(fresh);
      g.tensor([n], 'a');
      const inUse = fresh.memoryReport().live;
      expect(inUse.activations).toBe(bytes);
      g.release();
      let live = fresh.memoryReport().live;
      expect([live.activations, live.pooled, fresh.pool.bytes]).toEqual([0, bytes, bytes]);
      // One more release in which nobody asked for that size: kept once more, then destroyed.
      const other = new Graph(fresh);
      other.tensor([16], 'b');
      other.release();
      live = fresh.memoryReport().live;
      expect(live.pooled).toBe(bytes + 64);
      const third = new Graph(fresh);
      third.release();
      live = fresh.memoryReport().live;
      expect(live.pooled).toBe(64);
      expect(fresh.memoryReport().peak.activations).toBe(bytes);
    } finally {
      fresh.destroy();
    }
  });
});
