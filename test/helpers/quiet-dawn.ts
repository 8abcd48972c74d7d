/**
 * Loaded by vitest.config.ts in vitest's main process, where every test process's stderr arrives
 * (the forks pool pipes it there): drops Dawn's two start-up notices, so a real warning stands out.
 */
import { withoutDawnNotices } from '../../src/gpu/dawn-notice.js';

const write = process.stderr.write.bind(process.stderr) as (chunk: unknown, ...rest: unknown[]) => boolean;
process.stderr.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
  const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : null;
  if (text === null) return write(chunk, ...rest);
  const kept = withoutDawnNotices(text);
  if (kept === text) return write(chunk, ...rest);
  if (kept.trim() === '') {
    const done = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    done?.();
    return true;
  }
  return write(kept, ...rest);
}) as typeof process.stderr.write;
