/**
 * A training run's GPU bytes per rank at its peak, pure, and what to change when they exceed a
 * budget (`webtron train --max-device-memory`): the model state of this rank (exact, from the
 * layout), the buckets a sharded strategy holds whole at once (a bound), one micro-batch's
 * activations (exact, from webtron's graph) and the grad sync's readback staging, as `webtron
 * memory` counts them. Not counted: the kernels' uniform buffers, the texture matmul's scratch (a
 * few MiB), the split reductions' partial sums (28 MiB for GPT-2 small at micro-batch 8) and a deep
 * product's packed copy of A (at most PACKED_A_MAX_BYTES, 128 MiB). When
 * the run does not fit, the alternatives are tried from the least change on, and the first that
 * fits is named with its flags.
 */
import type { ShardingStrategy } from '../ddp/ddp.js';
import { BYTES, computeLayout, type ModelLayout, type ParamSpec } from '../ddp/layout.js';
import { syncStagingBytes } from '../ddp/sync-plan.js';
import { formatBytes } from '../gpu/memory.js';
import { type GptShape, passSections } from '../nn/gpt-spec.js';
import type { StateDtypes } from '../optimizer/optimizer-base.js';
import { gptActivationBytes, type ActivationOptions } from './activations.js';
import { modelStateBytes } from './model-state.js';

/** One way to run a model: what the memory depends on. */
export interface RunShape {
  /** The params with the run's dtypes. */
  specs: ParamSpec[];
  gpt: GptShape;
  dataParallelSize: number;
  distributedOptimizer: boolean;
  stateDtypes: StateDtypes;
  /** Megatron-FSDP's strategy ('optim' without it, or without the distributed optimizer). */
  strategy: ShardingStrategy;
  /** Micro-batches per step: with more than one, a sharded-grads bucket stays whole until the last. */
  gradAccumulation: number;
  /** --ddp-bucket-size when given; else the default of the strategy (`bucketSizeFor`). */
  bucketSize?: number;
  gradReduceInBf16: boolean;
  activations: ActivationOptions;
}

export interface RunBytes {
  modelState: number;
  /** Buckets whole while in use (sharded strategies): see `transientBucketBytes`. */
  buckets: number;
  activations: number;
  staging: number;
  total: number;
}

/** Without the model's sections: at most this many buckets of params, and of grads, are whole at once. */
export const WHOLE_BUCKETS = 3;

/**
 * The bytes of the buckets a sharded strategy holds whole at once, as an upper bound. With the
 * sections a pass needs whole at once (`passSections`: a recomputed span's as one): params, the buckets of the section that needs the most, the
 * next bucket gathered ahead and the head's (a tied embedding stays whole through each pass); grads,
 * the same plus one more bucket being reduced. Without sections, the largest `WHOLE_BUCKETS` of each.
 * With gradient accumulation every bucket's grads: their sum stays whole until the last micro-batch.
 */
export function transientBucketBytes(
  layout: ModelLayout,
  strategy: ShardingStrategy,
  gradAccumulation: number,
  sections?: readonly (readonly string[])[],
): number {
  if (strategy === 'optim') return 0;
  let total = 0;
  for (const b of layout.buffers) {
    const size = (k: number) => b.buckets[k]!.end - b.buckets[k]!.start;
    const all = b.buckets.reduce((sum, k) => sum + (k.end - k.start), 0);
    const largest = Math.max(...b.buckets.map((k) => k.end - k.start));
    let params: number;
    let grads: number;
    if (sections) {
      const bucketOf = new Map(b.params.map((p) => [p.name, p.bucket]));
      const bucketsOf = (names: readonly string[]) => new Set(names.flatMap((n) => (bucketOf.has(n) ? [bucketOf.get(n)!] : [])));
      const widest = Math.max(0, ...sections.map((names) => [...bucketsOf(names)].reduce((sum, k) => sum + size(k), 0)));
      const head = [...bucketsOf(sections.at(-1) ?? [])].reduce((sum, k) => sum + size(k), 0);
      params = Math.min(all, widest + largest + head);
      grads = Math.min(all, widest + 2 * largest + head);
    } else {
      const sizes = b.buckets.map((k) => k.end - k.start).sort((x, y) => y - x);
      params = grads = sizes.slice(0, WHOLE_BUCKETS).reduce((sum, n) => sum + n, 0);
    }
    total += (gradAccumulation > 1 ? all : grads) * BYTES[b.gradDtype];
    if (strategy === 'optim_grads_params') total += params * BYTES[b.paramDtype];
  }
  return total;
}

