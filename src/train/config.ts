/** A resolved `webtron train` config: every flag checked, Megatron's rules applied (src/cli/train-flags.ts makes it). */
import type { OptimizerName } from '../optimizer/momentum-math.js';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { INDEX, TRACKER } from '../checkpoint/dir.js';
import { ConfigError } from '../errors.js';
import type { DataPathEntry } from '../data/blend.js';
import type { TokenizerType } from '../data/tokenizer.js';
import type { Normalization, PositionEmbeddingType, Recompute } from '../nn/gpt-spec.js';
import type { StateDtypes } from '../optimizer/optimizer-base.js';
import type { ShardingStrategy } from '../ddp/ddp.js';
import type { AttentionKernel } from '../gpu/context.js';
import type { ScheduleFlags, SchedulerState } from './schedule.js';
import type { RerunDiagnostic, RerunMode } from './rerun.js';

/** --attention-backend's choices (Megatron's), and the kernel each runs; auto: the adapter's. */
export const ATTENTION_BACKENDS = ['auto', 'flash', 'fused', 'unfused', 'local'] as const;
export type AttentionBackend = (typeof ATTENTION_BACKENDS)[number];
export const ATTENTION_KERNEL_OF: Record<AttentionBackend, AttentionKernel | undefined> = {
  auto: undefined,
  flash: 'fused',
  fused: 'fused',
  unfused: 'unfused',
  local: 'unfused',
};

/** The signals --exit-signal takes (Megatron's choices). */
export const EXIT_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGUSR1', 'SIGUSR2'] as const;
export type ExitSignal = (typeof EXIT_SIGNALS)[number];

