/**
 * How the main thread waits for the GPU (src/gpu/poll.ts): native functions given to the global
 * setImmediate (Dawn's ticks) go to a timer on a software adapter, JavaScript callbacks stay
 * immediates, 0 restores Dawn's busy loop, and GPU waits still complete through the timer.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { GpuError } from '../../src/gpu/errors.js';
import { gpuPollFor, gpuPollMs, pollGpuEvery } from '../../src/gpu/poll.js';

const before = gpuPollMs();
afterAll(() => pollGpuEvery(before));

/** Whether setImmediate scheduled `fn` as a timer (Timeouts have refresh(), Immediates do not). */
function scheduledAsTimer(fn: () => void): boolean {
  const handle = setImmediate(fn) as unknown as { refresh?: unknown };
  const timer = typeof handle.refresh === 'function';
  if (timer) clearTimeout(handle as unknown as NodeJS.Timeout);
  else clearImmediate(handle as unknown as NodeJS.Immediate);
  return timer;
}

describe('GPU wait polling', () => {
  it('the interval: 1 ms on a software adapter, busy (0) on hardware, WEBTRON_GPU_POLL_MS either way', () => {
    expect(gpuPollFor(true, {})).toBe(1);
    expect(gpuPollFor(false, {})).toBe(0);
    expect(gpuPollFor(true, { WEBTRON_GPU_POLL_MS: '0' })).toBe(0);
    expect(gpuPollFor(false, { WEBTRON_GPU_POLL_MS: '3' })).toBe(3);
    for (const bad of ['-1', '1.5', 'fast', '1e3'])
      expect(() => gpuPollFor(true, { WEBTRON_GPU_POLL_MS: bad })).toThrow(/WEBTRON_GPU_POLL_MS must be a whole number/);
    expect(() => pollGpuEvery(-2)).toThrow(GpuError);
  });

  it('native callbacks go to a timer and run after the immediates queued with them; JavaScript callbacks stay immediates', async () => {
    pollGpuEvery(5);
    const order: string[] = [];
    // A bound function is native to V8, as Dawn's tick is.
    const nativeTick = function (this: string[]) {
      this.push('native');
    }.bind(order);
    expect(scheduledAsTimer(nativeTick)).toBe(true);
    expect(scheduledAsTimer(() => order.push('js'))).toBe(false);
    await new Promise<void>((done) => {
      setImmediate(nativeTick);
      setImmediate(() => order.push('js'));
      setTimeout(done, 50);
    });
    expect(order).toEqual(['js', 'native']);
    pollGpuEvery(0);
    expect(scheduledAsTimer(nativeTick)).toBe(false);
  });

  it('a software adapter polls every 1 ms by default, and GPU waits complete through it', async () => {
    const ctx = await GpuContext.create();
    try {
      expect(gpuPollMs()).toBe(gpuPollFor(ctx.software));
      const buffer = ctx.createBuffer({
        label: 'poll-test',
        size: 16,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        category: 'other',
      });
      ctx.transfers.upload(buffer, new Float32Array([1, 2, 3, 4]));
      expect(Array.from(await ctx.transfers.readFloat32(buffer, 0, 4))).toEqual([1, 2, 3, 4]);
      buffer.destroy();
    } finally {
      ctx.destroy();
    }
  });
});
