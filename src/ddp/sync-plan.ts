/**
 * How DDP's grad sync moves a bucket, pure (the memory calculator uses it too): the chunks it syncs
 * in, and the readback staging they hold at once.
 */
import { stagingSize } from '../gpu/transfers.js';
import { BYTES, type ModelLayout } from './layout.js';

/**
 * Readbacks queued ahead of the collective that consumes them hold staging buffers until it runs:
 * at most this many bytes at once (DDP's grad readbacks; the distributed optimizer's shard readbacks).
 */
export const EARLY_READBACK_BYTES = 256 << 20;

/** One chunk of a bucket's grad sync. */
export interface SyncChunk {
  /** Byte ranges of the grad buffer read back, in host order (one per rank with the distributed optimizer). */
  pieces: { offset: number; size: number }[];
  /** Elements [hostStart, hostStart + length) of the bucket's host staging hold the chunk. */
  hostStart: number;
  length: number;
  /** Where the result goes back in the grad buffer, in bytes: this rank's slice, or the whole chunk. */
  uploadOffset: number;
}

/**
 * Bytes of a bucket per grad-sync chunk (all ranks' slices together) at d ranks: 8 MiB, or 1 MiB a
 * rank from d = 8 on (up to 64 MiB, one staging chunk). Large enough that a collective's fixed
 * cost stays small and that the slice uploaded back goes through mapped staging (lavapipe's
 * writeBuffer of 32 MiB in pieces under 1 MiB took 3 or 90 ms, run to run; staged uploads a steady
 * 9), small enough that the first readback and the last upload, which nothing hides, are short. On
 * lavapipe at world 2, a 64 MiB bucket synced fastest in chunks of 8 and 16 MiB (54 ms), then 4 MiB
 * (59), 2 MiB (72) and one chunk (67), all in one run (`npm run bench -- collectives --gpu`).
 */
export function syncChunkBytes(d: number): number {
  return Math.max(8 << 20, Math.min(d, 64) << 20);
}

/** Chunk readbacks in flight ahead of the collective when the bucket's were not issued early. */
export const READS_AHEAD = 4;

/**
 * The chunks of a bucket's grad sync: with `shards` (the distributed optimizer's d), chunk k is the
 * k-th slice of each of the d shards, laid out together in the host staging; otherwise consecutive
 * ranges. Every chunk is a whole number of 4-byte words (shards start at multiples of 4 elements;
 * 16-bit buckets have even lengths).
 */
export function planSyncChunks(
  bucket: { start: number; end: number },
  elementBytes: number,
  shards: number | null,
  rank: number,
  chunkBytes = syncChunkBytes(shards ?? 1),
): SyncChunk[] {
  const numel = bucket.end - bucket.start;
  const d = shards ?? 1;
  const shard = numel / d;
  // Elements per slice: a multiple of 4, so that every slice starts on a word.
  const slice = Math.max(4, Math.floor(chunkBytes / (d * elementBytes) / 4) * 4);
  const chunks: SyncChunk[] = [];
  for (let at = 0; at < shard; at += slice) {
    const length = Math.min(slice, shard - at);
    const pieces = Array.from({ length: d }, (_, r) => ({
      offset: (bucket.start + r * shard + at) * elementBytes,
      size: length * elementBytes,
    }));
    chunks.push({
      pieces,
      hostStart: d * at,
      length: d * length,
      uploadOffset: shards === null ? pieces[0]!.offset : pieces[rank]!.offset,
    });
  }
  return chunks;
}

/**
 * Bytes of readback staging the grad sync of `layout` holds at once: the staging of every chunk of
 * the buckets whose readbacks queue early (in bucket order, while their bytes stay within
 * `EARLY_READBACK_BYTES`), or, when more, `READS_AHEAD` chunks of a bucket read later. A world of
 * one without bf16 on the wire reads nothing back. With `early` false (sharded strategies) every
 * bucket is read late; the param gathers of optim_grads_params read slices d times smaller.
 */
export function syncStagingBytes(
  layout: ModelLayout,
  options: { gradReduceInBf16?: boolean; syncChunkBytes?: number; early?: boolean } = {},
): number {
  const d = layout.dataParallelSize;
  if (d === 1 && !options.gradReduceInBf16) return 0;
  // Megatron-FSDP's sharded strategies read no bucket early (their point is to hold less): each
  // bucket reads `READS_AHEAD` chunks ahead of its collective, as a late bucket does here.
  const budget = options.early === false ? 0 : EARLY_READBACK_BYTES;
  let early = 0;
  let earlyStaging = 0;
  let later = 0;
  for (const buffer of layout.buffers) {
    const bytes = BYTES[buffer.gradDtype];
    for (const bucket of buffer.buckets) {
      const shards = layout.distributedOptimizer ? d : null;
      const chunks = planSyncChunks(bucket, bytes, shards, 0, options.syncChunkBytes ?? syncChunkBytes(shards ?? 1));
      const staging = chunks.map((c) => stagingSize(c.length * bytes));
      const size = (bucket.end - bucket.start) * bytes;
      if (early + size <= budget) {
        early += size;
        earlyStaging += staging.reduce((sum, x) => sum + x, 0);
      } else {
        later = Math.max(
          later,
          staging.slice(0, READS_AHEAD).reduce((sum, x) => sum + x, 0),
        );
      }
    }
  }
  return Math.max(earlyStaging, later);
}
