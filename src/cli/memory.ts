/** `webtron memory`: the memory-savings calculator on the command line. */
import { writeFileAtomic } from '../files.js';
import { GpuContext } from '../gpu/context.js';
import type { Command } from './command.js';
import { join } from 'node:path';
import { ProcessGroup } from '../collectives/process-group.js';
import { DistributedDataParallel } from '../ddp/ddp.js';
import { computeLayout } from '../ddp/layout.js';
import { formatBytes } from '../gpu/memory.js';
import { ADAMW_DEFAULTS } from '../optimizer/adam-math.js';
import { createOptimizer } from '../optimizer/optimizer.js';
import { FlagError, GPU_FLAGS, parseBytes, type FlagSpec, type FlagValues } from './flags.js';
import { OPTIMIZER_FLAGS, optimizerOf, PRECISION_AWARE_FLAGS, stateDtypesOf } from './precision-flags.js';
import { SHARDING_STRATEGIES, type ShardingStrategy } from '../ddp/ddp.js';
import { narrowState, stateDtypesText, type StateDtypes } from '../optimizer/optimizer-base.js';
import { readCheckpointIndex } from '../checkpoint/checkpoint.js';
import {
  activationBytes,
  memoryRows,
  modelDtypes,
  paramSpecs,
  PRECISION_DTYPES,
  type MemoryRow,
  type ModelSource,
  type Precision,
} from '../memory/calculator.js';
import { Gpt } from '../nn/gpt.js';
import { type Normalization, type PositionEmbeddingType, type Recompute, recomputeText } from '../nn/gpt-spec.js';
import { RECOMPUTE_FLAG_SPECS, recomputeFlags } from './recompute-flags.js';
import { ffnHiddenSizeOf } from './train-flags.js';
import { Graph } from '../nn/graph.js';
import { LocalParams } from '../nn/params.js';
import { modelStateBytes } from '../memory/model-state.js';

export const MEMORY_FLAGS: Record<string, FlagSpec> = {
  'num-layers': { kind: 'int', help: 'GPT layers' },
  'hidden-size': { kind: 'int', help: 'GPT hidden size' },
  'num-attention-heads': { kind: 'int', help: 'GPT attention heads' },
  'seq-length': { kind: 'int', help: 'GPT sequence length' },
  'vocab-size': { kind: 'int', help: 'GPT vocabulary size' },
  'ffn-hidden-size': { kind: 'int', help: "GPT MLP's hidden width (default 4 × --hidden-size)" },
  'untied-head': { kind: 'boolean', help: 'the output head does not share the token embedding' },
  'position-embedding-type': { kind: 'string', help: 'GPT positions: learned_absolute (default), rope or none' },
  'rotary-percent': { kind: 'number', help: "with rope: the fraction of each head's channels rotated (default 1)" },
  normalization: { kind: 'string', help: 'GPT norms: LayerNorm (default) or RMSNorm' },
  swiglu: { kind: 'boolean', help: "a gated MLP (default --ffn-hidden-size then Megatron's int(8h/3 / 64) · 64)" },
  'disable-bias-linear': { kind: 'boolean', help: 'no biases on the linear layers' },
  'group-query-attention': { kind: 'boolean', help: 'grouped-query attention with --num-query-groups key and value heads' },
  'num-query-groups': { kind: 'int', default: 1, help: 'with --group-query-attention: key and value heads' },
  'kv-channels': { kind: 'int', help: "each attention head's width (default --hidden-size / --num-attention-heads)" },
  'qk-layernorm': { kind: 'boolean', help: 'norms of q and k per head after the qkv projection' },
  params: { kind: 'string', help: 'a parameter count instead of a GPT shape (e.g. 124M, 7B)' },
  checkpoint: { kind: 'string', help: 'a webtron checkpoint: the --save folder or one of its iter_NNNNNNN folders (its params)' },
  onnx: { kind: 'string', help: 'an .onnx model (its initializers are the params)' },
  'data-parallel-size': { kind: 'list', default: ['1', '2', '4', '8'], help: 'one or more data-parallel sizes' },
  fp16: { kind: 'boolean', help: 'fp16 params and grads' },
  bf16: { kind: 'boolean', help: 'bf16 params, fp32 grads' },
  precision: { kind: 'string', help: 'fp32, bf16 or fp16 (instead of --fp16 / --bf16)' },
  'use-distributed-optimizer': { kind: 'boolean', help: 'only the distributed optimizer (default: both side by side)' },
  'use-megatron-fsdp': {
    kind: 'boolean',
    help: "also Megatron-FSDP's sharded strategies: optim_grads (ZeRO-2) and optim_grads_params (ZeRO-3) beside optim (ZeRO-1)",
  },
  'data-parallel-sharding-strategy': {
    kind: 'list',
    help: 'with --use-megatron-fsdp: which of optim, optim_grads, optim_grads_params to show (default all three)',
  },
  'grad-accumulation': { kind: 'int', default: 1, help: 'micro-batches per step (sharded grads stay whole until the last)' },
  ...OPTIMIZER_FLAGS,
  ...PRECISION_AWARE_FLAGS,
  'micro-batch-size': { kind: 'int', default: 1, help: 'micro-batch of the activations' },
  'no-dropout': { kind: 'boolean', help: 'activations of training without dropout (--hidden-dropout 0 --attention-dropout 0)' },
  attention: {
    kind: 'string',
    default: 'fused',
    help: 'the attention the activations are counted for: fused (flash-style, hardware GPUs) or unfused (T x T probabilities stored, CPU drivers)',
  },
  ...RECOMPUTE_FLAG_SPECS,
  'gpu-memory': { kind: 'string', help: 'bytes per GPU (e.g. 80GiB, 24GB, 17179869184): says what fits' },
  'ddp-bucket-size': { kind: 'int', help: 'elements per bucket (default max(40M, 1M·d))' },
  measure: { kind: 'boolean', help: "also build rank 0's buffers and optimizer on this GPU and print measured bytes" },
  plot: { kind: 'string', help: 'write an SVG of bytes per rank against d for both optimizers, stacked by category' },
  json: { kind: 'boolean', help: 'one JSON object per (d, precision, optimizer)' },
};

