/**
 * Reading torch's distributed checkpoints (`torch.distributed.checkpoint`, FileSystemWriter's
 * folders) without Python, as Megatron-LM's torch_dist format writes them:
 *
 *   .metadata        the pickled Metadata: for each key of the state dict, a tensor's dtype, global
 *                    shape and chunks (each at its offsets, of its sizes), or bytes; and where each
 *                    chunk or bytes item lies (`storage_data`: file, offset, length)
 *   __R_N.distcp     the items one after another: each tensor chunk a whole torch.save archive,
 *                    each bytes item as it was given (Megatron's objects are torch.save'd lists)
 *
 * The classes of the pickle (torch.distributed.checkpoint.metadata's dataclasses, torch.Size,
 * torch's dtypes) are read as records by `unpickle`, by their class names, so that PyTorch 2's
 * `torch.distributed.checkpoint` and 1.13's `torch.distributed._shard.checkpoint` read alike. A
 * tensor's values are read box by box (`read`): only the chunks that meet the box are read, one at a
 * time, so host memory holds the box and one chunk.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError } from './errors.js';
import { type PickleCall, unpickle } from './pickle.js';
import { type ArchiveWindow, isTensorRef, TorchArchive } from './torch-archive.js';

/** Where one item lies: a file of the folder and its bytes there. */
interface ItemAt extends ArchiveWindow {
  file: string;
}

interface Chunk {
  offsets: number[];
  sizes: number[];
  at: ItemAt;
}

/** A tensor of the checkpoint: its global shape and chunks (each chunk's archive says its dtype). */
export interface DcpTensor {
  shape: number[];
  chunks: Chunk[];
}

export const METADATA_FILE = '.metadata';

/** The class a pickled record is of, without its module (`Metadata` for torch.distributed.checkpoint.metadata.Metadata). */
const className = (v: unknown): string =>
  typeof v === 'object' && v !== null ? String((v as PickleCall).$call ?? '').replace(/^.*\./, '') : '';

/** A torch.Size (a tuple) or a list of ints, as numbers. */
function ints(v: unknown, what: string, fail: (m: string) => CheckpointError): number[] {
  if (!Array.isArray(v) || !v.every((n) => Number.isInteger(n)))
    throw fail(`has ${what} ${JSON.stringify(v)?.slice(0, 60)}, not a list of ints`);
  return v as number[];
}

export class DistributedCheckpoint {
  readonly tensors = new Map<string, DcpTensor>();
  /** The bytes items (Megatron's objects: its common state, Transformer Engine's `_extra_state`, RNG states). */
  readonly objects = new Map<string, ItemAt>();

  private constructor(readonly folder: string) {
    const file = join(folder, METADATA_FILE);
    const fail = (m: string) => new CheckpointError(`${file} ${m}`);
    let root: unknown;
    try {
      root = unpickle(readFileSync(file), { globals: { 'torch.Size': (t: number[]) => [...t] } });
    } catch (error) {
      throw fail(`is not a pickle webtron can read (${(error as Error).message}); is it torch.distributed.checkpoint's metadata?`);
    }
    if (className(root) !== 'Metadata') throw fail(`holds ${className(root) || typeof root}, not torch.distributed.checkpoint's Metadata`);
    const { state_dict_metadata: entries, storage_data: storage } = root as PickleCall;
    if (!(entries instanceof Map) || !(storage instanceof Map)) throw fail('has no state_dict_metadata or storage_data dict');
    // storage_data: MetadataIndex(fqn, offset) -> _StorageInfo(relative_path, offset, length).
    const where = new Map<string, ItemAt>();
    for (const [index, info] of storage as Map<PickleCall, PickleCall>) {
      const key = `${String(index.fqn)}@${index.offset === null || index.offset === undefined ? '' : ints(index.offset, 'an offset', fail).join(',')}`;
      const transforms = info.transform_descriptors;
      if (Array.isArray(transforms) && transforms.length > 0)
        throw fail(`stores ${String(index.fqn)} transformed (${transforms.join(', ')}); webtron reads items torch.save wrote as they are`);
      const start = Number(info.offset);
      const length = Number(info.length);
      if (typeof info.relative_path !== 'string' || !Number.isSafeInteger(start) || !Number.isSafeInteger(length))
        throw fail(`has a storage entry for ${String(index.fqn)} without a file, offset and length`);
      where.set(key, { file: join(folder, info.relative_path), start, length });
    }
    const find = (fqn: string, offsets: number[] | null): ItemAt => {
      const at = where.get(`${fqn}@${offsets?.join(',') ?? ''}`);
      if (!at) throw fail(`lists ${fqn}${offsets ? ` at [${offsets.join(', ')}]` : ''} but no file holding it`);
      return at;
    };
    for (const [fqn, entry] of entries as Map<string, PickleCall>) {
      if (className(entry) === 'BytesStorageMetadata') {
        this.objects.set(fqn, find(fqn, null));
        continue;
      }
      if (className(entry) !== 'TensorStorageMetadata') throw fail(`describes ${fqn} as ${className(entry) || typeof entry}`);
      const shape = ints(entry.size, `${fqn}'s size`, fail);
      const chunks = (Array.isArray(entry.chunks) ? (entry.chunks as PickleCall[]) : []).map((c) => {
        const offsets = ints(c.offsets, `${fqn}'s chunk offsets`, fail);
        return { offsets, sizes: ints(c.sizes, `${fqn}'s chunk sizes`, fail), at: find(fqn, offsets) };
      });
      this.tensors.set(fqn, { shape, chunks });
    }
  }