export interface TrainConfig extends ScheduleFlags {
  numLayers: number;
  hiddenSize: number;
  numAttentionHeads: number;
  seqLength: number;
  maxPositionEmbeddings: number;
  /** --ffn-hidden-size: the MLP's hidden width (Megatron's default 4 × hidden size). */
  ffnHiddenSize: number;
  /** --normalization: LayerNorm or RMSNorm, and --norm-epsilon. */
  normalization: Normalization;
  normEpsilon: number;
  /** --swiglu: a gated MLP. */
  swiglu: boolean;
  /** --squared-relu: the MLP's activation max(x, 0)². */
  squaredRelu: boolean;
  /** --disable-bias-linear: no linear biases (but qkv's with --add-qkv-bias). */
  disableBiasLinear: boolean;
  addQkvBias: boolean;
  /** --group-query-attention, and the key and value heads it gives (--num-query-groups; the heads without it). */
  groupQueryAttention: boolean;
  numQueryGroups: number;
  /** --kv-channels: each head's width, or null for --hidden-size / --num-attention-heads. */
  kvChannels: number | null;
  /** --qk-layernorm: q's and k's heads normalized after the qkv projection. */
  qkLayernorm: boolean;
  /** --apply-layernorm-1p: zero-centered norm weights (gamma - 1 stored, the norms add the 1). */
  applyLayernorm1p: boolean;
  /** --position-embedding-type: a learned table, rope or none. */
  positionEmbeddingType: PositionEmbeddingType;
  /** --rotary-base, --rotary-percent, --rotary-interleaved: rope's frequencies, rotated fraction and pairing (unused without rope). */
  rotaryBase: number;
  rotaryPercent: number;
  rotaryInterleaved: boolean;
  /** --use-rope-scaling, and its --rope-scaling-factor (null without it). */
  useRopeScaling: boolean;
  ropeScalingFactor: number | null;
  makeVocabSizeDivisibleBy: number;
  /** The model's exact vocabulary (a Hugging Face folder's vocab_size with --init-from), else null: the tokenizer's, padded. */
  vocabSize: number | null;
  untieEmbeddingsAndOutputWeights: boolean;
  hiddenDropout: number;
  attentionDropout: number;
  /** --attention-backend, Megatron's choices: webtron's fused kernel (flash, fused), its unfused one (unfused, local), or the adapter's (auto). */
  attentionBackend: AttentionBackend;
  /** --recompute-granularity (or --recompute-activations: selective); null without. */
  recomputeGranularity: 'full' | 'selective' | null;
  /** The spans full recomputation runs again in the backward (--recompute-method, --recompute-num-layers); null otherwise. */
  recompute: Recompute | null;
  /** Megatron flags given that change nothing here (src/cli/megatron-flags.ts), named in the run's first lines. */
  flagsWithoutEffect: { flag: string; why: string }[];
  clipGrad: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  /** --optimizer: Adam (AdamW), SGD or Lion. */
  optimizer: OptimizerName;
  /** --sgd-momentum (SGD only). */
  sgdMomentum: number;
  /** --lion-beta1, --lion-beta2 (Lion only). */
  lionBetas: [number, number];
  microBatchSize: number;
  /** The global batch: --global-batch-size, or the last of a batch-size schedule. */
  globalBatchSize: number;
  /**
   * A batch size that grows with the samples consumed (--step-batch-size-schedule or
   * --rampup-batch-size): [from this many consumed samples, the global batch], the first from 0;
   * null: `globalBatchSize` throughout.
   */
  batchSizeSchedule: [samples: number, batch: number][] | null;
  useDistributedOptimizer: boolean;
  /** Megatron-FSDP's strategy with the distributed optimizer ('optim' without --use-megatron-fsdp); null without it. */
  shardingStrategy: ShardingStrategy | null;
  /** How the optimizer stores Adam's moments (Megatron's precision-aware optimizer; fp32 by default). */
  stateDtypes: StateDtypes;
  checkForNanInLossAndGrad: boolean;
  /** --rerun-mode: what a rejected result does (src/train/rerun.ts). */
  rerunMode: RerunMode;
  /** --check-for-spiky-loss, --check-for-large-grads: non-fatal checks of the loss and the grad norm. */
  checkForSpikyLoss: boolean;
  checkForLargeGrads: boolean;
  /** --error-injection-rate and --error-injection-type: rejections made on purpose, to try the reruns. */
  errorInjectionRate: number;
  errorInjectionType: RerunDiagnostic;
  /** --result-rejected-tracker-filename: a line per rejected result; null: none. */
  resultRejectedTrackerFilename: string | null;
  /** --iterations-to-skip: iterations (from 1) whose samples are consumed without training, ascending. */
  iterationsToSkip: number[];
  /** --skip-train: no iteration; the validation and test splits evaluated with the loaded params. */
  skipTrain: boolean;
  /** --exit-interval: exit after an iteration divisible by it. */
  exitInterval: number | null;
  /** --exit-duration-in-mins: exit once training has run this long. */
  exitDurationInMins: number | null;
  /** --exit-signal-handler: on `exitSignal`, save and exit at the next iteration boundary. */
  exitSignalHandler: boolean;
  exitSignal: ExitSignal;
  /** --check-weight-hash-across-dp-replicas-interval: every this many iterations, check that all replicas hold the same params. */
  checkWeightHashInterval: number | null;
  /** --distributed-timeout-minutes: each collective op's timeout; null: WEBTRON_TIMEOUT_MS's, else 30 s. */
  distributedTimeoutMinutes: number | null;
  initMethodStd: number;
  seed: number;
  save: string | null;
  load: string | null;
  /**
   * --finetune (Megatron's flag): take only the params from --load; the iteration, the consumed
   * samples, the optimizer state and the loss scaler start afresh.
   */
  finetune: boolean;
  /**
   * --pretrained-checkpoint: where a run that loads nothing else (no --load, nothing under --save
   * yet) takes its params from, as --load with --finetune; once --save holds a checkpoint, the same
   * command resumes from it instead.
   */
  pretrainedCheckpoint: string | null;
  /** --no-save-optim: checkpoints hold the params only; the run resumes its own --save as with --no-load-optim. */
  noSaveOptim: boolean;
  /** --override-opt_param-scheduler: on a resume, the flags' schedule even where the checkpoint's differs. */
  overrideOptParamScheduler: boolean;
  /** --use-checkpoint-opt_param-scheduler: on a resume, the checkpoint's schedule whatever the flags say. */
  useCheckpointOptParamScheduler: boolean;
  /**
   * The schedule's values taken from the checkpoint (--use-checkpoint-opt_param-scheduler) where
   * they differ from the flags', in samples; null: the flags' own.
   */
  checkpointScheduler: SchedulerState | null;
  /** --no-load-optim: resume the iteration and the data from --load, but not the optimizer state (Adam's moments and step, the loss scaler). */
  noLoadOptim: boolean;
  /** The starting params: an ONNX model's initializers (names matched), or a Hugging Face GPT-2 folder's weights. */
  initFrom: string | null;
  saveInterval: number | null;
  saveRetain: number;
  /** --save-retain-interval: each save removes the previous checkpoint unless its iteration is a multiple of this; null: none removed so. */
  saveRetainInterval: number | null;
  /** --exit-on-missing-checkpoint: a --load that holds no checkpoint stops the run instead of starting it from a random init. */
  exitOnMissingCheckpoint: boolean;
  /** --async-save: copy the state to host memory at the iteration boundary and write it while training goes on. */
  asyncSave: boolean;
  precision: 'fp32' | 'bf16' | 'fp16';
  initialLossScale: number;
  /** --loss-scale: a static loss scale for fp16 (Megatron's ConstantGradScaler); null: the dynamic scaler. */
  lossScale: number | null;
  minLossScale: number;
  lossScaleWindow: number;
  hysteresis: number;
  overlapGradReduce: boolean;
  /** Grad sync sends bf16 words, summed in fp32 (Megatron-LM's --grad-reduce-in-bf16). */
  gradReduceInBf16: boolean;
  overlapParamGather: boolean;
  ddpBucketSize: number | null;
  /** GPU bytes a rank may use (--max-device-memory): a run predicted to need more stops at start-up. */
  maxDeviceMemory: number | null;
  evalInterval: number;
  evalIters: number;
  /** The --data-path words as given. */
  dataPath: string[] | null;
  /** Those words read as Megatron's weighted list: weights normalized; one entry of weight 1 for a single path. */
  dataBlend: DataPathEntry[] | null;
  /** --train-data-path, --valid-data-path, --test-data-path: indexed datasets whole for each split (instead of --data-path and --split). */
  splitDataBlends: { train: DataPathEntry[]; valid: DataPathEntry[] | null; test: DataPathEntry[] | null } | null;
  split: [number, number, number];
  tokenizerType: TokenizerType;
  /** --vocab-size: NullTokenizer's ids (null for the other tokenizers, which bring their vocabulary). */
  tokenizerVocabSize: number | null;
  /** --mock-data: Megatron's mock documents (src/data/mock.ts) instead of a corpus. */
  mockData: boolean;
  /** --eod-mask-loss: no loss where the input token is the tokenizer's end-of-document token. */
  eodMaskLoss: boolean;
  /** --reset-position-ids: a token's learned position is its place in its document (after the last end of document). */
  resetPositionIds: boolean;
  /** --reset-attention-mask: a token attends only to the tokens of its own document. */
  resetAttentionMask: boolean;
  /** --calculate-per-token-loss: one mean over the global batch's unmasked tokens, not a mean of the micro-batches' means. */
  calculatePerTokenLoss: boolean;
  vocabFile: string | null;
  mergeFile: string | null;
  tokenizerModel: string | null;
  logInterval: number;
  /** --timing: every phase of every iteration, printed, logged per rank and drawn as a timeline. */
  timing: boolean;
  /**
   * --profile --profile-step-start S --profile-step-end E: --timing's records for iterations S + 1
   * to E only (Megatron's profiling window: from the start of the step after S steps to the end of
   * step E); null without --profile.
   */
  profileSteps: [start: number, end: number] | null;
  /** --profile-ranks: the ranks --profile times; empty: every rank (Megatron's default). */
  profileRanks: number[];
  /** --log-params-norm: the main params' L2 norm at logged iterations. */
  logParamsNorm: boolean;
  /** --log-straggler: the ranks' times every log interval, and the slowest rank's slowest phase. */
  logStraggler: boolean;
  /** --straggler-minmax-count: how many slowest and fastest ranks the line names. */
  stragglerMinmaxCount: number;
  /** --log-throughput: model TFLOP/s per rank and MFU in the log line, metrics and summary. */
  logThroughput: boolean;
  /** --tensorboard-dir: TensorBoard event files (rank 0), every --tensorboard-log-interval iterations. */
  tensorboardDir: string | null;
  tensorboardLogInterval: number;
  /** --log-memory-to-tensorboard: GPU memory scalars too. */
  logMemoryToTensorboard: boolean;
  /** --log-num-zeros-in-grad: the grad elements that are exactly zero, in the log line, metrics.jsonl and TensorBoard. */
  logNumZerosInGrad: boolean;
  /** --log-timers-to-tensorboard: iteration-time, throughput and, for timed iterations, each phase's time. */
  logTimersToTensorboard: boolean;
  /** --log-validation-ppl-to-tensorboard: the validation perplexity beside the loss. */
  logValidationPplToTensorboard: boolean;
  runDir: string | null;
  /** The data-parallel size the config was resolved for. */
  dataParallelSize: number;
  /** Micro-batches per rank per iteration: global / (micro · d). */
  gradAccumulation: number;
}

