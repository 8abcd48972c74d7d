/**
 * Uploads and readbacks. Large transfers go in chunks so that no single staging buffer or queue
 * write gets near the device's limits; every readback passes the context's sync point first, so a
 * device error is thrown instead of returning stale or zero data.
 */
import type { DeviceBuffer, GpuContext } from './context.js';
import { GpuError } from './errors.js';

/** Bytes per staging chunk: large enough to stream, small enough to never hit a limit. */
const CHUNK_BYTES = 64 << 20;

export class Transfers {
  constructor(private readonly ctx: GpuContext) {}

  /** Write `data` into `buffer` at `offset` bytes. A trailing partial word is zero-padded. */
  upload(buffer: DeviceBuffer, data: ArrayBufferView, offset = 0): void {
    if (offset % 4 !== 0) throw new GpuError(`upload to '${buffer.label}': offset ${offset} is not a multiple of 4`);
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 !== 0) {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      bytes = padded;
    }
    if (offset + bytes.byteLength > buffer.size) {
      throw new GpuError(
        `upload to '${buffer.label}': ${bytes.byteLength} B at offset ${offset} overflows its ${buffer.size} B`,
      );
    }
    for (let at = 0; at < bytes.byteLength; at += CHUNK_BYTES) {
      const chunk = bytes.subarray(at, Math.min(at + CHUNK_BYTES, bytes.byteLength));
      this.ctx.device.queue.writeBuffer(buffer.gpu, offset + at, chunk);
    }
  }

  /**
   * Copy `size` bytes of `buffer` from `offset` back to the host (defaults: the whole buffer), into
   * `into` when given (it must hold `size` bytes), else into a new array.
   */
  async readback(buffer: DeviceBuffer, offset = 0, size = buffer.size - offset, into?: Uint8Array): Promise<Uint8Array> {
    if (offset % 4 !== 0 || size % 4 !== 0) {
      throw new GpuError(`readback of '${buffer.label}': offset ${offset} and size ${size} must be multiples of 4`);
    }
    if (offset + size > buffer.size) {
      throw new GpuError(`readback of '${buffer.label}': ${size} B at offset ${offset} overflows its ${buffer.size} B`);
    }
    if (into && into.byteLength < size) throw new GpuError(`readback of '${buffer.label}': ${size} B do not fit the ${into.byteLength} B given`);
    const out = into ?? new Uint8Array(size);
    if (size === 0) {
      await this.ctx.sync();
      return out;
    }
    const staging = this.ctx.createBuffer({
      label: `readback(${buffer.label})`,
      size: Math.min(size, CHUNK_BYTES),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      category: 'staging',
    });
    try {
      for (let at = 0; at < size; at += CHUNK_BYTES) {
        const n = Math.min(CHUNK_BYTES, size - at);
        const encoder = this.ctx.device.createCommandEncoder({ label: staging.label });
        encoder.copyBufferToBuffer(buffer.gpu, offset + at, staging.gpu, 0, n);
        this.ctx.submit([encoder.finish()]);
        await this.ctx.sync();
        await staging.gpu.mapAsync(GPUMapMode.READ, 0, n);
        // Copy the mapped range before unmap(): the ArrayBuffer is detached afterwards.
        out.set(new Uint8Array(staging.gpu.getMappedRange(0, n)), at);
        staging.gpu.unmap();
      }
    } finally {
      staging.destroy();
    }
    return out;
  }

  async readFloat32(buffer: DeviceBuffer, offsetElements = 0, count = buffer.size / 4 - offsetElements): Promise<Float32Array> {
    const bytes = await this.readback(buffer, offsetElements * 4, count * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  }
}
