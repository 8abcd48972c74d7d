/**
 * How the main thread waits for the GPU (src/gpu/poll.ts): Dawn's ticks given to the global
 * setImmediate go to a timer on a software adapter, every other callback stays an immediate, 0
 * restores Dawn's busy loop, and GPU waits still complete through the timer.
 */
import { promisify } from 'node:util';
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

  it('Dawn-like ticks go to a timer and run after the immediates queued with them; other callbacks stay immediates', async () => {
    pollGpuEvery(5);
    const order: string[] = [];
    // A proxy of an unnamed function without parameters reads as native code with no name and no
    // parameters, as the N-API function Dawn queues does.
    const dawnLikeTick = new Proxy(() => void order.push('tick'), {});
    expect(scheduledAsTimer(dawnLikeTick)).toBe(true);
    expect(scheduledAsTimer(() => order.push('js'))).toBe(false);
    // Native, but not Dawn's: a promise's resolve function (one parameter) and a bound function (a name).
    let resolve: (v?: unknown) => void = () => undefined;
    void new Promise((r) => {
      resolve = r;
    });
    expect(scheduledAsTimer(resolve)).toBe(false);
    expect(scheduledAsTimer(Math.max.bind(null))).toBe(false);
    await new Promise<void>((done) => {
      setImmediate(dawnLikeTick);
      setImmediate(() => order.push('js'));
      setTimeout(done, 50);
    });
    expect(order).toEqual(['js', 'tick']);
    pollGpuEvery(0);
    expect(scheduledAsTimer(dawnLikeTick)).toBe(false);
  });

  it('util.promisify(setImmediate) still resolves with its value', async () => {
    pollGpuEvery(1);
    await expect(promisify(setImmediate)('value')).resolves.toBe('value');
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
