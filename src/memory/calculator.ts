/**
 * The memory calculator, pure: for a model (a GPT shape, a param count, or a list of param shapes),
 * each data-parallel size, precision and optimizer, the bytes one rank holds on the GPU by category,
 * the saving of the distributed optimizer, and under a budget the largest model that fits.
 *
 * Model state comes from the real layout (`computeLayout`) and `modelStateBytes`, so it is exact and
 * the padding is its own category. Activations of a GPT are counted from the buffers webtron's graph
 * allocates for one micro-batch's forward and backward (src/memory/activations.ts), so they are exact
 * too; staging is the readback staging a grad sync holds at once (src/ddp/sync-plan.ts).
 */
import { computeLayout, type GradDtype, type ParamDtype, type ParamSpec } from '../ddp/layout.js';
import { syncStagingBytes } from '../ddp/sync-plan.js';
import { gptParamCount, gptParams, type GptShape, passSections, type Recompute } from '../nn/gpt-spec.js';
import type { StateDtype } from '../optimizer/adam.js';
import type { StateDtypes } from '../optimizer/optimizer-base.js';
import { type MomentKind, momentKinds, type OptimizerName } from '../optimizer/momentum-math.js';
import { gptActivationBytes } from './activations.js';
import { bucketSizeFor, transientBucketBytes } from './budget.js';
import type { ShardingStrategy } from '../ddp/ddp.js';
import { modelStateBytes } from './model-state.js';

export type Precision = 'fp32' | 'bf16' | 'fp16';

export const PRECISION_DTYPES: Record<Precision, [ParamDtype, GradDtype]> = {
  fp32: ['float32', 'float32'],
  bf16: ['bfloat16', 'float32'],
  fp16: ['float16', 'float16'],
};

export type ModelSource =
  | { kind: 'gpt'; shape: GptShape }
  | { kind: 'params'; count: number }
  | { kind: 'shapes'; params: { name: string; shape: number[] }[]; origin: string };

export interface CalculatorOptions {
  dataParallelSizes: number[];
  precisions: Precision[];
  /** Which optimizers to show: [false, true] for both side by side. */
  distributed: boolean[];
  microBatchSize: number;
  /** Dropout during training (Megatron's default 0.1: on): its outputs are buffers of their own. */
  dropout?: boolean;
  /** The attention kernel the activations are counted for (default fused, as hardware GPUs run). */
  attention?: 'fused' | 'unfused';
  /** Full recomputation (--recompute-granularity full): the spans whose activations live one at a time. */
  recompute?: Recompute | null;
  bucketSize?: number;
  /** Bytes a rank may use; rows then say whether the model fits and what the largest that fits is. */
  gpuMemory?: number;
  /**
   * The moments the optimizer keeps (every row; default Adam's) and the distributed optimizer's
   * dtypes (the precision-aware optimizer; fp32 by default).
   */
  stateDtypes?: StateDtypes;
  /** The optimizer the rows are for (default adam): its name in the rows. */
  optimizer?: OptimizerName;
  /** The distributed optimizer's rows: one per Megatron-FSDP strategy (default ['optim'], ZeRO-1). */
  strategies?: ShardingStrategy[];
  /** Micro-batches per step (sharded grads stay whole until the last one): default 1. */
  gradAccumulation?: number;
}

export interface ByCategory {
  params: number;
  grads: number;
  main_params: number;
  optimizer_state: number;
  padding: number;
  /** Sharded strategies: the buckets whole at once while in use, at most (`transientBucketBytes`). */
  buckets: number;
  activations: number;
  staging: number;
}