  /** The checkpoint in `folder` (its .metadata is read now), or null where there is no .metadata. */
  static open(folder: string): DistributedCheckpoint | null {
    return existsSync(join(folder, METADATA_FILE)) ? new DistributedCheckpoint(folder) : null;
  }

  /** A bytes item read as the torch.save archive it is (Megatron's objects), tensors as TensorRefs. */
  object(key: string): unknown {
    const at = this.objects.get(key);
    if (!at) throw new CheckpointError(`${join(this.folder, METADATA_FILE)} lists no ${key}`);
    const archive = this.openItem(at, key);
    try {
      return archive.load();
    } finally {
      archive.close();
    }
  }

  /**
   * The values of tensor `key` in the box from `start` of `size` (global coordinates), as fp32 in
   * row-major order: each chunk that meets the box is read and its part of the box copied. Every
   * element of the box must be in some chunk.
   */
  read(key: string, start: readonly number[], size: readonly number[]): Float32Array {
    const tensor = this.tensors.get(key);
    if (!tensor) throw new CheckpointError(`${join(this.folder, METADATA_FILE)} lists no tensor ${key}`);
    const out = new Float32Array(size.reduce((a, b) => a * b, 1));
    let filled = 0;
    for (const chunk of tensor.chunks) {
      const lo = start.map((s, d) => Math.max(s, chunk.offsets[d]!));
      const hi = start.map((s, d) => Math.min(s + size[d]!, chunk.offsets[d]! + chunk.sizes[d]!));
      if (lo.some((l, d) => l >= hi[d]!)) continue;
      const values = this.chunkValues(key, chunk);
      filled += copyBox(values, chunk.offsets, chunk.sizes, out, start, size, lo, hi);
    }
    if (filled !== out.length)
      throw new CheckpointError(
        `${join(this.folder, METADATA_FILE)}: the chunks of ${key} cover ${filled} of the ${out.length} values at [${start.join(', ')}] of [${size.join(', ')}]`,
      );
    return out;
  }

  /** The torch.save archive at `at`, one line naming what .metadata puts there where its file is missing. */
  private openItem(at: ItemAt, key: string): TorchArchive {
    if (!existsSync(at.file))
      throw new CheckpointError(
        `${at.file} is missing, where ${join(this.folder, METADATA_FILE)} puts ${key}; copy the whole checkpoint folder`,
      );
    return TorchArchive.open(at.file, at);
  }

  private chunkValues(key: string, chunk: Chunk): Float32Array {
    const archive = this.openItem(chunk.at, key);
    try {
      const ref = archive.load();
      const name = `${key} at [${chunk.offsets.join(', ')}]`;
      if (!isTensorRef(ref))
        throw new CheckpointError(`${chunk.at.file} holds no tensor at byte ${chunk.at.start}, where .metadata puts ${name}`);
      if (ref.shape.reduce((a, b) => a * b, 1) !== chunk.sizes.reduce((a, b) => a * b, 1))
        throw new CheckpointError(
          `${chunk.at.file} holds ${name} as [${ref.shape.join(', ')}], where .metadata says [${chunk.sizes.join(', ')}]`,
        );
      return archive.read(ref, name);
    } finally {
      archive.close();
    }
  }
}

/**
 * Copy the part [lo, hi) of a chunk (`values` at `offsets`, of `sizes`) into the box `out` (at
 * `start`, of `size`); all in global coordinates. The count of values copied.
 */
function copyBox(
  values: Float32Array,
  offsets: readonly number[],
  sizes: readonly number[],
  out: Float32Array,
  start: readonly number[],
  size: readonly number[],
  lo: readonly number[],
  hi: readonly number[],
): number {
  const dims = sizes.length;
  if (dims === 0) {
    out[0] = values[0]!;
    return 1;
  }
  const strides = (shape: readonly number[]) => {
    const s = new Array<number>(dims).fill(1);
    for (let d = dims - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
    return s;
  };
  const from = strides(sizes);
  const to = strides(size);
  const run = hi[dims - 1]! - lo[dims - 1]!;
  const index = lo.slice(0, dims - 1);
  let copied = 0;
  for (;;) {
    let src = lo[dims - 1]! - offsets[dims - 1]!;
    let dst = lo[dims - 1]! - start[dims - 1]!;
    for (let d = 0; d < dims - 1; d++) {
      src += (index[d]! - offsets[d]!) * from[d]!;
      dst += (index[d]! - start[d]!) * to[d]!;
    }
    out.set(values.subarray(src, src + run), dst);
    copied += run;
    let d = dims - 2;
    for (; d >= 0; d--) {
      index[d]!++;
      if (index[d]! < hi[d]!) break;
      index[d] = lo[d]!;
    }
    if (d < 0) return copied;
  }
}
