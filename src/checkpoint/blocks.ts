/**
 * Block checksums: the CRC-32 of every BLOCK_BYTES block of a file, computed while it streams out
 * and checked on every block read back. A load at another data-parallel size reads only the
 * ranges it needs and still checks every byte it uses (it reads whole blocks around them).
 * CRC-32 (zlib's) instead of SHA-256: measured here at 3.5 GB/s against 1.8 GB/s, and a checkpoint
 * guards against corruption, not against someone who can also rewrite the index.
 */
import { crc32 } from 'node:zlib';
import { CheckpointError } from './errors.js';

export const BLOCK_BYTES = 4 << 20;

/** CRC-32s of consecutive BLOCK_BYTES blocks of a byte stream fed in pieces of any size. */
export class BlockChecksums {
  private readonly done: number[] = [];
  private current = 0;
  private filled = 0;

  push(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.byteLength) {
      const n = Math.min(BLOCK_BYTES - this.filled, bytes.byteLength - at);
      this.current = crc32(bytes.subarray(at, at + n), this.current);
      this.filled += n;
      at += n;
      if (this.filled === BLOCK_BYTES) {
        this.done.push(this.current);
        this.current = 0;
        this.filled = 0;
      }
    }
  }

  /** The checksums of every block, the last one partial. */
  finish(): number[] {
    return this.filled > 0 ? [...this.done, this.current] : [...this.done];
  }
}

/** Check the blocks `first..` that `bytes` (starting at block `first`'s first byte) covers. */
export function verifyBlocks(bytes: Uint8Array, first: number, checksums: readonly number[], file: string): void {
  for (let b = 0; b * BLOCK_BYTES < bytes.byteLength; b++) {
    const block = bytes.subarray(b * BLOCK_BYTES, Math.min((b + 1) * BLOCK_BYTES, bytes.byteLength));
    const want = checksums[first + b];
    if (want === undefined || crc32(block) !== want) {
      throw new CheckpointError(
        `${file}: bytes ${(first + b) * BLOCK_BYTES}..${(first + b) * BLOCK_BYTES + block.byteLength} do not match their checksum in index.json (corrupt or replaced); restore the file or load an earlier checkpoint`,
      );
    }
  }
}