export interface MemoryRow {
  data_parallel_size: number;
  precision: Precision;
  distributed: boolean;
  /** Megatron-FSDP's strategy: no_shard without the distributed optimizer, optim (ZeRO-1), optim_grads, optim_grads_params. */
  strategy: 'no_shard' | ShardingStrategy;
  /** Elements per bucket of the layout (sharded strategies: one transformer layer by default). */
  bucket_size: number;
  /** --optimizer, and the moments it keeps per element. */
  optimizer: OptimizerName;
  moments: MomentKind[];
  /** How Adam's moments are stored: 'float32' unless the precision-aware optimizer narrows them. */
  exp_avg_dtype: StateDtype;
  exp_avg_sq_dtype: StateDtype;
  /** The main params of 16-bit params (--main-params-dtype) and the grads Adam reads (--main-grads-dtype). */
  main_params_dtype: 'float32' | 'float16';
  main_grads_dtype: 'float32' | 'bfloat16';
  params: number;
  bytes_per_param: number;
  model_state_bytes_per_rank: number;
  by_category: ByCategory;
  total_bytes_per_rank: number;
  /** Against the non-distributed optimizer at the same d and precision. */
  saving_bytes: number;
  saving_percent: number;
  fits: boolean | null;
  /** Under --gpu-memory: the largest model of the same family that fits (GPT: more or fewer layers). */
  largest_fitting: { num_layers?: number; params: number } | null;
}

/**
 * The param and grad dtypes of `precision`, with bf16 grads for bf16 params where the
 * precision-aware optimizer keeps bf16 main grads (--main-grads-dtype bf16).
 */
export function modelDtypes(precision: Precision, state: StateDtypes = {}): [ParamDtype, GradDtype] {
  const [dtype, gradDtype] = PRECISION_DTYPES[precision];
  return dtype === 'bfloat16' && state.mainGrads === 'bfloat16' ? [dtype, 'bfloat16'] : [dtype, gradDtype];
}

/** The model's params with the dtypes of `precision` (and of the main grads `state` asks for). */
export function paramSpecs(source: ModelSource, precision: Precision, state: StateDtypes = {}): ParamSpec[] {
  const [dtype, gradDtype] = modelDtypes(precision, state);
  switch (source.kind) {
    case 'gpt':
      return gptParams(source.shape, dtype, gradDtype);
    case 'params':
      return [{ name: 'params', shape: [source.count], dtype, gradDtype }];
    case 'shapes':
      return source.params.map((p) => ({ name: p.name, shape: p.shape, dtype, gradDtype }));
  }
}

/**
 * Activation bytes of one micro-batch's forward and backward of a GPT, counted from webtron's
 * graph (src/memory/activations.ts: equal to the allocator's peak); 0 for other sources.
 */
export function activationBytes(
  source: ModelSource,
  microBatchSize: number,
  gradDtype: GradDtype = 'float32',
  dropout = true,
  attention: 'fused' | 'unfused' = 'fused',
  recompute: Recompute | null = null,
): number {
  if (source.kind !== 'gpt') return 0;
  return gptActivationBytes(source.shape, {
    microBatchSize,
    hiddenDropout: dropout,
    attentionDropout: dropout,
    halfGrads: gradDtype !== 'float32',
    attention,
    recompute,
  });
}

