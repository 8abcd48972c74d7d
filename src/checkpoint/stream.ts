/**
 * Tensors between the GPU and safetensors files, streaming: a file is written chunk by chunk from
 * GPU readbacks (the next readback runs while the last chunk is being written), checksummed per
 * block on the way; a byte range is read back in whole checked blocks and uploaded in aligned
 * chunks. Memory stays at a few chunks whatever the model's size; no file is read whole.
 */
import { CheckpointError } from './errors.js';
import { open, type FileHandle } from 'node:fs/promises';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { BLOCK_BYTES, BlockChecksums, verifyBlocks } from './blocks.js';
import { encodeHeader, type SafetensorsDtype, type TensorEntry } from './safetensors.js';

/** Bytes per readback, write, read and upload. */
const CHUNK_BYTES = 16 << 20;

/** A tensor whose bytes lie in a GPU buffer from `byteOffset` (a multiple of 4) on. */
export interface GpuTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  buffer: DeviceBuffer;
  byteOffset: number;
}

export interface WrittenFile {
  bytes: number;
  crc32: number[];
  tensors: TensorEntry[];
  dataStart: number;
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let at = 0; at < bytes.byteLength; ) {
    const { bytesWritten } = await fh.write(bytes, at, bytes.byteLength - at, position + at);
    at += bytesWritten;
  }
}

/**
 * Write `tensors` (read back from the GPU) as one safetensors file at `path`, fsynced. A pipeline
 * of three chunk buffers: the readback of chunk k+1 runs while chunk k is checksummed and chunk
 * k-1 is still being written.
 */
export async function writeTensorFile(
  ctx: GpuContext,
  path: string,
  tensors: readonly GpuTensor[],
  metadata: Record<string, string> = {},
): Promise<WrittenFile> {
  const { bytes: header, entries } = encodeHeader(tensors, metadata);
  const chunks: { tensor: GpuTensor; at: number; n: number }[] = [];
  tensors.forEach((tensor, k) => {
    const total = entries[k]!.end - entries[k]!.begin;
    for (let at = 0; at < total; at += CHUNK_BYTES) chunks.push({ tensor, at, n: Math.min(CHUNK_BYTES, total - at) });
  });
  const fh = await open(path, 'wx');
  let reading: Promise<Uint8Array> | null = null;
  try {
    const sums = new BlockChecksums();
    sums.push(header);
    await writeAll(fh, header, 0);
    let position = header.byteLength;
    const buffers = [0, 1, 2].slice(0, Math.min(3, chunks.length)).map(() => new Uint8Array(CHUNK_BYTES + 4));
    // GPU copies move whole words: a 16-bit tensor of odd length reads one padding element more.
    // Both kinds of promise are awaited later; until then a rejection (a full disk) must not count as unhandled.
    const quiet = <T>(p: Promise<T>) => {
      p.catch(() => undefined);
      return p;
    };
    const readback = (i: number) => {
      const c = chunks[i]!;
      return quiet(ctx.transfers.readback(c.tensor.buffer, c.tensor.byteOffset + c.at, Math.ceil(c.n / 4) * 4, buffers[i % 3]!));
    };
    reading = chunks.length > 0 ? readback(0) : null;
    let writing: Promise<void> | null = null;
    for (let i = 0; i < chunks.length; i++) {
      await reading;
      // Buffer (i + 1) % 3 last held chunk i - 2, whose write finished before chunk i - 1's began.
      reading = i + 1 < chunks.length ? readback(i + 1) : null;
      const piece = buffers[i % 3]!.subarray(0, chunks[i]!.n);
      sums.push(piece);
      if (writing) await writing;
      writing = quiet(writeAll(fh, piece, position));
      position += piece.byteLength;
    }
    if (writing) await writing;
    await fh.sync();
    return { bytes: position, crc32: sums.finish(), tensors: entries, dataStart: header.byteLength };
  } catch (error) {
    await reading?.catch(() => undefined); // let a readback still running finish before the file closes
    throw error;
  } finally {
    await fh.close();
  }
}

/**
 * A checkpoint file read in checked spans of whole blocks. The span after the one in use is read
 * ahead (the disk works while the caller checks and uploads), and the last span is kept (small
 * tensors share blocks).
 */
export class CheckedFile {
  private fh: FileHandle | null = null;
  /** Spans by their first byte: the one in use and the one read ahead. */
  private spans = new Map<number, Promise<Uint8Array>>();
  private spare: Uint8Array[] = [];

  constructor(
    readonly path: string,
    private readonly meta: { bytes: number; crc32: readonly number[] },
  ) {}

  private static readonly SPAN = CHUNK_BYTES;

  private spanStart(at: number): number {
    return Math.floor(at / BLOCK_BYTES) * BLOCK_BYTES;
  }

  private fetch(from: number): Promise<Uint8Array> {
    let span = this.spans.get(from);
    if (!span) {
      const to = Math.min(from + CheckedFile.SPAN, this.meta.bytes);
      const recycled = this.spare.pop();
      const bytes = recycled && recycled.byteLength >= to - from ? recycled.subarray(0, to - from) : new Uint8Array(to - from);
      span = (async () => {
        this.fh ??= await open(this.path, 'r');
        for (let got = 0; got < bytes.byteLength; ) {
          const { bytesRead } = await this.fh.read(bytes, got, bytes.byteLength - got, from + got);
          if (bytesRead === 0) throw new CheckpointError(`${this.path}: ends at ${from + got} B, index.json says ${this.meta.bytes} B`);
          got += bytesRead;
        }
        verifyBlocks(bytes, from / BLOCK_BYTES, this.meta.crc32, this.path);
        return bytes;
      })();
      span.catch(() => undefined); // surfaced where it is awaited
      this.spans.set(from, span);
    }
    return span;
  }

