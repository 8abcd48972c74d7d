/**
 * Megatron's setup_model_and_optimizer for one rank: the GPT's config from the flags and the
 * tokenizer, its params in DDP's contiguous buffers, the optimizer with Megatron's param groups and
 * loss scaler, the params initialized from the seed (or an ONNX model), and, with --load, the
 * checkpoint's params, optimizer state and counters.
 */
import { tellLauncher } from './lifeline.js';
import { loadCheckpoint } from '../checkpoint/checkpoint.js';
import { megatronCheckpointPath, megatronWeights, openMegatronCheckpoint } from '../checkpoint/megatron.js';
import type { Distributed } from '../collectives/init.js';
import type { Tokenizer } from '../data/tokenizer.js';
import { paddedVocabSize } from '../data/tokenizer.js';
import { DistributedDataParallel } from '../ddp/ddp.js';
import { computeLayout, type ModelLayout, type ParamSpec } from '../ddp/layout.js';
import { formatBytes } from '../gpu/memory.js';
import type { GpuContext } from '../gpu/context.js';
import { modelDtypes } from '../memory/calculator.js';
import { bucketSizeFor, budgetProblem } from '../memory/budget.js';
import { ConfigError } from '../errors.js';
import { Gpt, type GptConfig } from '../nn/gpt.js';
import { embeddingOrOutput } from '../nn/gpt-spec.js';
import { paramTensors } from '../nn/params.js';
import { isFolder, openFolderWeights } from '../hf/weights.js';
import { megatronWeightDecay } from '../optimizer/optimizer-base.js';
import { createOptimizer, type Optimizer } from '../optimizer/optimizer.js';
import type { TrainConfig } from './config.js';
import {
  decoupledSchedule,
  type LrSchedule,
  lrScheduleOf,
  schedulesFromState,
  type WeightDecaySchedule,
  weightDecayScheduleOf,
} from './schedule.js';
import type { Counters, TrainerState } from './state.js';
import type { RerunCheckpoint, RerunStateMachine } from './rerun.js';

/** One rank's model, optimizer and the facts every part of the loop needs. */
export interface TrainRun {
  cfg: TrainConfig;
  ctx: GpuContext;
  group: Distributed['group'];
  rank: number;
  /** The data-parallel size. */
  d: number;
  model: GptConfig;
  /** What the params were initialized from, in words (--init-from); null: the seed. */
  initializedFrom: string | null;
  layout: ModelLayout;
  ddp: DistributedDataParallel;
  optimizer: Optimizer;
  gpt: Gpt;
  /** The params' names in the model's order. */
  order: string[];
  schedule: LrSchedule;
  /** The embedding's and the output layer's rate (--decoupled-lr); null: they follow `schedule`. */
  decoupledSchedule: LrSchedule | null;
  weightDecaySchedule: WeightDecaySchedule;
}