function row(
  source: ModelSource,
  d: number,
  precision: Precision,
  strategy: 'no_shard' | ShardingStrategy,
  o: CalculatorOptions,
): Omit<MemoryRow, 'saving_bytes' | 'saving_percent' | 'fits' | 'largest_fitting'> {
  const distributed = strategy !== 'no_shard';
  const sharded = strategy === 'optim_grads' || strategy === 'optim_grads_params';
  // Sharded strategies: one transformer layer per bucket unless given, as `webtron train` does.
  const bucketSize = bucketSizeFor(strategy, source.kind === 'gpt' ? source.shape : null, o.bucketSize);
  // The precision-aware optimizer is the distributed one's; the moments are every row's.
  const moments = o.stateDtypes?.moments;
  const state = distributed ? (o.stateDtypes ?? {}) : moments ? { moments } : {};
  const specs = paramSpecs(source, precision, state);
  const layout = computeLayout(specs, {
    dataParallelSize: d,
    distributedOptimizer: distributed,
    ...(bucketSize ? { bucketSize } : {}),
  });
  const m = modelStateBytes(layout, 0, state, distributed ? strategy : 'optim');
  const by_category: ByCategory = {
    params: m.byCategory.params - m.paddingByCategory.params,
    grads: m.byCategory.grads - m.paddingByCategory.grads,
    main_params: m.byCategory['main-params'] - m.paddingByCategory['main-params'],
    optimizer_state: m.byCategory['optimizer-state'] - m.paddingByCategory['optimizer-state'],
    padding: Object.values(m.paddingByCategory).reduce((s, x) => s + x, 0),
    buckets: distributed
      ? transientBucketBytes(
          layout,
          strategy,
          o.gradAccumulation ?? 1,
          source.kind === 'gpt' ? passSections(source.shape, o.recompute) : undefined,
        )
      : 0,
    activations: activationBytes(
      source,
      o.microBatchSize,
      specs[0]!.gradDtype,
      o.dropout ?? true,
      o.attention ?? 'fused',
      o.recompute ?? null,
    ),
    staging: syncStagingBytes(layout, { early: !sharded }),
  };
  return {
    data_parallel_size: d,
    precision,
    distributed,
    strategy,
    bucket_size: layout.bucketSize,
    optimizer: o.optimizer ?? 'adam',
    moments: [...(moments ?? momentKinds('adam'))],
    exp_avg_dtype: state.expAvg ?? 'float32',
    exp_avg_sq_dtype: state.expAvgSq ?? 'float32',
    main_params_dtype: state.mainParams ?? 'float32',
    main_grads_dtype: state.mainGrads ?? 'float32',
    params: m.paramCount,
    bytes_per_param: m.bytesPerParam,
    model_state_bytes_per_rank: m.total,
    by_category,
    total_bytes_per_rank: m.total + by_category.buckets + by_category.activations + by_category.staging,
  };
}

function largestFitting(
  source: ModelSource,
  d: number,
  precision: Precision,
  strategy: 'no_shard' | ShardingStrategy,
  o: CalculatorOptions,
): MemoryRow['largest_fitting'] {
  const budget = o.gpuMemory!;
  // The largest count (layers of a GPT, or params of one tensor) whose row fits: total bytes grow with it.
  const total = (n: number) =>
    row(
      source.kind === 'gpt' ? { kind: 'gpt', shape: { ...source.shape, numLayers: n } } : { kind: 'params', count: n },
      d,
      precision,
      strategy,
      o,
    ).total_bytes_per_rank;
  if (total(1) > budget) return null;
  let lo = 1;
  let hi = 2;
  const limit = source.kind === 'gpt' ? 1 << 16 : 2 ** 40;
  while (total(hi) <= budget && hi < limit) hi *= 2;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (total(mid) <= budget) lo = mid;
    else hi = mid;
  }
  return source.kind === 'gpt' ? { num_layers: lo, params: gptParamCount({ ...source.shape, numLayers: lo }) } : { params: lo };
}

export function memoryRows(source: ModelSource, o: CalculatorOptions): MemoryRow[] {
  const rows: MemoryRow[] = [];
  for (const precision of o.precisions) {
    for (const d of o.dataParallelSizes) {
      const plain = row(source, d, precision, 'no_shard', o);
      for (const distributed of o.distributed) {
        for (const strategy of distributed ? (o.strategies ?? ['optim']) : ['no_shard' as const]) {
          const r = distributed ? row(source, d, precision, strategy, o) : plain;
          const saving = plain.total_bytes_per_rank - r.total_bytes_per_rank;
          rows.push({
            ...r,
            saving_bytes: saving,
            saving_percent: (100 * saving) / plain.total_bytes_per_rank,
            fits: o.gpuMemory === undefined ? null : r.total_bytes_per_rank <= o.gpuMemory,
            largest_fitting: o.gpuMemory === undefined ? null : largestFitting(source, d, precision, strategy, o),
          });
        }
      }
    }
  }
  return rows;
}