const SUFFIXES: Record<string, number> = { '': 1, K: 1e3, M: 1e6, B: 1e9, G: 1e9, T: 1e12 };
export function parseParamCount(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMBGT]?)$/i.exec(text.trim());
  const value = m ? Math.round(Number(m[1]) * SUFFIXES[m[2]!.toUpperCase()]!) : NaN;
  if (!Number.isSafeInteger(value) || value < 1)
    throw new FlagError(`--params: '${text}' is not a positive count; use e.g. 124000000, 124M or 7B`);
  return value;
}

/** What model the flags describe; one-line errors for anything missing or contradictory. */
export async function modelSource(v: FlagValues): Promise<ModelSource> {
  const gptKeys = ['num-layers', 'hidden-size', 'num-attention-heads', 'seq-length', 'vocab-size'];
  const given = [
    v.params !== undefined && '--params',
    v.checkpoint !== undefined && '--checkpoint',
    v.onnx !== undefined && '--onnx',
    gptKeys.some((k) => v[k] !== undefined) && 'a GPT shape',
  ].filter(Boolean);
  if (given.length !== 1) {
    throw new FlagError(
      given.length === 0
        ? 'no model: give a GPT shape (--num-layers --hidden-size --num-attention-heads --seq-length --vocab-size), --params N, --checkpoint DIR or --onnx FILE'
        : `give one model, not ${given.join(' and ')}`,
    );
  }
  if (v.params !== undefined) return { kind: 'params', count: parseParamCount(v.params as string) };
  if (v.onnx !== undefined) {
    const { readOnnxInitializers } = await import('../onnx/proto.js');
    return { kind: 'shapes', params: readOnnxInitializers(v.onnx as string), origin: v.onnx as string };
  }
  if (v.checkpoint !== undefined) {
    let checkpoint: ReturnType<typeof readCheckpointIndex>;
    try {
      checkpoint = readCheckpointIndex(v.checkpoint as string);
    } catch (error) {
      throw new FlagError(`--checkpoint: ${(error as Error).message}`);
    }
    const origin = join(checkpoint.dir, 'index.json');
    if (checkpoint.index.params.length === 0) throw new FlagError(`--checkpoint: ${origin} has no params`);
    return { kind: 'shapes', params: checkpoint.index.params.map((p) => ({ name: p.name, shape: p.shape })), origin };
  }
  const missing = gptKeys.filter((k) => v[k] === undefined);
  if (missing.length > 0) throw new FlagError(`a GPT shape needs ${missing.map((k) => `--${k}`).join(', ')} too`);
  return {
    kind: 'gpt',
    shape: {
      numLayers: v['num-layers'] as number,
      hiddenSize: v['hidden-size'] as number,
      numAttentionHeads: v['num-attention-heads'] as number,
      seqLength: v['seq-length'] as number,
      vocabSize: v['vocab-size'] as number,
      tiedHead: !v['untied-head'],
      ffnHiddenSize: ffnHiddenSizeOf(v, v['hidden-size'] as number),
      ...(v['position-embedding-type'] !== undefined
        ? { positionEmbeddingType: v['position-embedding-type'] as PositionEmbeddingType }
        : {}),
      ...(v['rotary-percent'] !== undefined ? { rotaryPercent: v['rotary-percent'] as number } : {}),
      ...(v.normalization !== undefined ? { normalization: v.normalization as Normalization } : {}),
      ...(v.swiglu ? { swiglu: true } : {}),
      ...(v['disable-bias-linear'] ? { addBiasLinear: false } : {}),
      ...(v['group-query-attention'] ? { numQueryGroups: v['num-query-groups'] as number } : {}),
      ...(v['kv-channels'] !== undefined ? { kvChannels: v['kv-channels'] as number } : {}),
      ...(v['qk-layernorm'] ? { qkLayernorm: true } : {}),
    },
  };
}