/** The GPT the flags and the tokenizer describe. */
export function gptConfig(cfg: TrainConfig, tokenizer: Tokenizer): GptConfig {
  if (cfg.vocabSize !== null && cfg.vocabSize < tokenizer.vocabSize)
    throw new ConfigError(
      `initFrom: the model's vocab_size ${cfg.vocabSize} is smaller than its tokenizer's ${tokenizer.vocabSize} tokens; give a folder whose config.json and tokenizer belong together`,
      'initFrom',
    );
  return {
    numLayers: cfg.numLayers,
    hiddenSize: cfg.hiddenSize,
    numAttentionHeads: cfg.numAttentionHeads,
    seqLength: cfg.seqLength,
    maxPositionEmbeddings: cfg.maxPositionEmbeddings,
    // Left out at 4h, so that a checkpoint's model reads as before.
    ...(cfg.ffnHiddenSize !== 4 * cfg.hiddenSize ? { ffnHiddenSize: cfg.ffnHiddenSize } : {}),
    // Likewise GPT-2's block: LayerNorm, GELU, linear biases.
    ...(cfg.normalization !== 'LayerNorm' ? { normalization: cfg.normalization } : {}),
    ...(cfg.normEpsilon !== 1e-5 ? { normEpsilon: cfg.normEpsilon } : {}),
    ...(cfg.swiglu ? { swiglu: true } : {}),
    ...(cfg.squaredRelu ? { squaredRelu: true } : {}),
    ...(cfg.disableBiasLinear ? { addBiasLinear: false, ...(cfg.addQkvBias ? { addQkvBias: true } : {}) } : {}),
    ...(cfg.numQueryGroups !== cfg.numAttentionHeads ? { numQueryGroups: cfg.numQueryGroups } : {}),
    // Likewise heads of hidden / heads: --kv-channels only where it says otherwise.
    ...(cfg.kvChannels !== null && cfg.kvChannels * cfg.numAttentionHeads !== cfg.hiddenSize ? { kvChannels: cfg.kvChannels } : {}),
    ...(cfg.qkLayernorm ? { qkLayernorm: true } : {}),
    ...(cfg.applyLayernorm1p ? { applyLayernorm1p: true } : {}),
    // Likewise with learned positions; rope's settings only with rope.
    ...(cfg.positionEmbeddingType !== 'learned_absolute' ? { positionEmbeddingType: cfg.positionEmbeddingType } : {}),
    ...(cfg.positionEmbeddingType === 'rope'
      ? {
          rotaryBase: cfg.rotaryBase,
          rotaryPercent: cfg.rotaryPercent,
          rotaryInterleaved: cfg.rotaryInterleaved,
          ...(cfg.ropeScalingFactor !== null ? { ropeScalingFactor: cfg.ropeScalingFactor } : {}),
        }
      : {}),
    vocabSize: cfg.vocabSize ?? paddedVocabSize(tokenizer.vocabSize, cfg.makeVocabSizeDivisibleBy),
    tiedHead: !cfg.untieEmbeddingsAndOutputWeights,
    hiddenDropout: cfg.hiddenDropout,
    attentionDropout: cfg.attentionDropout,
  };
}

