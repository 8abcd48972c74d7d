/**
 * How the main thread waits for the GPU. Dawn's node bindings resolve a GPU promise (mapAsync,
 * onSubmittedWorkDone) by re-queuing a native tick with the global `setImmediate` until the work is
 * done: a busy loop on the main thread for as long as the GPU works. On a hardware GPU that costs one
 * spare core and gives the lowest latency. On a CPU driver (lavapipe) the "GPU" is threads of the same
 * process on the same cores, and the loop takes a core from them: two ranks on two cores spent about
 * 35% of their wall time spinning there (a CPU profile of `webtron train` at d = 2).
 *
 * So webtron can hand Dawn's ticks to a timer instead: `pollGpuEvery(ms)` routes Dawn's ticks given
 * to the global `setImmediate` (every other callback is untouched) to `setTimeout(tick, ms)`, which
 * sleeps. The default is 1 ms on software adapters and Dawn's own busy
 * loop (0) on hardware; `WEBTRON_GPU_POLL_MS` sets it either way.
 */
import { promisify } from 'node:util';
import { GpuError } from './errors.js';

const dawnImmediate = globalThis.setImmediate;
let everyMs = 0;

/**
 * Whether `fn` looks like Dawn's tick: a native function without a name or parameters (one made by
 * N-API). JavaScript callbacks are not native; a promise's resolve function, which code hands to
 * `setImmediate` to yield (`await new Promise((r) => setImmediate(r))`), takes one parameter; bound
 * functions have a name.
 */
function isDawnTick(fn: unknown): boolean {
  return (
    typeof fn === 'function' && fn.length === 0 && fn.name === '' && Function.prototype.toString.call(fn).endsWith('{ [native code] }')
  );
}

function pollingSetImmediate(callback: (...args: unknown[]) => void, ...args: unknown[]): NodeJS.Immediate {
  if (everyMs > 0 && isDawnTick(callback)) {
    // A Timeout where an Immediate is expected: Dawn never keeps or clears what it gets back.
    return setTimeout(callback, everyMs, ...args) as unknown as NodeJS.Immediate;
  }
  return dawnImmediate(callback, ...args);
}

/** Wait for the GPU by polling every `ms` milliseconds (0: Dawn's busy loop). Process-wide. */
export function pollGpuEvery(ms: number): void {
  if (!Number.isInteger(ms) || ms < 0) throw new GpuError(`GPU poll interval must be a whole number of milliseconds ≥ 0, got ${ms}`);
  everyMs = ms;
  if (globalThis.setImmediate !== pollingSetImmediate) {
    // util.promisify(setImmediate) keeps working: it looks for this symbol on the global function.
    Object.defineProperty(pollingSetImmediate, promisify.custom, {
      value: (dawnImmediate as unknown as Record<symbol, unknown>)[promisify.custom],
    });
    globalThis.setImmediate = pollingSetImmediate as typeof setImmediate;
  }
}

/** The poll interval now in force (0: Dawn's busy loop). */
export function gpuPollMs(): number {
  return everyMs;
}

/**
 * The interval for an adapter: `WEBTRON_GPU_POLL_MS` when set, else 1 ms on a software adapter and
 * 0 (Dawn's busy loop) on hardware.
 */
export function gpuPollFor(software: boolean, env: NodeJS.ProcessEnv = process.env): number {
  const text = env.WEBTRON_GPU_POLL_MS;
  if (text === undefined || text === '') return software ? 1 : 0;
  const ms = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(ms))
    throw new GpuError(`WEBTRON_GPU_POLL_MS must be a whole number of milliseconds (0: busy-poll), got '${text}'`);
  return ms;
}
