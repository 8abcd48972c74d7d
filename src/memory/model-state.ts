/**
 * Model-state bytes per rank from the layout, pure: Megatron's bytes per parameter times the param
 * count, and the layout's padding reported on its own. The GPU runtime's live bytes per category
 * must equal `byCategory` exactly (tests check it), and the memory calculator builds on this.
 *
 *   fp32 params, fp32 grads: params 4, grads 4, optimizer state 8 (main params are the params)
 *   bf16 params, fp32 grads: params 2, grads 4, main params 4, optimizer state 8
 *   fp16 params, fp16 grads: params 2, grads 2 + 4 (fp32 main grads), main params 4, optimizer state 8
 *   bf16 params, bf16 grads (--main-grads-dtype bf16, read by Adam as they are): params 2, grads 2,
 *     main params 4, optimizer state 8
 *
 * Megatron-FSDP's strategies keep only a shard of the grads (`optim_grads`: 4 + 12/d in fp32) or of
 * the grads and params (`optim_grads_params`: 16/d) between uses; the buckets whole while used
 * (gathered params, grads until their reduce-scatter) are transient and not counted here.
 *
 * The optimizer state is Adam's two moments (8 bytes a param in fp32); Lion keeps one (4), SGD its
 * momentum buffer (4, or none at momentum 0).
 *
 * Megatron's precision-aware optimizer stores the moments in 16 bits where asked (--exp-avg-dtype,
 * --exp-avg-sq-dtype): 2 bytes each instead of 4; and the main params of 16-bit params in fp16
 * (--main-params-dtype fp16): 2 bytes for bf16 params, none for fp16 params (their own).
 *
 * With the distributed optimizer the optimizer-side bytes (main params, main grads, moments) are for
 * one rank's shard only: 1/d of every (padded) bucket. How much of a shard is padding depends on the
 * rank (the last shard of a bucket holds its end padding), so padding is computed for a given rank.
 */
import { BYTES, type BufferLayout, type ModelLayout } from '../ddp/layout.js';
import type { MemoryCategory } from '../gpu/memory.js';
import type { StateDtypes } from '../optimizer/optimizer-base.js';
import type { ShardingStrategy } from '../ddp/ddp.js';
import { shardRanges } from '../optimizer/ranges.js';

export type ModelStateCategory = Extract<MemoryCategory, 'params' | 'grads' | 'main-params' | 'optimizer-state'>;

export interface ModelStateBytes {
  /** Bytes per category on each rank, padding included (what the GPU holds). */
  byCategory: Record<ModelStateCategory, number>;
  /** The part of `byCategory` that is padding, per category. */
  paddingByCategory: Record<ModelStateCategory, number>;
  /** Megatron's bytes per parameter for this precision and d (no padding). */
  bytesPerParam: number;
  /** Params in the model (no padding). */
  paramCount: number;
  /** Total bytes, padding included. */
  total: number;
}

/** Bytes per element of each category for one buffer's precision: [model side, optimizer side]. */
function perElement(
  b: BufferLayout,
  state: StateDtypes,
): { model: Record<ModelStateCategory, number>; optimizer: Record<ModelStateCategory, number> } {
  const dtypeOf = { exp_avg: state.expAvg, exp_avg_sq: state.expAvgSq, momentum_buffer: undefined };
  const moments = (state.moments ?? ['exp_avg', 'exp_avg_sq']).reduce((sum, kind) => sum + BYTES[dtypeOf[kind] ?? 'float32'], 0);
  const mainDtype = state.mainParams ?? 'float32';
  // fp32 params, and fp16 params with fp16 main params, are their own main params.
  const mainParams = b.paramDtype === 'float32' || b.paramDtype === mainDtype ? 0 : BYTES[mainDtype];
  return {
    model: { params: BYTES[b.paramDtype], grads: BYTES[b.gradDtype], 'main-params': 0, 'optimizer-state': 0 },
    optimizer: { params: 0, grads: b.gradDtype === 'float16' ? 4 : 0, 'main-params': mainParams, 'optimizer-state': moments },
  };
}

const CATEGORIES: ModelStateCategory[] = ['params', 'grads', 'main-params', 'optimizer-state'];
const zero = (): Record<ModelStateCategory, number> => ({ params: 0, grads: 0, 'main-params': 0, 'optimizer-state': 0 });

/** Model-state bytes on `rank` (default 0) for this layout, with the moments stored as `state` says (default fp32). */
export function modelStateBytes(
  layout: ModelLayout,
  rank = 0,
  state: StateDtypes = {},
  strategy: ShardingStrategy = 'optim',
): ModelStateBytes {
  const d = layout.distributedOptimizer ? layout.dataParallelSize : 1;
  // Megatron-FSDP: the model-side categories each rank keeps only its shard of (between uses).
  const sharded: Record<ModelStateCategory, boolean> = {
    params: strategy === 'optim_grads_params',
    grads: strategy !== 'optim',
    'main-params': false,
    'optimizer-state': false,
  };
  // Param elements in this rank's optimizer shards, per buffer (all of them without sharding).
  const ownedParams = layout.buffers.map((b) => b.paramNumel);
  if (layout.distributedOptimizer) {
    ownedParams.fill(0);
    for (const r of shardRanges(layout, rank)) for (const p of r.params) ownedParams[r.buffer]! += p.param.end - p.param.start;
  }
  const byCategory = zero();
  const paddingByCategory = zero();
  let perParamTotal = 0;
  layout.buffers.forEach((b, i) => {
    const { model, optimizer } = perElement(b, state);
    for (const c of CATEGORIES) {
      // 16-bit buffers are allocated in whole 4-byte words (a shard's elements are a multiple of 4).
      const modelBytes = sharded[c] ? (b.numel / d) * model[c] : Math.ceil((b.numel * model[c]) / 4) * 4;
      const modelParams = sharded[c] ? ownedParams[i]! : b.paramNumel;
      const optimizerBytes = (b.numel / d) * optimizer[c];
      byCategory[c] += modelBytes + optimizerBytes;
      paddingByCategory[c] += modelBytes - modelParams * model[c] + optimizerBytes - ownedParams[i]! * optimizer[c];
    }
    perParamTotal += b.paramNumel * CATEGORIES.reduce((s, c) => s + model[c] / (sharded[c] ? d : 1) + optimizer[c] / d, 0);
  });
  const total = CATEGORIES.reduce((s, c) => s + byCategory[c], 0);
  return {
    byCategory,
    paddingByCategory,
    bytesPerParam: layout.paramCount ? perParamTotal / layout.paramCount : 0,
    paramCount: layout.paramCount,
    total,
  };
}