export async function setupModelAndOptimizer(
  ctx: GpuContext,
  dist: Distributed,
  cfg: TrainConfig,
  tokenizer: Tokenizer,
): Promise<TrainRun> {
  const { rank, worldSize: d } = dist.info;
  const group = dist.group;
  const model = gptConfig(cfg, tokenizer);
  const [dtype, gradDtype] = modelDtypes(cfg.precision, cfg.stateDtypes);
  const specs = Gpt.specs(model, dtype, gradDtype);
  // Each param's grad is accumulated in fp32 (the grad buffer, or the scratch of 16-bit grads),
  // and kernels bind a tensor whole.
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const wide = specs.find((s) => s.shape.reduce((a, b) => a * b, 1) * 4 > limit);
  if (wide) {
    const bytes = wide.shape.reduce((a, b) => a * b, 1) * 4;
    throw Object.assign(
      new ConfigError(
        `param '${wide.name}' [${wide.shape.join(', ')}] needs ${formatBytes(bytes)} for its fp32 grad, over this GPU's storage binding limit of ${formatBytes(limit)}; train a smaller model (vocabulary or hidden size), or on a GPU whose limit is larger`,
        'hiddenSize',
      ),
      { sameOnEveryRank: true },
    );
  }
  if (cfg.maxDeviceMemory !== null) {
    const problem = budgetProblem(
      {
        specs,
        gpt: model,
        dataParallelSize: d,
        distributedOptimizer: cfg.useDistributedOptimizer,
        stateDtypes: cfg.stateDtypes,
        ...(cfg.ddpBucketSize ? { bucketSize: cfg.ddpBucketSize } : {}),
        strategy: cfg.shardingStrategy ?? 'optim',
        // The most micro-batches of any iteration (a batch-size schedule's largest batch).
        gradAccumulation: Math.max(cfg.gradAccumulation, ...(cfg.batchSizeSchedule ?? []).map(([, b]) => b / (cfg.microBatchSize * d))),
        gradReduceInBf16: cfg.gradReduceInBf16,
        activations: {
          microBatchSize: cfg.microBatchSize,
          hiddenDropout: cfg.hiddenDropout > 0,
          attentionDropout: cfg.attentionDropout > 0,
          halfGrads: gradDtype !== 'float32',
          attention: ctx.attentionKernel,
          recompute: cfg.recompute,
        },
      },
      cfg.maxDeviceMemory,
    );
    if (problem) throw Object.assign(new ConfigError(problem, 'maxDeviceMemory'), { sameOnEveryRank: true });
  }
  const bucketSize = bucketSizeFor(cfg.shardingStrategy ?? 'no_shard', model, cfg.ddpBucketSize ?? undefined);
  const layout = computeLayout(specs, {
    dataParallelSize: d,
    distributedOptimizer: cfg.useDistributedOptimizer,
    ...(bucketSize ? { bucketSize } : {}),
  });
  const ddp = new DistributedDataParallel(ctx, group, layout, {
    overlapGradReduce: cfg.overlapGradReduce,
    gradReduceInBf16: cfg.gradReduceInBf16,
    ...(cfg.shardingStrategy ? { shardingStrategy: cfg.shardingStrategy } : {}),
  });
  const optimizer = createOptimizer(ctx, group, ddp, {
    hyper: {
      lr: cfg.lr,
      beta1: cfg.adamBeta1,
      beta2: cfg.adamBeta2,
      eps: cfg.adamEps,
      weightDecay: cfg.weightDecay,
      decoupled: true,
      maximize: false,
    },
    optimizer: cfg.optimizer,
    sgdMomentum: cfg.sgdMomentum,
    lionBetas: cfg.lionBetas,
    clipGrad: cfg.clipGrad,
    overlapParamGather: cfg.overlapParamGather,
    stateDtypes: cfg.stateDtypes,
    weightDecayFor: megatronWeightDecay,
    ...(cfg.decoupledLr !== null ? { decoupledLrFor: embeddingOrOutput } : {}),
    countZeros: cfg.logNumZerosInGrad,
    lossScaler: {
      initialScale: cfg.lossScale ?? cfg.initialLossScale,
      constant: cfg.lossScale !== null,
      minScale: cfg.minLossScale,
      growthInterval: cfg.lossScaleWindow,
      hysteresis: cfg.hysteresis,
    },
  });
  const initializedFrom = await initialParams(cfg, model, specs, ddp);
  return {
    cfg,
    ctx,
    initializedFrom,
    group,
    rank,
    d,
    model,
    layout,
    ddp,
    optimizer,
    gpt: new Gpt({ ...model, recompute: cfg.recompute }, paramTensors(ddp.buffers)),
    order: specs.map((s) => s.name),
    ...schedules(cfg),
  };
}

/** The lr schedules (--lr's and --decoupled-lr's) and the weight-decay schedule: the flags', or with the checkpoint's values (--use-checkpoint-opt_param-scheduler). */
function schedules(cfg: TrainConfig): {
  schedule: LrSchedule;
  decoupledSchedule: LrSchedule | null;
  weightDecaySchedule: WeightDecaySchedule;
} {
  if (!cfg.checkpointScheduler) {
    const schedule = lrScheduleOf(cfg);
    const decoupled = decoupledSchedule(schedule, { lr: cfg.decoupledLr, minLr: cfg.decoupledMinLr });
    return { schedule, decoupledSchedule: decoupled, weightDecaySchedule: weightDecayScheduleOf(cfg) };
  }
  const { lr, decoupled, weightDecay } = schedulesFromState(cfg, cfg.globalBatchSize, cfg.checkpointScheduler);
  return { schedule: lr, decoupledSchedule: decoupled, weightDecaySchedule: weightDecay };
}

/** A checkpoint saved for a rerun of its next iteration (--rerun-mode validate_results): run it once more, here. */
function takeUpRerun(run: TrainRun, pending: RerunCheckpoint, rerun: RerunStateMachine, say: (line: string) => void): void {
  if (run.cfg.rerunMode === 'disabled') {
    say(`the checkpoint waits for a rerun of iteration ${pending.iteration}; --rerun-mode disabled trains on without it`);
    return;
  }
  if (pending.ranks.length !== run.d) {
    const e = new ConfigError(
      `the checkpoint waits for a rerun of iteration ${pending.iteration} by ${pending.ranks.length} ranks, and this run has ${run.d}: resume it with ${pending.ranks.length} ranks, or give --rerun-mode disabled to train on`,
    );
    e.sameOnEveryRank = true;
    throw e;
  }
  rerun.load(pending, run.rank);
  say(`the checkpoint waits for a rerun of iteration ${pending.iteration} on another node or device (--rerun-mode): running it again`);
}

