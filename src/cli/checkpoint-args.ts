/**
 * `webtron train --use-checkpoint-args` (Megatron's flag): the model's flags from the checkpoint
 * --load (or --pretrained-checkpoint) names, so that a fine-tuning or evaluation run need not repeat
 * them. As with --init-from, a flag left out takes the checkpoint's value and a flag given must agree
 * with it, else one line names both; --seq-length may be any length the position embeddings hold.
 * And the schedule a resume trains with: the flags' or the checkpoint's, as Megatron checks them.
 */
import { momentKinds } from '../optimizer/momentum-math.js';
import { join } from 'node:path';
import { otherOptimizer, readCheckpointIndex, savedOptimizerState } from '../checkpoint/checkpoint.js';
import type { TrainConfig } from '../train/config.js';
import { SCHEDULER_FIELDS, type SchedulerState, schedulerStateOf } from '../train/schedule.js';
import { FlagError, type FlagValues } from './flags.js';
import { givenFlags, takeFlag } from './hf-init.js';

/** The checkpoint's model flags, as TrainConfig names them. */
const MODEL_FLAGS: [flag: string, field: keyof TrainConfig][] = [
  ['num-layers', 'numLayers'],
  ['hidden-size', 'hiddenSize'],
  ['num-attention-heads', 'numAttentionHeads'],
  ['max-position-embeddings', 'maxPositionEmbeddings'],
  ['ffn-hidden-size', 'ffnHiddenSize'],
  ['normalization', 'normalization'],
  ['norm-epsilon', 'normEpsilon'],
  ['swiglu', 'swiglu'],
  ['squared-relu', 'squaredRelu'],
  ['disable-bias-linear', 'disableBiasLinear'],
  ['add-qkv-bias', 'addQkvBias'],
  ['group-query-attention', 'groupQueryAttention'],
  ['num-query-groups', 'numQueryGroups'],
  ['kv-channels', 'kvChannels'],
  ['qk-layernorm', 'qkLayernorm'],
  ['apply-layernorm-1p', 'applyLayernorm1p'],
  ['position-embedding-type', 'positionEmbeddingType'],
  ['rotary-base', 'rotaryBase'],
  ['rotary-percent', 'rotaryPercent'],
  ['rotary-interleaved', 'rotaryInterleaved'],
  ['use-rope-scaling', 'useRopeScaling'],
  ['rope-scaling-factor', 'ropeScalingFactor'],
  ['make-vocab-size-divisible-by', 'makeVocabSizeDivisibleBy'],
  ['untie-embeddings-and-output-weights', 'untieEmbeddingsAndOutputWeights'],
  ['tokenizer-type', 'tokenizerType'],
  ['vocab-size', 'tokenizerVocabSize'],
];
/** Flags taken when left out and the checkpoint has them, never checked against it. */
const DEFAULTED_FLAGS: [flag: string, field: keyof TrainConfig][] = [
  ['seq-length', 'seqLength'],
  ['vocab-file', 'vocabFile'],
  ['merge-file', 'mergeFile'],
  ['tokenizer-model', 'tokenizerModel'],
];

/** `values` with the model flags of the checkpoint, and the model's exact vocabulary where it had one (a Hugging Face start). */
export function withCheckpointArgs(values: FlagValues, argv: readonly string[]): { values: FlagValues; vocabSize: number | null } {
  if (!values['use-checkpoint-args']) return { values, vocabSize: null };
  const path = (values.load ?? values['pretrained-checkpoint']) as string | undefined;
  if (path === undefined) throw new FlagError('--use-checkpoint-args needs --load (the checkpoint whose model flags to take)');
  const { dir, index } = readCheckpointIndex(path);
  const args = (index.extra as { args?: Partial<TrainConfig> }).args;
  const file = join(dir, 'index.json');
  if (!args)
    throw new FlagError(`--use-checkpoint-args: ${file} holds no flags (not a checkpoint of webtron train); give the model's flags`);
  const given = givenFlags(argv);
  const out: FlagValues = { ...values };
  for (const [flag, field] of MODEL_FLAGS) {
    const saved = args[field] as string | number | boolean | null | undefined;
    if (saved !== undefined && saved !== null)
      takeFlag(out, given, flag, saved, `${file}: it was saved with ${String(saved)}; leave the flag out`);
  }
  for (const [flag, field] of DEFAULTED_FLAGS) {
    const saved = args[field] as string | number | null | undefined;
    if (!given.has(flag) && saved !== undefined && saved !== null) out[flag] = saved;
  }
  const longest = out['max-position-embeddings'] as number;
  if ((out['seq-length'] as number) > longest)
    throw new FlagError(`--seq-length ${String(out['seq-length'])} is longer than ${file} allows: its position embeddings hold ${longest}`);
  return { values: out, vocabSize: args.vocabSize ?? null };
}

