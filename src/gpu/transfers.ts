/**
 * Uploads and readbacks. Large transfers go in chunks through staging buffers that are kept for
 * reuse: a fresh staging buffer per transfer costs the page faults of fresh memory on every call
 * (measured on lavapipe: 1.2 GB/s readbacks with a new 16 MiB staging buffer per chunk, 5 GB/s
 * reusing two). Readbacks of several chunks copy chunk k+1 while chunk k is read out; uploads of a
 * MiB or more write into a mapped staging buffer and copy from it (writeBuffer measured 0.6 to 14
 * GB/s run to run on lavapipe, mapped staging a steady 5 to 6). Every readback passes the
 * context's error check first, so a device error is thrown instead of returning stale or zero data.
 * Staging buffers are counted under 'staging'.
 */
import type { DeviceBuffer, GpuContext } from './context.js';
import { GpuError } from './errors.js';

/** Bytes per staging chunk: large enough to stream, small enough to never hit a limit. */
const CHUNK_BYTES = 64 << 20;
/** Uploads from this size on go through mapped staging; smaller ones through writeBuffer. */
const STAGED_UPLOAD_BYTES = 1 << 20;
/**
 * Free staging bytes kept per direction; past that, the buffers unused longest are destroyed.
 * Readbacks keep as much as a grad sync holds at once (DDP's EARLY_READBACK_BYTES), so that steady
 * training steps never pay for fresh staging (lavapipe: 3 ns a byte for the first touch).
 */
const POOL_BYTES: Record<Direction, number> = { read: 256 << 20, write: 2 * CHUNK_BYTES };

/** The size of the staging buffer made for a transfer of `bytes`: powers of two from 1 MiB, so that similar transfers share. */
export function stagingSize(bytes: number): number {
  return Math.min(Math.max(1 << 20, 2 ** Math.ceil(Math.log2(bytes))), Math.max(bytes, CHUNK_BYTES));
}

type Direction = 'read' | 'write';

/** Staging buffers by direction, reused; write buffers in the pool are mapped and ready. */
class StagingPool {
  private readonly free: Record<Direction, DeviceBuffer[]> = { read: [], write: [] };
  /** Bytes of staging in use (acquired, not yet released). */
  private readonly busy: Record<Direction, number> = { read: 0, write: 0 };

  constructor(private readonly ctx: GpuContext) {}

  /** A free buffer of at least `bytes`, or null when there is none and `create` is false. */
  acquire(direction: Direction, bytes: number, create = true): DeviceBuffer | null {
    const list = this.free[direction];
    let best = -1;
    for (let i = 0; i < list.length; i++) if (list[i]!.size >= bytes && (best < 0 || list[i]!.size < list[best]!.size)) best = i;
    if (best >= 0) {
      const buffer = list.splice(best, 1)[0]!;
      this.busy[direction] += buffer.size;
      return buffer;
    }
    if (!create) return null;
    const size = stagingSize(bytes);
    this.busy[direction] += size;
    return this.ctx.createBuffer({
      label: `staging (${direction})`,
      size,
      usage: direction === 'read' ? GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST : GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
      category: 'staging',
      mappedAtCreation: direction === 'write',
    });
  }

  /** Whether staging of `direction` in use and free together stays within the pool's bytes. */
  roomFor(direction: Direction, bytes: number): boolean {
    return this.busy[direction] + this.free[direction].reduce((s, b) => s + b.size, 0) + bytes <= POOL_BYTES[direction];
  }

  release(direction: Direction, buffer: DeviceBuffer): void {
    this.busy[direction] -= buffer.size;
    if (buffer.destroyed) return;
    // Most recently used last; evict from the front.
    const list = this.free[direction];
    list.push(buffer);
    let kept = list.reduce((s, b) => s + b.size, 0);
    while (kept > POOL_BYTES[direction]) {
      const oldest = list.shift()!;
      kept -= oldest.size;
      oldest.destroy();
    }
  }

  destroy(): void {
    for (const list of Object.values(this.free)) for (const b of list.splice(0)) b.destroy();
  }
}

export class Transfers {
  private readonly pool: StagingPool;