/**
 * Every rank initializes the same params: from the seed, an ONNX model, or a Megatron checkpoint or a
 * Hugging Face folder read one param at a time. What they came from, in words (null: the seed).
 */
async function initialParams(cfg: TrainConfig, model: GptConfig, specs: ParamSpec[], ddp: DistributedDataParallel): Promise<string | null> {
  if (!cfg.initFrom) {
    ddp.importParams(Gpt.init(model, cfg.seed, cfg.initMethodStd));
    return null;
  }
  const megatron = megatronCheckpointPath(cfg.initFrom);
  if (megatron === null && !isFolder(cfg.initFrom)) {
    // The ONNX reader (protobufjs and onnx-proto) loads only for an ONNX --init-from.
    ddp.importParams((await import('../onnx/proto.js')).readOnnxParams(cfg.initFrom, specs));
    return `the ONNX model ${cfg.initFrom}`;
  }
  const checkpoint = megatron === null ? null : openMegatronCheckpoint(megatron);
  const weights = checkpoint ? megatronWeights(checkpoint, model) : openFolderWeights(cfg.initFrom, model);
  try {
    ddp.importParams((name) => weights.read(name));
  } finally {
    weights.close();
  }
  if (!checkpoint) return `the Hugging Face folder ${cfg.initFrom}`;
  const what = checkpoint.format === 'torch_dist' ? 'torch_dist checkpoint ' : '';
  return `Megatron-LM's ${what}${checkpoint.path}${checkpoint.iteration === null ? '' : ` (iteration ${checkpoint.iteration})`}`;
}

/**
 * With --load: the checkpoint's params and optimizer state into the run, and its counters (zeros
 * without). --finetune takes the params only, Megatron's way: iteration, consumed samples and
 * counters from zero, a fresh optimizer. --no-load-optim takes the params and the counters.
 */
export async function loadTrainerCheckpoint(run: TrainRun, say: (line: string) => void, rerun?: RerunStateMachine): Promise<Counters> {
  const counters: Counters = { iteration: 0, consumedSamples: 0, schedulerSamples: 0, skippedIterations: 0, nanIterations: 0 };
  const { load, finetune, noLoadOptim, skipTrain } = run.cfg;
  if (!load) return counters;
  // --skip-train takes no step: the params are all it needs (a --no-save-optim checkpoint has no more).
  const optimizerState = !finetune && !noLoadOptim && !skipTrain;
  const loaded = await loadCheckpoint(load, { group: run.group, ddp: run.ddp, optimizer: run.optimizer }, { optimizerState });
  const extra = loaded.index.extra as unknown as TrainerState;
  if (finetune) {
    say(`loaded ${loaded.dir}'s params (iteration ${extra.iteration}) to finetune: iteration 0, a fresh optimizer`);
  } else {
    counters.iteration = extra.iteration;
    counters.consumedSamples = extra.consumedSamples;
    // The scheduler restarts with the optimizer (--no-load-optim); a checkpoint without the count had a constant global batch.
    if (optimizerState) counters.schedulerSamples = extra.schedulerSamples ?? run.optimizer.stepCount * extra.args.globalBatchSize;
    counters.skippedIterations = extra.skippedIterations;
    counters.nanIterations = extra.nanIterations;
    const fresh = noLoadOptim ? '; the optimizer starts afresh (--no-load-optim)' : '';
    say(`loaded ${loaded.dir}: iteration ${counters.iteration}, ${counters.consumedSamples} samples consumed${fresh}`);
    if (extra.rerun && rerun) takeUpRerun(run, extra.rerun, rerun, say);
  }
  tellLauncher({ checkpoint: loaded.dir, iteration: counters.iteration });
  return counters;
}