/**
 * A checkpoint saved with --apply-layernorm-1p holds its norm weights as gamma - 1, one without as
 * gamma; the params' layout is the same, so loading one into the other kind of run would silently
 * change every norm. Stop in one line instead.
 */
export function checkNormCentering(cfg: TrainConfig): TrainConfig {
  if (!cfg.load) return cfg;
  const { dir, index } = readCheckpointIndex(cfg.load);
  const args = (index.extra as { args?: Partial<TrainConfig> }).args;
  const saved = args?.applyLayernorm1p ?? false;
  if (args && saved !== cfg.applyLayernorm1p)
    throw new FlagError(
      saved
        ? `${join(dir, 'index.json')}: saved with --apply-layernorm-1p (norm weights held as gamma - 1); give --apply-layernorm-1p too, or --use-checkpoint-args`
        : `${join(dir, 'index.json')}: saved without --apply-layernorm-1p (norm weights held as gamma); leave --apply-layernorm-1p out`,
    );
  return cfg;
}

/**
 * Megatron's check of the schedule on a resume that loads the optimizer (OptimizerParamScheduler's
 * load_state_dict): where a value of the flags' schedule differs from the checkpoint's, stop in one
 * line, unless --override-opt_param-scheduler takes the flags' or --use-checkpoint-opt_param-scheduler
 * the checkpoint's. A checkpoint that saved no schedule (older than the check) is not checked, nor
 * is one loaded by --skip-train, which takes no optimizer step; one saved without the optimizer's
 * state (--no-save-optim) needs --no-load-optim or --finetune, and one of another --optimizer too.
 */
export function withCheckpointScheduler(cfg: TrainConfig): TrainConfig {
  if (!cfg.load || cfg.finetune || cfg.noLoadOptim || cfg.skipTrain) return cfg;
  const { dir, index } = readCheckpointIndex(cfg.load);
  const file = join(dir, 'index.json');
  if (!savedOptimizerState(index))
    throw new FlagError(
      `${file}: saved without the optimizer's state (--no-save-optim); give --no-load-optim (or --finetune) to load its params`,
    );
  const mismatch = otherOptimizer(index, cfg.optimizer, momentKinds(cfg.optimizer, cfg.sgdMomentum));
  if (mismatch) throw new FlagError(`${file}: ${mismatch}`);
  if (cfg.overrideOptParamScheduler) return cfg;
  const saved = (index.extra as { optParamScheduler?: SchedulerState }).optParamScheduler;
  if (!saved) {
    if (cfg.useCheckpointOptParamScheduler)
      throw new FlagError(`--use-checkpoint-opt_param-scheduler: ${file} saved no schedule; give the schedule's flags instead`);
    return cfg;
  }
  const flags = schedulerStateOf(cfg, cfg.globalBatchSize);
  // A field a checkpoint predates (the decoupled rates) was null in its run.
  const differs = (Object.keys(SCHEDULER_FIELDS) as (keyof SchedulerState)[]).filter((k) => (flags[k] ?? null) !== (saved[k] ?? null));
  if (differs.length === 0) return cfg;
  if (cfg.useCheckpointOptParamScheduler) return { ...cfg, checkpointScheduler: saved };
  const k = differs[0]!;
  throw new FlagError(
    `${file}: the schedule's ${SCHEDULER_FIELDS[k]} is ${saved[k]} in the checkpoint but ${flags[k]} by the flags${differs.length > 1 ? ` (and ${differs.length - 1} more differ)` : ''}; give --override-opt_param-scheduler to train with the flags' schedule, or --use-checkpoint-opt_param-scheduler to keep the checkpoint's`,
  );
}
