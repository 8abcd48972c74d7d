/** `node:util` in a browser worker: promisify with Node's custom symbol, which src/gpu/poll.ts reads. */
type Callbackish = (...args: unknown[]) => unknown;

const custom = Symbol.for('nodejs.util.promisify.custom');

export function promisify(fn: Callbackish): Callbackish {
  const own = (fn as unknown as Record<symbol, Callbackish | undefined>)[custom];
  if (own) return own;
  return (...args: unknown[]) =>
    new Promise((resolve, reject) => fn(...args, (error: unknown, value: unknown) => (error ? reject(error) : resolve(value))));
}
promisify.custom = custom;

export const inspect = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
export const format = (...args: unknown[]) => args.map(inspect).join(' ');

export default { promisify, inspect, format };