  constructor(private readonly ctx: GpuContext) {
    this.pool = new StagingPool(ctx);
  }

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
      throw new GpuError(`upload to '${buffer.label}': ${bytes.byteLength} B at offset ${offset} overflows its ${buffer.size} B`);
    }
    for (let at = 0; at < bytes.byteLength; at += CHUNK_BYTES) {
      const chunk = bytes.subarray(at, Math.min(at + CHUNK_BYTES, bytes.byteLength));
      // Small uploads, and large ones while every staging buffer is still on its way back: writeBuffer.
      const staging =
        chunk.byteLength < STAGED_UPLOAD_BYTES
          ? null
          : this.pool.acquire('write', chunk.byteLength, this.pool.roomFor('write', chunk.byteLength));
      if (!staging) {
        this.ctx.device.queue.writeBuffer(buffer.gpu, offset + at, chunk as Uint8Array<ArrayBuffer>);
        continue;
      }
      new Uint8Array(staging.gpu.getMappedRange(0, chunk.byteLength)).set(chunk);
      staging.gpu.unmap();
      const encoder = this.ctx.device.createCommandEncoder({ label: `upload(${buffer.label})` });
      encoder.copyBufferToBuffer(staging.gpu, 0, buffer.gpu, offset + at, chunk.byteLength);
      this.ctx.submit([encoder.finish()]);
      // Back in the pool once the copy is done and it is mapped again.
      staging.gpu.mapAsync(GPUMapMode.WRITE).then(
        () => this.pool.release('write', staging),
        () => {
          staging.destroy();
          this.pool.release('write', staging);
        },
      );
    }
  }

  /**
   * Copy `size` bytes of `buffer` from `offset` back to the host (defaults: the whole buffer), into
   * `into` when given (it must hold `size` bytes), else into a new array.
   */
  /** Queue a copy of `size` bytes between two GPU buffers (offsets and size multiples of 4). */
  copy(from: DeviceBuffer, fromOffset: number, to: DeviceBuffer, toOffset: number, size: number): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: 'transfers.copy' });
    encoder.copyBufferToBuffer(from.gpu, fromOffset, to.gpu, toOffset, size);
    this.ctx.submit([encoder.finish()]);
  }

  async readback(buffer: DeviceBuffer, offset = 0, size = buffer.size - offset, into?: Uint8Array): Promise<Uint8Array> {
    if (offset % 4 !== 0 || size % 4 !== 0) {
      throw new GpuError(`readback of '${buffer.label}': offset ${offset} and size ${size} must be multiples of 4`);
    }
    if (offset + size > buffer.size) {
      throw new GpuError(`readback of '${buffer.label}': ${size} B at offset ${offset} overflows its ${buffer.size} B`);
    }
    if (into && into.byteLength < size)
      throw new GpuError(`readback of '${buffer.label}': ${size} B do not fit the ${into.byteLength} B given`);
    const out = into ?? new Uint8Array(size);
    if (size === 0) {
      await this.ctx.sync();
      return out;
    }
    const chunks = Math.ceil(size / CHUNK_BYTES);
    const staging = Array.from({ length: Math.min(2, chunks) }, () => this.pool.acquire('read', Math.min(size, CHUNK_BYTES))!);
    const length = (k: number) => Math.min(CHUNK_BYTES, size - k * CHUNK_BYTES);
    const issue = (k: number): Promise<void> => {
      const s = staging[k % 2]!;
      const encoder = this.ctx.device.createCommandEncoder({ label: `readback(${buffer.label})` });
      encoder.copyBufferToBuffer(buffer.gpu, offset + k * CHUNK_BYTES, s.gpu, 0, length(k));
      this.ctx.submit([encoder.finish()]);
      return s.gpu.mapAsync(GPUMapMode.READ, 0, length(k));
    };
    let failed = false;
    try {
      let next = issue(0);
      for (let k = 0; k < chunks; k++) {
        await next;
        if (k + 1 < chunks) next = issue(k + 1);
        if (k === 0) {
          // Errors of the work before this readback surface here (Dawn delivers them as tasks).
          await new Promise((resolve) => setImmediate(resolve));
          this.ctx.throwIfErrors();
        }
        const s = staging[k % 2]!;
        // Copy the mapped range before unmap(): the ArrayBuffer is detached afterwards.
        out.set(new Uint8Array(s.gpu.getMappedRange(0, length(k))), k * CHUNK_BYTES);
        s.gpu.unmap();
      }
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      for (const s of staging) {
        if (failed) s.destroy();
        this.pool.release('read', s);
      }
    }
    return out;
  }

  /**
   * Copy byte ranges of `buffer` back to the host, one after another into `into`, through one
   * staging buffer: one submit and one map for them all. The copies are queued before this returns,
   * right behind the work already queued, so a caller can issue several and consume them in order
   * while the later ones are still copying (the grad sync's chunks). Offsets and sizes are multiples
   * of 4; together at most one staging chunk (64 MiB).
   */
  async readbackPieces(buffer: DeviceBuffer, pieces: readonly { offset: number; size: number }[], into: Uint8Array): Promise<void> {
    let total = 0;
    for (const { offset, size } of pieces) {
      if (offset % 4 !== 0 || size % 4 !== 0)
        throw new GpuError(`readback of '${buffer.label}': offset ${offset} and size ${size} must be multiples of 4`);
      if (offset + size > buffer.size)
        throw new GpuError(`readback of '${buffer.label}': ${size} B at offset ${offset} overflows its ${buffer.size} B`);
      total += size;
    }
    if (total > CHUNK_BYTES) throw new GpuError(`readback of '${buffer.label}': ${total} B in pieces exceed one ${CHUNK_BYTES} B chunk`);
    if (into.byteLength < total) throw new GpuError(`readback of '${buffer.label}': ${total} B do not fit the ${into.byteLength} B given`);
    if (total === 0) return this.ctx.sync();
    const staging = this.pool.acquire('read', total)!;
    const encoder = this.ctx.device.createCommandEncoder({ label: `readback(${buffer.label})` });
    let at = 0;
    for (const { offset, size } of pieces) {
      if (size > 0) encoder.copyBufferToBuffer(buffer.gpu, offset, staging.gpu, at, size);
      at += size;
    }
    this.ctx.submit([encoder.finish()]);
    let failed = false;
    try {
      await staging.gpu.mapAsync(GPUMapMode.READ, 0, total);
      await new Promise((resolve) => setImmediate(resolve));
      this.ctx.throwIfErrors();
      into.set(new Uint8Array(staging.gpu.getMappedRange(0, total)));
      staging.gpu.unmap();
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      if (failed) staging.destroy();
      this.pool.release('read', staging);
    }
  }

  async readFloat32(buffer: DeviceBuffer, offsetElements = 0, count = buffer.size / 4 - offsetElements): Promise<Float32Array> {
    const bytes = await this.readback(buffer, offsetElements * 4, count * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  }

  /** Free the staging buffers kept for reuse. */
  destroy(): void {
    this.pool.destroy();
  }
}
