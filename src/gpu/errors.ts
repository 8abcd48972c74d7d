/** Errors raised by the GPU runtime. Each says what happened, where, and what to do. */
import { WebtronError } from '../errors.js';

export class GpuError extends WebtronError {
  override name = 'GpuError';
  override readonly code: string = 'ERR_GPU';
}

/** No adapter matched the request (or none exists at all). */
export class NoAdapterError extends GpuError {
  override name = 'NoAdapterError';
  override readonly code: string = 'ERR_NO_ADAPTER';
}

/**
 * Errors the device reported asynchronously (validation, out-of-memory, internal) since the last
 * sync point. Thrown by `GpuContext.sync()` so that a failed dispatch never reads back as zeros.
 */
export class GpuDeviceError extends GpuError {
  override name = 'GpuDeviceError';
  override readonly code: string = 'ERR_GPU_DEVICE';
  override readonly exitCode: 1 | 2 = 1;
  constructor(
    readonly kind: 'validation' | 'out-of-memory' | 'internal' | 'device-lost',
    readonly messages: string[],
  ) {
    const first = messages[0] ?? '(no message)';
    const more = messages.length > 1 ? ` (+${messages.length - 1} more)` : '';
    super(`GPU ${kind} error: ${first.trim()}${more}`);
  }
}
