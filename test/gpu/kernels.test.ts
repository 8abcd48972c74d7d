/**
 * The kernels' bind group cache: a dispatch that binds the same buffers as one before it reuses that
 * dispatch's group, and one that binds anything else (another range, a new buffer of the same size
 * where a destroyed one was) gets its own, so each dispatch reads and writes exactly what it names.
 * Checked by what the copies leave in their buffers, against the values uploaded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceBuffer, type DeviceTexture, GpuContext } from '../../src/gpu/context.js';
import { BIND_GROUP_GENERATION, type Binding } from '../../src/gpu/kernels.js';
import { float32Buffer } from '../helpers/gpu.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

const N = 256;
const values = (first: number) => Float32Array.from({ length: N }, (_, i) => first + i);

/** dst = src, as stream-copy's vec4s, in a submit of its own; the group it ran with. */
function copy(src: Binding, dst: Binding): GPUBindGroup {
  const pipeline = ctx.kernels.pipeline('stream-copy', 'copy_vec4', { WG: 64, ITEMS: 1 });
  const group = ctx.kernels.bindGroup(pipeline, { src, dst });
  ctx.kernels.dispatch(pipeline, [group], N / 4 / 64);
  return group;
}

describe('bind group cache', () => {
  it('the same pipeline and resources give the same group; another range or buffer its own', async () => {
    const a = float32Buffer(ctx, 'a', values(1));
    const b = float32Buffer(ctx, 'b', new Float32Array(N));
    const first = copy(a, b);
    expect(copy(a, b)).toBe(first);
    expect(await ctx.transfers.readFloat32(b)).toEqual(values(1));

    // The second half of `a` into the first half of `b`: same buffers, other ranges.
    const half = (buffer: DeviceBuffer, at: number) => ({ buffer, offset: at * 4, size: (N / 2) * 4 });
    const ranged = ctx.kernels.bindGroup(ctx.kernels.pipeline('stream-copy', 'copy_vec4', { WG: 64, ITEMS: 1 }), {
      src: half(a, N / 2),
      dst: half(b, 0),
    });
    expect(ranged).not.toBe(first);

    // A buffer of the same size made after `b` is destroyed: the copy must land in it, not in `b`'s group.
    b.destroy();
    const c = float32Buffer(ctx, 'c', new Float32Array(N));
    const d = float32Buffer(ctx, 'd', values(1000));
    expect(copy(d, c)).not.toBe(first);
    expect(await ctx.transfers.readFloat32(c)).toEqual(values(1000));
    for (const x of [a, c, d]) x.destroy();
  });

  it('holds at most two generations: a group unused for that long is made again', async () => {
    const pipeline = ctx.kernels.pipeline('stream-copy', 'copy_vec4', { WG: 64, ITEMS: 1 });
    // Ranges of one buffer make distinct groups: BIND_GROUP_GENERATION offsets, two sizes each.
    const big = ctx.createBuffer({
      label: 'big',
      size: BIND_GROUP_GENERATION * 256 + 32,
      usage: GPUBufferUsage.STORAGE,
      category: 'other',
    });
    const dst = ctx.createBuffer({ label: 'dst', size: 32, usage: GPUBufferUsage.STORAGE, category: 'other' });
    const group = (i: number) =>
      ctx.kernels.bindGroup(pipeline, {
        src: { buffer: big, offset: 256 * (i % BIND_GROUP_GENERATION), size: 16 * (1 + Math.floor(i / BIND_GROUP_GENERATION)) },
        dst,
      });
    const kept = group(0);
    // Fewer than a generation of other groups: still cached.
    for (let i = 1; i < BIND_GROUP_GENERATION / 2; i++) group(i);
    expect(group(0)).toBe(kept);
    // Two more generations' worth of others: gone, and made anew.
    for (let i = 1; i <= 2 * BIND_GROUP_GENERATION; i++) group(i + 1);
    expect(group(0)).not.toBe(kept);
    await ctx.sync();
    big.destroy();
    dst.destroy();
  });

  it('a scratch texture replaced by a larger one leaves the cache: its memory goes once its work is done', () => {
    // Before any lease of rgba32float: this test's texture is the only one, so the next lease grows it.
    const pipeline = ctx.kernels.pipeline('matmul-texture', 'main', { B_DTYPE: 0, A_T: 0, B_T: 0 });
    const c4 = ctx.createBuffer({ label: 'c4', size: 64, usage: GPUBufferUsage.STORAGE, category: 'other' });
    const bias = ctx.createBuffer({ label: 'bias', size: 16, usage: GPUBufferUsage.STORAGE, category: 'other' });
    const h4 = ctx.createBuffer({ label: 'h4', size: 64, usage: GPUBufferUsage.STORAGE, category: 'other' });
    const uniforms = ctx.createBuffer({ label: 'u', size: 256, usage: GPUBufferUsage.UNIFORM, category: 'other' });
    const size = ctx.kernels.uniformBytes(pipeline);
    const group = (a: DeviceTexture, b: DeviceTexture) =>
      ctx.kernels.bindGroup(pipeline, { At: a, Bt: b, C4: c4, bias, H4: h4 }, { buffer: uniforms, offset: 0, size });
    const small = ctx.scratch.lease('rgba32float', 4, 4);
    const other = ctx.createTexture({
      label: 'b',
      width: 4,
      height: 4,
      format: 'rgba32float',
      usage: GPUTextureUsage.STORAGE_BINDING,
      category: 'other',
    });
    const first = group(small, other);
    expect(group(small, other)).toBe(first);
    ctx.scratch.release([small]);
    // Both sizes in one: `small` is let go of, and the groups that bind it with it.
    const large = ctx.scratch.lease('rgba32float', 8, 8);
    expect(large).not.toBe(small);
    expect(group(small, other)).not.toBe(first);
    // A group binding only what stays is kept.
    const kept = group(large, other);
    ctx.scratch.release([large]);
    expect(group(large, other)).toBe(kept);
    for (const x of [c4, bias, h4, uniforms, other]) x.destroy();
  });
});
