/**
 * Reading what `torch.save` writes (its zip format, PyTorch 1.6 and later), without Python: a zip
 * whose records are `ARCHIVE/data.pkl` (the pickled object), `ARCHIVE/data/KEY` (each storage's raw
 * little-endian bytes) and `ARCHIVE/version`, all stored uncompressed.
 *
 * The pickle is read by `unpickle` (./pickle.ts), which never runs Python code. Tensors
 * (`torch._utils._rebuild_tensor_v2`) become `TensorRef`s, whose values are read from their storage
 * record on demand, one tensor at a time.
 *
 * `writeTorchArchive` writes such an archive, as torch.save lays it out, for `torch.load`.
 *
 * The zip's directory is read here rather than by a package: the config is resolved synchronously,
 * and a tensor is one positioned read of a stored record, which the zip packages on npm offer only
 * through asynchronous streams (yauzl) or by reading the whole archive into memory (adm-zip).
 */
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import CRC32 from 'crc-32';
import { wordsToFloat32 } from '../collectives/reduce.js';
import { fsyncDir } from '../files.js';
import { CheckpointError } from './errors.js';
import { type PickleGlobal, unpickle } from './pickle.js';

/** The dtypes of torch tensors webtron reads, and their widths in bytes. */
export type TensorDtype = 'float32' | 'float16' | 'bfloat16' | 'float64';
const BYTES: Record<TensorDtype, number> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };
/** torch's storage class of each dtype webtron reads and writes (the `torch.FloatStorage` of a pickled tensor). */
export const STORAGE_CLASS: Record<TensorDtype, string> = {
  float32: 'FloatStorage',
  float16: 'HalfStorage',
  bfloat16: 'BFloat16Storage',
  float64: 'DoubleStorage',
};
/** The dtype of each storage class, for reading. */
const DTYPE_OF_STORAGE = new Map(Object.entries(STORAGE_CLASS).map(([dtype, cls]) => [cls, dtype as TensorDtype]));

/** A tensor in the pickle: where its values lie in which storage, read by `TorchArchive.read`. */
export interface TensorRef {
  readonly $tensor: true;
  readonly dtype: TensorDtype | string;
  /** The storage's record key (`ARCHIVE/data/KEY`). */
  readonly key: string;
  /** In elements of the storage. */
  readonly offset: number;
  readonly shape: number[];
  readonly stride: number[];
}

export const isTensorRef = (v: unknown): v is TensorRef => typeof v === 'object' && v !== null && (v as TensorRef).$tensor === true;

interface ZipRecord {
  dataStart: number;
  size: number;
}

/** One little-endian unsigned field of up to 8 bytes, checked to be a safe integer. */
function uint(buf: Buffer, at: number, bytes: 2 | 4 | 8): number {
  if (bytes === 2) return buf.readUInt16LE(at);
  if (bytes === 4) return buf.readUInt32LE(at);
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`a zip field of ${v} is past 2^53`);
  return Number(v);
}

/** Where an archive lies inside a larger file (torch's distributed checkpoint packs many in one): its first byte and length. */
export interface ArchiveWindow {
  start: number;
  length: number;
}

export class TorchArchive {
  private readonly fd: number;
  private readonly records = new Map<string, ZipRecord>();
  /** The archive's folder name: every record is under it (`model_optim_rng/` for model_optim_rng.pt). */
  readonly prefix: string;
  /** The archive's first byte in the file; the zip's own offsets count from it. */
  private readonly start: number;
  private readonly size: number;
  private readonly windowed: boolean;