/** The bytes of one rank (the same on every rank: shards are equal, padding included). */
export function runBytes(run: RunShape): RunBytes {
  const bucketSize = bucketSizeFor(run.strategy, run.gpt, run.bucketSize);
  const layout = computeLayout(run.specs, {
    dataParallelSize: run.dataParallelSize,
    distributedOptimizer: run.distributedOptimizer,
    ...(bucketSize ? { bucketSize } : {}),
  });
  const modelState = modelStateBytes(layout, 0, run.stateDtypes, run.strategy).total;
  const buckets = transientBucketBytes(layout, run.strategy, run.gradAccumulation, passSections(run.gpt, run.activations.recompute));
  const activations = gptActivationBytes(run.gpt, run.activations);
  const sharded = run.strategy === 'optim_grads' || run.strategy === 'optim_grads_params';
  const staging = syncStagingBytes(layout, { gradReduceInBf16: run.gradReduceInBf16, early: !sharded });
  return { modelState, buckets, activations, staging, total: modelState + buckets + activations + staging };
}

/** A change to a run, as the flags that make it. */
interface Alternative {
  flags: string;
  applies: (run: RunShape) => boolean;
  change: (run: RunShape) => RunShape;
}

const BF16_MOMENTS: StateDtypes = { expAvg: 'bfloat16', expAvgSq: 'bfloat16' };
const BF16_MOMENTS_FLAGS = '--use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16';

/** 16-bit moments are Adam's (the precision-aware optimizer): not for SGD or Lion. */
const adam = (run: RunShape) => run.stateDtypes.moments === undefined;

const FSDP = (strategy: ShardingStrategy) => `--use-megatron-fsdp --data-parallel-sharding-strategy ${strategy}`;

/**
 * From the least change on: the distributed optimizer, 16-bit moments (and for bf16 params fp16
 * main params and bf16 grads), then sharded grads and params (Megatron-FSDP, with one layer per
 * bucket unless --ddp-bucket-size says otherwise), then recomputing each block's MLP in the
 * backward, then every block (which cost part of a forward's compute again, or all of it, rather
 * than a setting's memory).
 */