/**
 * Megatron's rule for a run that restarts: without --load, a --save folder that holds a checkpoint is
 * loaded. A worker started again by --max-restarts (`restarted`) resumes from --save's newest
 * checkpoint whatever --load says: that is where this job got to, so it resumes whole (a --finetune
 * or --no-load-optim run's own checkpoint holds its own iteration and optimizer state; a
 * --no-save-optim run's holds no optimizer state, so it resumes as with --no-load-optim). A run that
 * loads nothing else starts from --pretrained-checkpoint's params, as with --finetune. A --load that
 * is --save's folder and holds no checkpoint yet (Megatron's `--save DIR --load DIR`, the first time)
 * loads nothing, as in Megatron (with --exit-on-missing-checkpoint it stops the run instead); any
 * other --load must hold one.
 */
export function withDefaultLoad(cfg: TrainConfig, restarted = false): TrainConfig {
  const saved = cfg.save !== null && existsSync(join(cfg.save, TRACKER));
  if (saved && (cfg.load === null || restarted)) return { ...cfg, load: cfg.save, finetune: false, noLoadOptim: cfg.noSaveOptim };
  if (!saved && cfg.load !== null && cfg.save !== null && resolve(cfg.load) === resolve(cfg.save) && !existsSync(join(cfg.load, INDEX))) {
    if (cfg.exitOnMissingCheckpoint)
      throw new ConfigError(
        `exitOnMissingCheckpoint: the load folder ${cfg.load} holds no checkpoint (no ${TRACKER}); give a folder a run saved to, or leave the flag out to start from a random init`,
        'exitOnMissingCheckpoint',
      );
    return withDefaultLoad({ ...cfg, load: null }, restarted);
  }
  if (cfg.load === null && cfg.pretrainedCheckpoint) return { ...cfg, load: cfg.pretrainedCheckpoint, finetune: true, noLoadOptim: false };
  return cfg;
}

/** The global batch of the iteration that starts after `consumedSamples` samples. */
export function globalBatchAt(cfg: Pick<TrainConfig, 'globalBatchSize' | 'batchSizeSchedule'>, consumedSamples: number): number {
  let batch = cfg.globalBatchSize;
  for (const [from, size] of cfg.batchSizeSchedule ?? []) {
    if (consumedSamples < from) break;
    batch = size;
  }
  return batch;
}