/** The distributed optimizer's strategies to show: optim alone, or with --use-megatron-fsdp those named (all by default). */
function strategiesOf(v: FlagValues): ShardingStrategy[] {
  const named = v['data-parallel-sharding-strategy'] as string[] | undefined;
  if (!v['use-megatron-fsdp']) {
    if (named) throw new FlagError('--data-parallel-sharding-strategy needs --use-megatron-fsdp (as in Megatron-LM)');
    return ['optim'];
  }
  for (const name of named ?? []) {
    if (!(SHARDING_STRATEGIES as readonly string[]).includes(name))
      throw new FlagError(`--data-parallel-sharding-strategy: '${name}' is not one of ${SHARDING_STRATEGIES.join(', ')}`);
  }
  return named ? (named as ShardingStrategy[]) : [...SHARDING_STRATEGIES];
}

/** The model the flags describe and its rows (the model is read once: it may be a file). */
export async function rowsFor(v: FlagValues): Promise<{ source: ModelSource; rows: MemoryRow[]; recompute: Recompute | null }> {
  if ([v.fp16, v.bf16, v.precision !== undefined].filter(Boolean).length > 1) {
    throw new FlagError('--fp16, --bf16 and --precision exclude each other; give one (or none for fp32)');
  }
  if (v.precision !== undefined && !((v.precision as string) in PRECISION_DTYPES)) {
    throw new FlagError(`--precision: unknown dtype '${v.precision as string}'; use fp32, bf16 or fp16`);
  }
  const precision: Precision = v.fp16 ? 'fp16' : v.bf16 ? 'bf16' : ((v.precision as Precision | undefined) ?? 'fp32');
  const dataParallelSizes = (v['data-parallel-size'] as string[]).map((x) => {
    const d = Number(x);
    if (!Number.isInteger(d) || d < 1) throw new FlagError(`--data-parallel-size: '${x}' is not a positive integer`);
    return d;
  });
  const micro = v['micro-batch-size'] as number;
  if (micro < 1) throw new FlagError(`--micro-batch-size must be a positive integer, got ${micro}`);
  const attention = (v.attention as string | undefined) ?? 'fused';
  if (attention !== 'fused' && attention !== 'unfused') throw new FlagError(`--attention: '${attention}' is neither fused nor unfused`);
  // The precision-aware optimizer is the distributed one's: its dtypes apply to the distributed rows.
  const stateDtypes = stateDtypesOf(v, true, precision, (p) => `--${p} or --precision ${p}`);
  const { optimizer } = optimizerOf(v);
  const strategies = strategiesOf(v);
  const gradAccumulation = (v['grad-accumulation'] as number | undefined) ?? 1;
  if (!(gradAccumulation >= 1)) throw new FlagError(`--grad-accumulation must be at least 1, got ${gradAccumulation}`);
  const source = await modelSource(v);
  const recompute = recomputeOf(v, source, attention);
  const rows = memoryRows(source, {
    recompute,
    stateDtypes,
    optimizer,
    strategies,
    gradAccumulation,
    attention,
    dataParallelSizes,
    precisions: [precision],
    distributed: v['use-distributed-optimizer'] ? [true] : [false, true],
    microBatchSize: micro,
    dropout: !v['no-dropout'],
    ...(v['ddp-bucket-size'] !== undefined ? { bucketSize: v['ddp-bucket-size'] as number } : {}),
    ...(v['gpu-memory'] !== undefined ? { gpuMemory: parseBytes(v['gpu-memory'] as string, 'gpu-memory') } : {}),
  });
  return { source, rows, recompute };
}

