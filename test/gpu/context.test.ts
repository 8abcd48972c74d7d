import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPreciseTimestamps } from '../../src/gpu/adapter.js';
import { GpuContext } from '../../src/gpu/context.js';
import { GpuDeviceError, GpuError } from '../../src/gpu/errors.js';
import { MEMORY_CATEGORIES } from '../../src/gpu/memory.js';
import { float32Buffer } from '../helpers/gpu.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

describe('GpuContext', () => {
  it('requests the adapter limits, not the device defaults', () => {
    const adapterLimits = ctx.found.adapter.limits;
    expect(ctx.limits.maxStorageBufferBindingSize).toBe(adapterLimits.maxStorageBufferBindingSize);
    expect(ctx.limits.maxBufferSize).toBe(adapterLimits.maxBufferSize);
    expect(ctx.limits.maxStorageBuffersPerShaderStage).toBe(adapterLimits.maxStorageBuffersPerShaderStage);
    expect(ctx.limits.maxBufferSize).toBeGreaterThan(256 << 20); // the device default
  });

  it('turns on the optional features the adapter has', () => {
    expect(ctx.hasF16).toBe(ctx.found.adapter.features.has('shader-f16'));
    expect(ctx.hasTimestamps).toBe(ctx.found.adapter.features.has('timestamp-query'));
  });

  it('reads timestamps unrounded: Dawn would round them down to multiples of 16,384 ns', async () => {
    if (!ctx.hasTimestamps) return console.log('skipped: this adapter has no timestamp queries');
    const count = 16;
    const querySet = ctx.device.createQuerySet({ type: 'timestamp', count });
    const resolve = ctx.createBuffer({
      label: 'test.timestamps',
      size: 8 * count,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      category: 'staging',
    });
    for (let i = 0; i < count; i++) {
      const encoder = ctx.device.createCommandEncoder();
      encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: i } }).end();
      ctx.submit([encoder.finish()]);
      await ctx.sync();
    }
    const encoder = ctx.device.createCommandEncoder();
    encoder.resolveQuerySet(querySet, 0, count, resolve.gpu, 0);
    ctx.submit([encoder.finish()]);
    const bytes = await ctx.transfers.readback(resolve);
    const ns = Array.from(new BigUint64Array(bytes.buffer, bytes.byteOffset, count));
    querySet.destroy();
    resolve.destroy();
    // Rounded, every one is a multiple of 16,384; unrounded, all 16 are with odds of 2^-224.
    expect(
      ns.some((t) => t % 16384n !== 0n),
      `timestamps ${ns.join(', ')}`,
    ).toBe(true);
  });

  it("joins timestamp_quantization to the caller's disabled Dawn features", () => {
    const off = 'disable-dawn-features=timestamp_quantization';
    expect(withPreciseTimestamps([])).toEqual([off]);
    expect(withPreciseTimestamps(['backend=vulkan'])).toEqual([off, 'backend=vulkan']);
    expect(withPreciseTimestamps(['disable-dawn-features=lazy_clear_resource_on_first_use', 'backend=null'])).toEqual([
      'disable-dawn-features=lazy_clear_resource_on_first_use,timestamp_quantization',
      'backend=null',
    ]);
    expect(withPreciseTimestamps([off])).toEqual([off]);
  });

  it('a limit above the adapter is a clear error', async () => {
    const over = ctx.found.adapter.limits.maxBufferSize + 1;
    await expect(GpuContext.create({ limits: { maxBufferSize: over } })).rejects.toThrow(/maxBufferSize=\d+ exceeds what adapter/);
  });

  it('an unknown backend is a clear error', async () => {
    await expect(GpuContext.create({ backend: 'glide' })).rejects.toThrow(
      /^backend 'glide' is not a backend Dawn knows; use one of vulkan/,
    );
  });

  it('round-trips data, odd byte counts included', async () => {
    const data = new Float32Array([1.5, -2, 3.25, 1e-30, 7]);
    const buffer = float32Buffer(ctx, 'roundtrip', data);
    expect(Array.from(await ctx.transfers.readFloat32(buffer))).toEqual(Array.from(data));
    const bytes = new Uint8Array([1, 2, 3, 4, 5, 6]);
    ctx.transfers.upload(buffer, bytes, 4);
    const back = await ctx.transfers.readback(buffer, 4, 8);
    expect(Array.from(back)).toEqual([1, 2, 3, 4, 5, 6, 0, 0]);
    expect(() => ctx.transfers.upload(buffer, new Float32Array(6))).toThrow(/overflows its 20 B/);
    buffer.destroy();
  });

  it('an injected validation error is thrown at the next sync point, then cleared', async () => {
    // A storage binding of a buffer created without STORAGE usage is invalid.
    const pipeline = ctx.kernels.pipeline('adam', 'adam_tail');
    const notStorage = ctx.createBuffer({ label: 'not-storage', size: 64, usage: GPUBufferUsage.COPY_DST, category: 'other' });
    const uniform = ctx.createBuffer({ label: 'u', size: 256, usage: GPUBufferUsage.UNIFORM, category: 'other' });
    const group = ctx.kernels.bindGroup(
      pipeline,
      { param1: notStorage, grad1: notStorage, exp_avg1: notStorage, exp_avg_sq1: notStorage },
      uniform,
    );
    ctx.kernels.dispatch(pipeline, [group], 1);
    const error = await ctx.sync().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GpuDeviceError);
    expect((error as GpuDeviceError).kind).toBe('validation');
    expect((error as Error).message).toMatch(/^GPU validation error: .*not-storage/s);
    // Readbacks go through the same sync point: the next one works again once errors were reported.
    await expect(ctx.sync()).resolves.toBeUndefined();
    notStorage.destroy();
    uniform.destroy();
  });

  it('a readback after a failed dispatch throws instead of returning zeros', async () => {
    const good = float32Buffer(ctx, 'good', new Float32Array([42]));
    const pipeline = ctx.kernels.pipeline('adam', 'adam_tail');
    const group = ctx.kernels.bindGroup(pipeline, { param1: good, grad1: good, exp_avg1: good, exp_avg_sq1: good }, good); // uniform usage missing
    ctx.kernels.dispatch(pipeline, [group], 1);
    await expect(ctx.transfers.readFloat32(good)).rejects.toBeInstanceOf(GpuDeviceError);
    good.destroy();
  });

  it('counts live bytes per category as buffers are made and destroyed', () => {
    const before = ctx.memoryReport();
    const usage = GPUBufferUsage.STORAGE;
    const made = MEMORY_CATEGORIES.map((category, i) => ctx.createBuffer({ label: category, size: 1000 * (i + 1) + 2, usage, category }));
    const during = ctx.memoryReport();
    MEMORY_CATEGORIES.forEach((category, i) => {
      // Sizes round up to a multiple of 4 bytes, which is what the GPU holds.
      expect(during.live[category] - before.live[category]).toBe(1000 * (i + 1) + 4);
    });
    expect(during.total - before.total).toBe(MEMORY_CATEGORIES.reduce((s, _, i) => s + 1000 * (i + 1) + 4, 0));
    expect(during.buffers - before.buffers).toBe(MEMORY_CATEGORIES.length);
    made[0]!.destroy();
    made[0]!.destroy(); // idempotent
    expect(ctx.memoryReport().live.params).toBe(before.live.params);
    for (const b of made) b.destroy();
    const after = ctx.memoryReport();
    expect(after.live).toEqual(before.live);
    expect(after.peak.other - before.live.other).toBeGreaterThanOrEqual(7004);
  });

  it('a buffer larger than maxBufferSize is refused with the sizes', () => {
    const size = ctx.limits.maxBufferSize + 4;
    expect(() => ctx.createBuffer({ label: 'huge', size, usage: GPUBufferUsage.STORAGE, category: 'params' })).toThrow(GpuError);
  });
});

describe('gpuContext (one per process)', () => {
  it('returns the same context and refuses different options later', async () => {
    const { gpuContext } = await import('../../src/gpu/context.js');
    const first = await gpuContext({ backend: 'vulkan' });
    expect(await gpuContext({ backend: 'vulkan' })).toBe(first);
    expect(() => gpuContext({ backend: 'null' })).toThrow(/already created with \{"backend":"vulkan"\}/);
    first.destroy();
  });
});
