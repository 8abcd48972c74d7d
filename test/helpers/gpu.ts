import { storageUsage, type DeviceBuffer, type GpuContext } from '../../src/gpu/context.js';
import type { MemoryCategory } from '../../src/gpu/memory.js';

/** A storage buffer holding `data` (float32), counted under `category`. */
export function float32Buffer(ctx: GpuContext, label: string, data: Float32Array, category: MemoryCategory = 'other'): DeviceBuffer {
  const buffer = ctx.createBuffer({ label, size: data.byteLength, usage: storageUsage(), category });
  ctx.transfers.upload(buffer, data);
  return buffer;
}