/** What recomputation runs again (full's spans, or each block's MLP), for a GPT (whose blocks they are); the flags are refused for other sources. */
function recomputeOf(v: FlagValues, source: ModelSource, attention: 'fused' | 'unfused'): Recompute | null {
  if (source.kind === 'gpt') return recomputeFlags(v, source.shape.numLayers, attention).recompute;
  const given = ['recompute-granularity', 'recompute-activations', 'recompute-method', 'recompute-modules'].find(
    (name) => v[name] !== undefined && v[name] !== false,
  );
  if (given) throw new FlagError(`--${given} changes a GPT's activations: give the GPT's shape (--num-layers --hidden-size …)`);
  return null;
}

/**
 * Build rank 0's param/grad buffers and optimizer state for this configuration on the GPU and read
 * the runtime's accounting: model-state categories measured beside the prediction.
 */
export async function measure(
  ctx: GpuContext,
  source: ModelSource,
  r: MemoryRow,
): Promise<{ measured: Record<string, number>; predicted: Record<string, number> }> {
  const stateDtypes = rowState(r);
  const layout = computeLayout(paramSpecs(source, r.precision, stateDtypes), {
    dataParallelSize: r.data_parallel_size,
    distributedOptimizer: r.distributed,
    bucketSize: r.bucket_size,
  });
  const before = ctx.memoryReport().live;
  // A group of d ranks seen from rank 0; nothing is exchanged while buffers are allocated.
  const group = new ProcessGroup(0, r.data_parallel_size, null);
  const strategy = r.strategy === 'no_shard' ? 'optim' : r.strategy;
  const ddp = new DistributedDataParallel(ctx, group, layout, { shardingStrategy: strategy });
  // SGD keeps no moment only at momentum 0.
  const sgdMomentum = r.optimizer === 'sgd' && r.moments.length === 0 ? 0 : undefined;
  const optimizer = createOptimizer(ctx, group, ddp, {
    hyper: ADAMW_DEFAULTS,
    stateDtypes,
    optimizer: r.optimizer,
    ...(sgdMomentum === undefined ? {} : { sgdMomentum }),
  });
  await ctx.sync();
  const after = ctx.memoryReport().live;
  optimizer.destroy();
  ddp.destroy();
  const categories = ['params', 'grads', 'main-params', 'optimizer-state'] as const;
  const predicted = modelStateBytes(layout, 0, stateDtypes, strategy).byCategory;
  return {
    measured: Object.fromEntries(categories.map((c) => [c, after[c] - before[c]])),
    predicted: Object.fromEntries(categories.map((c) => [c, predicted[c]])),
  };
}

/**
 * One real forward and backward of the GPT of `source` with micro-batch `micro` on this GPU: the
 * allocator's activation bytes beside the prediction (null for sources that are not a GPT).
 */
export async function measureActivations(
  ctx: GpuContext,
  source: ModelSource,
  micro: number,
  precision: Precision,
  dropout: boolean,
  state: StateDtypes = {},
  recompute: Recompute | null = null,
): Promise<{ measured: number; predicted: number } | null> {
  // Measured with the context's attention kernel, predicted for the same.
  if (source.kind !== 'gpt') return null;
  const [dtype, gradDtype] = modelDtypes(precision, state);
  const p = dropout ? 0.1 : 0;
  const config = { ...source.shape, hiddenDropout: p, attentionDropout: p, recompute };
  const params = new LocalParams(ctx, Gpt.specs(config, dtype, gradDtype));
  params.set(Gpt.init(config, 1));
  const before = ctx.memoryReport().live.activations;
  const g = new Graph(ctx, { samples: { first: 0, count: micro } });
  const n = micro * config.seqLength;
  const ids = Uint32Array.from({ length: n }, (_, i) => (i * 7919) % config.vocabSize);
  const { loss } = new Gpt(config, params.tensors).forward(g, g.input(ids, [micro, config.seqLength], 'ids'), g.input(ids, [n], 'targets'));
  g.backward(loss!);
  await g.read(loss!);
  const measured = ctx.memoryReport().live.activations - before;
  g.release();
  params.destroy();
  return { measured, predicted: activationBytes(source, micro, gradDtype, dropout, ctx.attentionKernel, recompute) };
}

