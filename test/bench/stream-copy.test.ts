import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shaderCopy } from '../../bench/adam.js';
import { GpuContext } from '../../src/gpu/context.js';
import { float32Buffer } from '../helpers/gpu.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

// The Adam benchmark divides bytes by this kernel's time: the kernel must move exactly the bytes it
// is credited with, across binding windows and past the last full workgroup.
describe('stream-copy (Adam benchmark reference)', () => {
  it('copies the whole vec4s of n floats in windows, leaves the tail, and counts 8 bytes per copied float', async () => {
    const n = 1030; // 257 vec4s and 2 floats over
    const src = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 1e3 + i);
    const a = float32Buffer(ctx, 'copy.src', src);
    const b = float32Buffer(ctx, 'copy.dst', new Float32Array(n));
    const align = ctx.limits.minStorageBufferOffsetAlignment;
    // Windows of 2 * align bytes (at most 256 floats), 3 vec4s per invocation, 4 per workgroup.
    const copy = shaderCopy(ctx, a, b, n, { workgroupSize: 4, itemsPerThread: 3, maxBindingBytes: 2 * align });
    expect(copy.bytes).toBe(8 * 1028);
    const encoder = ctx.device.createCommandEncoder();
    copy.encode(encoder);
    ctx.submit([encoder.finish()]);
    const out = await ctx.transfers.readFloat32(b);
    const expected = Float32Array.from(src);
    expected[1028] = 0; // the tail is not the kernel's
    expected[1029] = 0;
    expect(Array.from(out)).toEqual(Array.from(expected));
  });
});
