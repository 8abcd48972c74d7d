/**
 * The Node globals webtron's core touches, for a browser worker: `process` (env, stdout and stderr
 * that the worker page shows, no signals) and `setImmediate` (a message-channel turn: a timeout
 * would wait at least 4 ms once nested). Injected into the bundle by scripts/build-browser.mjs.
 */
import { Buffer } from 'buffer';

type Writer = (text: string) => void;
let out: Writer = (text) => console.log(text);

/** Where the worker's stdout and stderr go (the page's log). */
export function onOutput(writer: Writer): void {
  out = writer;
}

const stream = {
  isTTY: false,
  write(text: string | Uint8Array): boolean {
    out(typeof text === 'string' ? text : new TextDecoder().decode(text));
    return true;
  },
};

export const process = {
  env: {} as Record<string, string | undefined>,
  platform: 'browser',
  pid: 1,
  ppid: 0,
  argv: [] as string[],
  execPath: '',
  version: 'v20.0.0',
  versions: {} as Record<string, string>,
  stdout: stream,
  stderr: stream,
  cwd: () => '/',
  on: () => process,
  off: () => process,
  once: () => process,
  emitWarning: () => undefined,
  exit: (code?: number): never => {
    throw new Error(`process.exit(${code ?? 0}) in a browser worker`);
  },
  nextTick: (fn: (...args: unknown[]) => void, ...args: unknown[]) => queueMicrotask(() => fn(...args)),
};

const queue: (() => void)[] = [];
const channel = new MessageChannel();
channel.port1.onmessage = () => queue.shift()?.();

export function setImmediate(fn: (...args: unknown[]) => void, ...args: unknown[]): number {
  queue.push(() => fn(...args));
  channel.port2.postMessage(0);
  return 0;
}
// What src/gpu/poll.ts finds on the global function: a promise of the next turn.
Object.defineProperty(setImmediate, Symbol.for('nodejs.util.promisify.custom'), {
  value: () => new Promise<void>((resolve) => setImmediate(() => resolve())),
});
(globalThis as unknown as { setImmediate: typeof setImmediate }).setImmediate ??= setImmediate;

export { Buffer };