const ALTERNATIVES: Alternative[] = [
  {
    flags: '--use-distributed-optimizer',
    applies: (run) => !run.distributedOptimizer && run.dataParallelSize > 1,
    change: (run) => ({ ...run, distributedOptimizer: true }),
  },
  {
    flags: BF16_MOMENTS_FLAGS,
    applies: (run) => adam(run) && run.distributedOptimizer && (run.stateDtypes.expAvg ?? 'float32') === 'float32',
    change: (run) => ({ ...run, stateDtypes: { ...run.stateDtypes, ...BF16_MOMENTS } }),
  },
  {
    flags: `${BF16_MOMENTS_FLAGS} --main-params-dtype fp16 --main-grads-dtype bf16`,
    applies: (run) =>
      adam(run) && run.distributedOptimizer && run.specs.some((p) => p.dtype === 'bfloat16') && run.stateDtypes.mainGrads !== 'bfloat16',
    change: (run) => ({
      ...run,
      stateDtypes: { ...run.stateDtypes, ...BF16_MOMENTS, mainParams: 'float16', mainGrads: 'bfloat16' },
      specs: run.specs.map((p) => (p.dtype === 'bfloat16' ? { ...p, gradDtype: 'bfloat16' } : p)),
      // Each param's grad is accumulated in an fp32 scratch before it is added to the bf16 buffer.
      activations: { ...run.activations, halfGrads: true },
    }),
  },
  {
    flags: `--use-distributed-optimizer ${BF16_MOMENTS_FLAGS}`,
    applies: (run) => adam(run) && !run.distributedOptimizer,
    change: (run) => ({ ...run, distributedOptimizer: true, stateDtypes: { ...run.stateDtypes, ...BF16_MOMENTS } }),
  },
  ...(['optim_grads', 'optim_grads_params'] as const).map((strategy) => ({
    flags: `${FSDP(strategy)}`,
    applies: (run: RunShape) => run.distributedOptimizer && run.strategy === 'optim' && run.dataParallelSize > 1,
    change: (run: RunShape) => ({ ...run, strategy }),
  })),
  ...(['optim_grads', 'optim_grads_params'] as const).map((strategy) => ({
    flags: `--use-distributed-optimizer ${FSDP(strategy)}`,
    applies: (run: RunShape) => !run.distributedOptimizer && run.dataParallelSize > 1,
    change: (run: RunShape) => ({ ...run, distributedOptimizer: true, strategy }),
  })),
  ...(['fused', 'unfused'] as const).map((attention) => ({
    flags: `--recompute-granularity selective --recompute-modules ${attention === 'fused' ? 'core_attn mlp' : 'mlp'}`,
    applies: (run: RunShape) => !run.activations.recompute && (run.activations.attention ?? 'unfused') === attention,
    change: (run: RunShape) => ({ ...run, activations: { ...run.activations, recompute: { method: 'mlp' as const } } }),
  })),
  {
    flags: '--recompute-granularity full --recompute-method uniform',
    applies: (run) => run.activations.recompute?.method !== 'uniform',
    change: (run) => ({ ...run, activations: { ...run.activations, recompute: { method: 'uniform', numLayers: 1 } } }),
  },
];

/**
 * Elements per bucket: `given` (--ddp-bucket-size), or under a sharded strategy one transformer
 * layer's params of a GPT (Megatron-FSDP's unit: what is whole at once is about one layer);
 * undefined for the layout's default.
 */
export function bucketSizeFor(strategy: ShardingStrategy | 'no_shard', gpt: GptShape | null, given?: number): number | undefined {
  if (given) return given;
  if (!gpt || (strategy !== 'optim_grads' && strategy !== 'optim_grads_params')) return undefined;
  const c = gpt.hiddenSize;
  return 12 * c * c + 13 * c;
}

const parts = (b: RunBytes) =>
  `model state ${formatBytes(b.modelState)}${b.buckets ? `, whole buckets ${formatBytes(b.buckets)}` : ''}, activations ${formatBytes(b.activations)}, staging ${formatBytes(b.staging)}`;

/**
 * Null when `run` fits in `budget` bytes per rank; otherwise one line saying what it needs and what
 * would fit (or, when nothing here does, the smallest of the alternatives and the micro-batch size).
 */
export function budgetProblem(run: RunShape, budget: number, flag = '--max-device-memory'): string | null {
  const need = runBytes(run);
  if (need.total <= budget) return null;
  const head = `${flag} ${formatBytes(budget)}: this run needs ${formatBytes(need.total)} per rank at its peak (${parts(need)})`;
  const tried = ALTERNATIVES.filter((a) => a.applies(run)).map((a) => ({ flags: a.flags, bytes: runBytes(a.change(run)) }));
  const fits = tried.find((t) => t.bytes.total <= budget);
  if (fits) return `${head}; with ${fits.flags} it needs ${formatBytes(fits.bytes.total)} and fits`;
  const smallest = [{ flags: '', bytes: need }, ...tried].sort((a, b) => a.bytes.total - b.bytes.total)[0]!;
  const advice = smallest.flags ? `the smallest is with ${smallest.flags}: ${formatBytes(smallest.bytes.total)}; ` : '';
  return `${head}; ${advice}no optimizer setting fits: use more ranks, a smaller --micro-batch-size or a smaller model`;
}
