/**
 * Runners hand their uniform slots, dummy bindings and scratch buffers on: a runner made after one
 * is destroyed takes them over instead of allocating, and runners alive at the same time each have
 * their own, so dispatches recorded in turn into two runners compute what each named. Checked
 * against the same sums in plain arithmetic.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { Runner } from '../../src/nn/runner.js';
import { float32Buffer } from '../helpers/gpu.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

describe('runner parts', () => {
  it('a runner made after one is destroyed takes over its buffers', () => {
    const first = new Runner(ctx);
    const scratch = first.scratch('test', 1024);
    const dummy = first.dummy;
    first.destroy();
    const buffers = ctx.memoryReport().buffers;
    const next = new Runner(ctx);
    expect(ctx.memoryReport().buffers).toBe(buffers);
    expect(next.dummy).toBe(dummy);
    expect(next.scratch('test', 512)).toBe(scratch);
    // A larger use replaces it, as within one runner.
    expect(next.scratch('test', 2048)).not.toBe(scratch);
    next.destroy();
  });

  it('two runners alive at once: dispatches recorded in turn, then flushed, each with its own uniforms', async () => {
    const n = 300;
    const src = Float32Array.from({ length: n }, (_, i) => i - 100);
    const s = float32Buffer(ctx, 'src', src);
    const dst = [float32Buffer(ctx, 'a', new Float32Array(n)), float32Buffer(ctx, 'b', new Float32Array(n))];
    const runners = [new Runner(ctx), new Runner(ctx)];
    expect(runners[0]!.dummy).not.toBe(runners[1]!.dummy);
    // dst[r] += (r + 2) src, three times, the two runners' dispatches interleaved before either submits.
    for (let round = 0; round < 3; round++) {
      for (const [r, runner] of runners.entries()) {
        const uniforms = { n, dst_shift: 0, src_shift: 0, scale: r + 2 };
        runner.dispatch('accumulate', 'add_f32', { WG: 64 }, uniforms, { src: s, dst: dst[r]! }, Math.ceil(n / 64));
      }
    }
    runners[1]!.flush();
    runners[0]!.flush();
    for (const [r, buffer] of dst.entries()) {
      expect(await ctx.transfers.readFloat32(buffer)).toEqual(src.map((v) => 3 * (r + 2) * v));
    }
    for (const x of [...runners, s, ...dst]) x.destroy();
  });
});
