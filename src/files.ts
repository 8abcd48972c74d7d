/**
 * Files that are never seen half-written and survive a power cut: written under a temporary name,
 * fsynced, renamed over the target, and the folder fsynced so that the rename itself is on disk.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { sync as writeFileAtomicSync } from 'write-file-atomic';

/** fsync a folder (so that entries created, renamed or removed in it are durable). */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Write `path` so that it is never seen half-written: write-file-atomic (temporary name, fsync, rename), then the folder fsynced. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  writeFileAtomicSync(path, typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  fsyncDir(dirname(path));
}

/**
 * `writeFileAtomic` for data given as chunks (ONNX external data past the 4 GiB a single Buffer can
 * hold, which write-file-atomic would need): a temporary name, every chunk, fsync, rename, folder fsync.
 */
export function writeChunksAtomic(path: string, chunks: readonly Uint8Array[]): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      for (const chunk of chunks) for (let at = 0; at < chunk.byteLength; ) at += writeSync(fd, chunk, at, chunk.byteLength - at);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (error) {
    rmSync(tmp, { force: true });
    throw error;
  }
  fsyncDir(dirname(path));
}