  /** Keep at most the span at `keep` and the one after it. */
  private trim(keep: number): void {
    for (const [start, span] of this.spans) {
      if (start === keep || start === keep + CheckedFile.SPAN) continue;
      this.spans.delete(start);
      void span.then(
        (b) => this.spare.length < 2 && this.spare.push(new Uint8Array(b.buffer)),
        () => undefined,
      );
    }
  }

  /** Stream the checked bytes [start, end) of the file to `sink`, in order. */
  async read(start: number, end: number, sink: (bytes: Uint8Array) => void): Promise<void> {
    for (let at = start; at < end; ) {
      // Spans start at multiples of the span size from the first block read, so read-ahead lines up.
      const first = this.spanStart(at);
      const known = [...this.spans.keys()].find((s) => s <= at && at < s + CheckedFile.SPAN);
      const from = known ?? first;
      const span = await this.fetch(from);
      this.trim(from);
      const next = from + CheckedFile.SPAN;
      if (next < end && next < this.meta.bytes) this.fetch(next);
      const upto = Math.min(end, from + span.byteLength);
      sink(span.subarray(at - from, upto - from));
      at = upto;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.spans.values()]);
    await this.fh?.close();
    this.fh = null;
    this.spans.clear();
  }
}

/** Uploads a byte stream to a GPU buffer from `byteOffset` (a multiple of 4) in aligned chunks. */
export class UploadStream {
  private readonly staging = new Uint8Array(CHUNK_BYTES);
  private filled = 0;
  private written = 0;

  constructor(
    private readonly ctx: GpuContext,
    private readonly buffer: DeviceBuffer,
    private readonly byteOffset: number,
  ) {}

  write(bytes: Uint8Array): void {
    for (let at = 0; at < bytes.byteLength; ) {
      const n = Math.min(this.staging.byteLength - this.filled, bytes.byteLength - at);
      this.staging.set(bytes.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === this.staging.byteLength) this.flush();
    }
  }

  private flush(): void {
    if (this.filled === 0) return;
    // writeBuffer copies at once, so the staging array is free again on return.
    this.ctx.transfers.upload(this.buffer, this.staging.subarray(0, this.filled), this.byteOffset + this.written);
    this.written += this.filled;
    this.filled = 0;
  }

  /** Flush the rest (a partial last word is padded with zeros); returns the bytes written. */
  end(): number {
    this.flush();
    return this.written;
  }
}

/** A safetensors file's whole contents in host memory (header, then the tensors' bytes), copied from the GPU. */
export interface FileImage {
  /** The file's bytes (`bytes.byteLength` is its size). */
  bytes: Uint8Array;
}

/** Bytes of host memory the image of `tensors`' file takes (see `snapshotTensorFile`). */
export function imageBytes(tensors: readonly GpuTensor[], metadata: Record<string, string> = {}): number {
  const { bytes: header, entries } = encodeHeader(tensors, metadata);
  return header.byteLength + (entries.at(-1)?.end ?? 0) + 4;
}

/**
 * Copy `tensors` from the GPU into one host image of their safetensors file (for a save that writes
 * in the background). `reuse` is an earlier image's memory, taken when large enough, so a run that
 * saves again does not fault in fresh pages each time: `take(size)` hands back such memory of at
 * least `size` bytes, or undefined.
 */
export async function snapshotTensorFile(
  ctx: GpuContext,
  tensors: readonly GpuTensor[],
  metadata: Record<string, string> = {},
  take: (size: number) => Uint8Array | undefined = () => undefined,
): Promise<FileImage> {
  const { bytes: header, entries } = encodeHeader(tensors, metadata);
  const size = header.byteLength + (entries.at(-1)?.end ?? 0);
  // 4 spare bytes: GPU copies move whole words, so a 16-bit tensor of odd length reads one padding element more.
  const memory = take(size + 4)?.subarray(0, size + 4) ?? new Uint8Array(size + 4);
  memory.set(header, 0);
  // In order, so that a padding element read past one tensor is overwritten by the next one.
  for (const [k, t] of tensors.entries()) {
    const e = entries[k]!;
    const n = Math.ceil((e.end - e.begin) / 4) * 4;
    if (n === 0) continue;
    const at = header.byteLength + e.begin;
    await ctx.transfers.readback(t.buffer, t.byteOffset, n, memory.subarray(at, at + n));
  }
  return { bytes: memory.subarray(0, size) };
}

/**
 * Write an image to `path` (which must not exist) in chunks, checksummed per block, then fsync.
 * Only the file system's threads and one CRC-32 per chunk run meanwhile, so training goes on.
 */
export async function writeFileImage(path: string, image: FileImage): Promise<{ bytes: number; crc32: number[] }> {
  const fh = await open(path, 'wx');
  try {
    const sums = new BlockChecksums();
    const { bytes } = image;
    let writing: Promise<void> | null = null;
    for (let at = 0; at < bytes.byteLength; at += CHUNK_BYTES) {
      const piece = bytes.subarray(at, Math.min(bytes.byteLength, at + CHUNK_BYTES));
      const write = writeAll(fh, piece, at);
      write.catch(() => undefined); // awaited below
      sums.push(piece); // while the chunk is being written
      if (writing) await writing;
      writing = write;
    }
    if (writing) await writing;
    await fh.sync();
    return { bytes: bytes.byteLength, crc32: sums.finish() };
  } finally {
    await fh.close();
  }
}