/** The optimizer state of a row: its dtypes and moments. */
function rowState(r: MemoryRow): StateDtypes {
  return {
    expAvg: r.exp_avg_dtype,
    expAvgSq: r.exp_avg_sq_dtype,
    mainParams: r.main_params_dtype,
    mainGrads: r.main_grads_dtype,
    ...(r.optimizer === 'adam' ? {} : { moments: r.moments }),
  };
}

const human = (n: number) => formatBytes(n);

/**
 * 'non-distributed', 'distributed', 'optim_grads_params', with ', bf16 exp_avg, bf16 exp_avg_sq' for
 * the precision-aware optimizer, and ', sgd' or ', lion' for those optimizers.
 */
function optimizerName(r: MemoryRow): string {
  const which = r.optimizer === 'adam' ? '' : `, ${r.optimizer}`;
  if (!r.distributed) return `non-distributed${which}`;
  const state = rowState(r);
  const name = r.strategy === 'optim' ? 'distributed' : r.strategy;
  return (narrowState(state) ? `${name}, ${stateDtypesText(state)}` : name) + which;
}

export function renderTable(rows: MemoryRow[]): string {
  const header = [
    'd',
    'optimizer',
    'B/param',
    'params',
    'grads',
    'main params',
    'optimizer state',
    'padding',
    'whole buckets',
    'activations',
    'staging',
    'total/rank',
    'saving',
    'fits',
    'largest that fits',
  ];
  const cells = rows.map((r) => [
    String(r.data_parallel_size),
    optimizerName(r),
    Number.isInteger(r.bytes_per_param) ? String(r.bytes_per_param) : r.bytes_per_param.toFixed(2),
    human(r.by_category.params),
    human(r.by_category.grads),
    human(r.by_category.main_params),
    human(r.by_category.optimizer_state),
    human(r.by_category.padding),
    human(r.by_category.buckets),
    human(r.by_category.activations),
    human(r.by_category.staging),
    human(r.total_bytes_per_rank),
    r.distributed ? `${human(r.saving_bytes)} (${r.saving_percent.toFixed(1)}%)` : '',
    r.fits === null ? '' : r.fits ? 'yes' : 'no',
    r.largest_fitting === null
      ? ''
      : r.largest_fitting.num_layers !== undefined
        ? `${r.largest_fitting.num_layers} layers (${(r.largest_fitting.params / 1e6).toFixed(0)}M)`
        : `${(r.largest_fitting.params / 1e6).toFixed(0)}M params`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (values: string[]) => `| ${values.map((v, i) => v.padStart(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => `${'-'.repeat(w + 1)}:`).join('|')}|`, ...cells.map(line)].join('\n');
}

const SHORT_STRATEGY: Record<MemoryRow['strategy'], string> = {
  no_shard: 'plain',
  optim: 'Z1',
  optim_grads: 'Z2',
  optim_grads_params: 'Z3',
};

const SEGMENTS: { key: keyof MemoryRow['by_category']; name: string; color: string }[] = [
  { key: 'params', name: 'params', color: '#1f77b4' },
  { key: 'grads', name: 'grads', color: '#ff7f0e' },
  { key: 'main_params', name: 'main params', color: '#2ca02c' },
  { key: 'optimizer_state', name: 'optimizer state', color: '#d62728' },
  { key: 'padding', name: 'padding', color: '#9467bd' },
  { key: 'buckets', name: 'whole buckets (sharded strategies)', color: '#17becf' },
  { key: 'activations', name: 'activations', color: '#8c8c8c' },
  { key: 'staging', name: 'staging', color: '#bcbd22' },
];

/** Bytes per rank, one bar per (d, optimizer), stacked by category; written atomically. */
export async function writePlot(path: string, rows: MemoryRow[]): Promise<void> {
  if (!path.endsWith('.svg')) throw new FlagError(`--plot: '${path}' must name an .svg file`);
  const { stackedBarSvg } = await import('../plot/svg.js');
  const first = rows[0]!;
  const svg = stackedBarSvg(
    rows.map((r) => ({
      label: `d=${r.data_parallel_size}\n${SHORT_STRATEGY[r.strategy]}`,
      values: SEGMENTS.map((s) => r.by_category[s.key]),
    })),
    SEGMENTS,
    {
      title: `${(first.params / 1e6).toFixed(0)}M params, ${first.precision}: GPU bytes per rank`,
      xLabel:
        'data-parallel size, strategy (plain = non-distributed, Z1 = distributed optimizer, Z2 = optim_grads, Z3 = optim_grads_params)',
      yLabel: 'bytes per rank',
      yFormat: (y) => formatBytes(Math.round(y)),
      yBinary: true,
    },
  );
  writeFileAtomic(path, svg);
}

export const memoryCommand: Command = {
  summary: "GPU memory per rank with and without the distributed optimizer (Megatron's table, exact model state)",
  flags: { ...GPU_FLAGS, ...MEMORY_FLAGS },
  async run(values) {
    const { source, rows, recompute } = await rowsFor(values);
    // Per grad dtype of the rows: bf16 main grads (the distributed rows') add an fp32 scratch per param.
    const activations = new Map<MemoryRow['main_grads_dtype'], { measured: number; predicted: number }>();
    if (values.measure) {
      // The graph runs the attention the activations were counted for.
      const ctx = await GpuContext.create({
        backend: values.backend as string | undefined,
        adapter: values.adapter as string | undefined,
        attentionKernel: values.attention as 'fused' | 'unfused',
      });
      for (const [i, r] of rows.entries()) {
        process.stderr.write(`  … measuring ${i + 1}/${rows.length}: d=${r.data_parallel_size}, ${optimizerName(r)}, ${r.precision}\n`);
        const m = await measure(ctx, source, r);
        Object.assign(r, {
          measured: m.measured,
          predicted: m.predicted,
          measured_equals_predicted: JSON.stringify(m.measured) === JSON.stringify(m.predicted),
        });
      }
      for (const mainGrads of new Set(rows.map((r) => r.main_grads_dtype))) {
        const micro = values['micro-batch-size'] as number;
        process.stderr.write(`  … measuring activations: one forward and backward of micro-batch ${micro}\n`);
        const m = await measureActivations(ctx, source, micro, rows[0]!.precision, !values['no-dropout'], { mainGrads }, recompute);
        if (m) activations.set(mainGrads, m);
      }
      for (const r of rows) {
        const m = activations.get(r.main_grads_dtype);
        if (m) Object.assign(r, { measured_activations: m.measured });
      }
    }
    if (values.plot) await writePlot(values.plot as string, rows);
    if (values.json) {
      for (const r of rows) console.log(JSON.stringify(r));
      return;
    }
    const first = rows[0]!;
    console.log(
      `${first.params.toLocaleString('en-US')} params, ${first.precision}, GPU bytes per rank (model state and activations of micro-batch ${values['micro-batch-size'] as number} exact${recompute ? `; ${recomputeText(recompute)}` : ''}):\n`,
    );
    console.log(renderTable(rows));
    if (values.measure) {
      console.log("\nmeasured on this GPU (rank 0's shard) vs predicted, model state:");
      for (const r of rows as (MemoryRow & { measured: Record<string, number>; measured_equals_predicted: boolean })[]) {
        console.log(
          `  d=${r.data_parallel_size} ${optimizerName(r).padEnd(15)} ${r.measured_equals_predicted ? 'equal to the byte' : 'DIFFERENT'}: ${JSON.stringify(r.measured)}`,
        );
      }
      for (const [mainGrads, m] of activations) {
        const grads = activations.size > 1 ? ` with ${mainGrads === 'bfloat16' ? 'bf16' : 'fp32'} main grads` : '';
        console.log(
          `\nactivations of one forward and backward${grads}, micro-batch ${values['micro-batch-size'] as number}, measured on this GPU: ${m.measured.toLocaleString('en-US')} B, predicted ${m.predicted.toLocaleString('en-US')} B (${m.measured === m.predicted ? 'equal to the byte' : 'DIFFERENT'})`,
        );
      }
    }
  },
};
