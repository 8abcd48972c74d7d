/**
 * The distributed optimizer's shard ranges, pure. Every bucket of size B splits into d shards of
 * s = B/d elements; rank r owns [r·s, (r+1)·s) of each bucket, whatever params lie there (a param
 * may straddle ranks). For each bucket and rank, named ranges as Megatron-LM names them:
 *
 * - `gbufWorld`:          the shard in buffer coordinates;
 * - `gbufWorldInBucket`:  the shard in bucket coordinates;
 * - `gbufLocal`:          [0, s), the shard's own coordinates (this rank's main params / moments);
 * and for each param overlapping the shard:
 * - `paramWorld` / `paramWorldInBucket`: the overlap in buffer / bucket coordinates;
 * - `paramLocal`:         the overlap in shard coordinates;
 * - `param`:              the overlap in the param's own flattened elements.
 */
import type { IndexRange, ModelLayout } from '../ddp/layout.js';

export interface ParamShardRange {
  readonly name: string;
  readonly paramWorld: IndexRange;
  readonly paramWorldInBucket: IndexRange;
  readonly paramLocal: IndexRange;
  readonly param: IndexRange;
}

export interface ShardRange {
  readonly buffer: number;
  readonly bucket: number;
  readonly rank: number;
  readonly gbufWorld: IndexRange;
  readonly gbufWorldInBucket: IndexRange;
  readonly gbufLocal: IndexRange;
  readonly params: readonly ParamShardRange[];
}

const range = (start: number, end: number): IndexRange => Object.freeze({ start, end });

/** Shard ranges of `rank`, for every bucket of every buffer (buffer-major, bucket order). */
export function shardRanges(layout: ModelLayout, rank: number): ShardRange[] {
  const d = layout.dataParallelSize;
  if (!layout.distributedOptimizer) throw new Error('shard ranges exist only with the distributed optimizer');
  if (!Number.isInteger(rank) || rank < 0 || rank >= d) throw new RangeError(`rank ${rank} is not in 0..${d - 1}`);
  const out: ShardRange[] = [];
  layout.buffers.forEach((buffer, b) => {
    for (const bucket of buffer.buckets) {
      const size = bucket.end - bucket.start;
      if (size % d !== 0) throw new Error(`bucket ${bucket.index} of buffer ${b} has ${size} elements, not a multiple of ${d}`);
      const s = size / d;
      const world = range(bucket.start + rank * s, bucket.start + (rank + 1) * s);
      const params: ParamShardRange[] = [];
      for (const p of buffer.params) {
        if (p.bucket !== bucket.index) continue;
        const start = Math.max(p.start, world.start);
        const end = Math.min(p.end, world.end);
        if (start >= end) continue;
        params.push(
          Object.freeze({
            name: p.name,
            paramWorld: range(start, end),
            paramWorldInBucket: range(start - bucket.start, end - bucket.start),
            paramLocal: range(start - world.start, end - world.start),
            param: range(start - p.start, end - p.start),
          }),
        );
      }
      out.push(
        Object.freeze({
          buffer: b,
          bucket: bucket.index,
          rank,
          gbufWorld: world,
          gbufWorldInBucket: range(rank * s, (rank + 1) * s),
          gbufLocal: range(0, s),
          params: Object.freeze(params),
        }),
      );
    }
  });
  return out;
}