  private constructor(
    readonly file: string,
    window?: ArchiveWindow,
  ) {
    try {
      this.fd = openSync(file, 'r');
    } catch (error) {
      throw new CheckpointError(`cannot open ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
    try {
      const fileSize = fstatSync(this.fd).size;
      this.windowed = window !== undefined;
      this.start = window?.start ?? 0;
      this.size = window?.length ?? fileSize;
      if (this.start + this.size > fileSize)
        throw new CheckpointError(
          `${file} is ${fileSize} bytes and ends before the archive at bytes ${this.start} to ${this.start + this.size}; is it cut short?`,
        );
      this.readDirectory();
      const pickles = [...this.records.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
      if (pickles.length !== 1) throw this.fail(`holds ${pickles.length} ARCHIVE/data.pkl records, where torch.save writes one`);
      this.prefix = pickles[0]!.slice(0, -'data.pkl'.length);
      const order = this.records.get(`${this.prefix}byteorder`);
      if (order && this.bytes(order).toString('latin1') !== 'little')
        throw this.fail('holds big-endian storages; webtron reads those torch.save writes on little-endian machines');
    } catch (error) {
      closeSync(this.fd);
      throw error;
    }
  }

  /** Open a torch.save archive, the whole file or the `window` of it: its zip directory is read now, its pickle by `load`. */
  static open(file: string, window?: ArchiveWindow): TorchArchive {
    return new TorchArchive(file, window);
  }

  private fail(message: string): CheckpointError {
    const where = this.windowed ? ` (the archive at byte ${this.start})` : '';
    return new CheckpointError(`${this.file}${where} ${message}`);
  }

  /** `length` bytes at `position` of the archive (counted from its start in the file). */
  private readAt(position: number, length: number): Buffer {
    if (position + length > this.size)
      throw this.fail(`ends at byte ${this.size}, inside a record that should run to ${position + length}`);
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, length - done, this.start + position + done);
      if (n === 0) throw this.fail(`ends at byte ${position + done}, inside a record that should run to ${position + length}`);
      done += n;
    }
    return buf;
  }

  /** The central directory (zip64 where the archive needs it): every record's name and where its bytes start. */
  private readDirectory(): void {
    const size = this.size;
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = this.readAt(size - tailLength, tailLength);
    let end = -1;
    for (let i = tailLength - 22; i >= 0 && end < 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) end = i;
    if (end < 0) throw this.fail('is not a zip archive (no end of central directory); is it a file torch.save wrote?');
    let count = uint(tail, end + 10, 2);
    let dirSize = uint(tail, end + 12, 4);
    let dirStart = uint(tail, end + 16, 4);
    if (count === 0xffff || dirSize === 0xffffffff || dirStart === 0xffffffff) {
      const locator = end - 20;
      if (locator < 0 || tail.readUInt32LE(locator) !== 0x07064b50) throw this.fail('has a zip64 directory without its locator');
      const record = this.readAt(uint(tail, locator + 8, 8), 56);
      if (record.readUInt32LE(0) !== 0x06064b50) throw this.fail('has no zip64 end of central directory where its locator points');
      count = uint(record, 32, 8);
      dirSize = uint(record, 40, 8);
      dirStart = uint(record, 48, 8);
    }
    const dir = this.readAt(dirStart, dirSize);
    let at = 0;
    for (let n = 0; n < count; n++) {
      if (dir.readUInt32LE(at) !== 0x02014b50) throw this.fail(`has a damaged central directory (entry ${n})`);
      const method = uint(dir, at + 10, 2);
      let stored = uint(dir, at + 20, 4);
      let length = uint(dir, at + 24, 4);
      const nameLength = uint(dir, at + 28, 2);
      const extraLength = uint(dir, at + 30, 2);
      const commentLength = uint(dir, at + 32, 2);
      let local = uint(dir, at + 42, 4);
      const name = dir.toString('utf8', at + 46, at + 46 + nameLength);
      // Zip64's extra field holds, in this order, whichever of the three did not fit in 32 bits.
      for (let e = at + 46 + nameLength; e + 4 <= at + 46 + nameLength + extraLength; e += 4 + uint(dir, e + 2, 2)) {
        if (uint(dir, e, 2) !== 0x0001) continue;
        let f = e + 4;
        const wide = () => {
          f += 8;
          return uint(dir, f - 8, 8);
        };
        if (length === 0xffffffff) length = wide();
        if (stored === 0xffffffff) stored = wide();
        if (local === 0xffffffff) local = wide();
      }
      if (method !== 0 || stored !== length)
        throw this.fail(`record ${name} is compressed (method ${method}); torch.save stores its records, so this is not its archive`);
      const header = this.readAt(local, 30);
      if (header.readUInt32LE(0) !== 0x04034b50) throw this.fail(`has no local header for ${name} where the directory says`);
      this.records.set(name, { dataStart: local + 30 + uint(header, 26, 2) + uint(header, 28, 2), size: length });
      at += 46 + nameLength + extraLength + commentLength;
    }
  }

  private bytes(record: ZipRecord, from = 0, length = record.size - from): Buffer {
    return this.readAt(record.dataStart + from, length);
  }

  /** The pickled object, tensors as TensorRefs; Python's dicts as Maps (see unpickle). */
  load(): unknown {
    try {
      return unpickle(this.bytes(this.records.get(`${this.prefix}data.pkl`)!), {
        globals: TORCH_GLOBALS,
        persistent: (pid) => storageOf(pid, this.file),
      });
    } catch (error) {
      if (error instanceof CheckpointError) throw error;
      throw this.fail(`has a pickle webtron cannot read (${(error as Error).message})`);
    }
  }

  /** A tensor's values as fp32, in row-major order (`name` for errors). Contiguous tensors only. */
  read(tensor: TensorRef, name: string): Float32Array {
    const dtype = tensor.dtype as TensorDtype;
    if (!(dtype in BYTES)) throw this.fail(`holds ${name} as ${tensor.dtype}; webtron reads fp32, fp16, bf16 and fp64 tensors`);
    const count = tensor.shape.reduce((a, b) => a * b, 1);
    let expected = 1;
    for (let i = tensor.shape.length - 1; i >= 0; i--) {
      if (tensor.shape[i]! > 1 && tensor.stride[i] !== expected)
        throw this.fail(`holds ${name} strided (${tensor.stride.join(', ')} for shape ${tensor.shape.join(' × ')}); save it contiguous`);
      expected *= tensor.shape[i]!;
    }
    const record = this.records.get(`${this.prefix}data/${tensor.key}`);
    const width = BYTES[dtype];
    if (!record || (tensor.offset + count) * width > record.size)
      throw this.fail(`has no storage ${tensor.key} holding ${name}'s ${count} values at offset ${tensor.offset}`);
    const raw = this.bytes(record, tensor.offset * width, count * width);
    if (dtype === 'float32') return new Float32Array(raw.buffer, raw.byteOffset, count);
    if (dtype === 'float64') return Float32Array.from(new Float64Array(raw.buffer, raw.byteOffset, count));
    return wordsToFloat32(new Uint16Array(raw.buffer, raw.byteOffset, count), dtype);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** torch's persistent id of a storage: ('storage', StorageClass, key, location, numel). */
function storageOf(pid: unknown, file: string): { dtype: string; key: string } {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || typeof pid[2] !== 'string')
    throw new CheckpointError(`${file} has a persistent id that is no torch storage (${JSON.stringify(pid)?.slice(0, 80)})`);
  const cls = (pid[1] as PickleGlobal | undefined)?.qualifiedName ?? '';
  const dtype = DTYPE_OF_STORAGE.get(cls.replace(/^torch\./, '')) ?? cls;
  return { dtype, key: pid[2] };
}

/** torch's tensor rebuilders, and OrderedDict as a Map. */
const TORCH_GLOBALS = (() => {
  const tensor = (storage: { dtype: string; key: string }, offset: number, shape: number[], stride: number[]): TensorRef => ({
    $tensor: true,
    dtype: storage.dtype,
    key: storage.key,
    offset,
    shape: [...shape],
    stride: [...stride],
  });
  return {
    'torch._utils._rebuild_tensor_v2': tensor,
    'torch._utils._rebuild_tensor': tensor,
    'torch._utils._rebuild_parameter': (data: unknown) => data,
    'torch._tensor._rebuild_from_type_v2': (f: (...a: unknown[]) => unknown, _type: unknown, args: unknown[]) => f(...args),
    'collections.OrderedDict': () => new Map(),
  };
})();

/** A record of an archive being written: its name and bytes, made when its turn comes (one in memory at a time). */
export interface ArchiveRecord {
  name: string;
  bytes: () => Uint8Array | Promise<Uint8Array>;
}

/** Where a record's data starts: torch.save aligns each to 64 bytes (so that torch.load can map it). */
const ALIGN = 64;
const ZIP64_EXTRA = 0x0001;
/** The extra field id torch.save pads with. */
const PADDING_EXTRA = 0x4246;

/**
 * Write `records` as torch.save's zip archive at `file`: stored, CRC-32 checked, each record's data
 * at a multiple of 64 bytes, zip64 fields where a size or offset passes 4 GiB (everywhere with
 * `zip64`, for tests). Under a temporary name, fsynced, then renamed.
 */
export async function writeTorchArchive(
  file: string,
  records: Iterable<ArchiveRecord>,
  options: { zip64?: boolean; onRecord?: (name: string, bytes: number) => void } = {},
): Promise<number> {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let open = true;
  let at = 0;
  const put = (bytes: Uint8Array) => {
    for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, bytes.byteLength - done);
    at += bytes.byteLength;
  };
  const central: Buffer[] = [];
  try {
    for (const record of records) {
      const data = await record.bytes();
      const name = Buffer.from(record.name);
      const wide = options.zip64 === true || data.byteLength >= 0xffffffff || at >= 0xffffffff;
      const zip64 = wide ? 20 : 0;
      const headerEnd = at + 30 + name.length + zip64 + 4;
      const padding = (ALIGN - (headerEnd % ALIGN)) % ALIGN;
      const crc = CRC32.buf(data) >>> 0;
      const local = Buffer.alloc(30 + name.length + zip64 + 4 + padding);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(wide ? 45 : 20, 4);
      local.writeUInt32LE(crc, 14);
      local.writeUInt32LE(wide ? 0xffffffff : data.byteLength, 18);
      local.writeUInt32LE(wide ? 0xffffffff : data.byteLength, 22);
      local.writeUInt16LE(name.length, 26);
      local.writeUInt16LE(zip64 + 4 + padding, 28);
      name.copy(local, 30);
      let e = 30 + name.length;
      if (wide) {
        local.writeUInt16LE(ZIP64_EXTRA, e);
        local.writeUInt16LE(16, e + 2);
        local.writeBigUInt64LE(BigInt(data.byteLength), e + 4);
        local.writeBigUInt64LE(BigInt(data.byteLength), e + 12);
        e += 20;
      }
      local.writeUInt16LE(PADDING_EXTRA, e);
      local.writeUInt16LE(padding, e + 2);
      const offset = at;
      put(local);
      put(data);
      options.onRecord?.(record.name, data.byteLength);
      const entryExtra = wide ? 28 : 0;
      const entry = Buffer.alloc(46 + name.length + entryExtra);
      entry.writeUInt32LE(0x02014b50, 0);
      entry.writeUInt16LE(wide ? 45 : 20, 4);
      entry.writeUInt16LE(wide ? 45 : 20, 6);
      entry.writeUInt32LE(crc, 16);
      entry.writeUInt32LE(wide ? 0xffffffff : data.byteLength, 20);
      entry.writeUInt32LE(wide ? 0xffffffff : data.byteLength, 24);
      entry.writeUInt16LE(name.length, 28);
      entry.writeUInt16LE(entryExtra, 30);
      entry.writeUInt32LE(wide ? 0xffffffff : offset, 42);
      name.copy(entry, 46);
      if (wide) {
        const x = 46 + name.length;
        entry.writeUInt16LE(ZIP64_EXTRA, x);
        entry.writeUInt16LE(24, x + 2);
        entry.writeBigUInt64LE(BigInt(data.byteLength), x + 4);
        entry.writeBigUInt64LE(BigInt(data.byteLength), x + 12);
        entry.writeBigUInt64LE(BigInt(offset), x + 20);
      }
      central.push(entry);
    }
    const dirStart = at;
    const directory = Buffer.concat(central);
    put(directory);
    const wide = options.zip64 === true || dirStart + directory.length >= 0xffffffff || central.length >= 0xffff;
    if (wide) {
      const end64 = Buffer.alloc(56);
      end64.writeUInt32LE(0x06064b50, 0);
      end64.writeBigUInt64LE(44n, 4);
      end64.writeUInt16LE(45, 12);
      end64.writeUInt16LE(45, 14);
      end64.writeBigUInt64LE(BigInt(central.length), 24);
      end64.writeBigUInt64LE(BigInt(central.length), 32);
      end64.writeBigUInt64LE(BigInt(directory.length), 40);
      end64.writeBigUInt64LE(BigInt(dirStart), 48);
      const locator = Buffer.alloc(20);
      locator.writeUInt32LE(0x07064b50, 0);
      locator.writeBigUInt64LE(BigInt(at), 8);
      locator.writeUInt32LE(1, 16);
      put(end64);
      put(locator);
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(wide ? 0xffff : central.length, 8);
    end.writeUInt16LE(wide ? 0xffff : central.length, 10);
    end.writeUInt32LE(wide ? 0xffffffff : directory.length, 12);
    end.writeUInt32LE(wide ? 0xffffffff : dirStart, 16);
    put(end);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, file);
  } catch (error) {
    if (open) closeSync(fd);
    rmSync(tmp, { force: true });
    throw error;
  }
  fsyncDir(dirname(file));
  return at;
}
