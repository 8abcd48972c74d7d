/** What a training run keeps, reports and fails with: the checkpoint's trainer state, the summary, the options. */
import type { InitOptions } from '../collectives/init.js';
import type { TokenizerState } from '../data/tokenizer.js';
import { WebtronError } from '../errors.js';
import type { GptConfig } from '../nn/gpt.js';
import type { ProgressDisplay } from '../progress.js';
import type { TrainConfig } from './config.js';
import type { SchedulerState } from './schedule.js';
import type { RerunCheckpoint } from './rerun.js';

/** The run stopped for a reason of the run itself (NaN, bad data): one line, exit code 1. */
export class TrainingError extends WebtronError {
  override name = 'TrainingError';
  override readonly code: string = 'ERR_TRAINING';
  override readonly exitCode: 1 | 2 = 1;
}

/** The counters a run carries from iteration to iteration, and from a checkpoint to the run that resumes it. */
export interface Counters {
  iteration: number;
  consumedSamples: number;
  /** The samples of the iterations whose update was applied (not skipped for an fp16 overflow): a schedule in samples counts these, as Megatron's scheduler does. */
  schedulerSamples: number;
  skippedIterations: number;
  nanIterations: number;
}

/** What a checkpoint keeps for the trainer (index.json's `extra`). */
export interface TrainerState extends Counters {
  tokenizer: TokenizerState;
  model: GptConfig;
  args: TrainConfig;
  /** The schedule's values the run trained with, in samples (Megatron's opt_param_scheduler state): what a resume checks its flags against. */
  optParamScheduler: SchedulerState;
  /** A rerun of the next iteration the checkpoint was saved for (--rerun-mode validate_results); absent otherwise. */
  rerun?: RerunCheckpoint;
}

export interface TrainSummary {
  iterations: number;
  consumed_samples: number;
  final_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
  /** The test split's loss after the last iteration; null without test samples, --eval-iters 0 or a run that stopped early. */
  final_test_loss: number | null;
  tokens_per_s: number;
  elapsed_s: number;
  params: number;
  unigram_entropy: number;
  /** Null where the corpus is too small for the estimate (src/data/corpus.ts). */
  bigram_entropy: number | null;
  run_dir: string | null;
  checkpoint: string | null;
  /** Rank 0's GPU bytes of params, grads, main params and optimizer state after the first iteration, and what webtron memory predicts. */
  model_state_bytes_per_rank: number | null;
  predicted_model_state_bytes_per_rank: number | null;
  activations_peak_bytes: number | null;
  /** The most GPU memory any rank held at once (every category), as the allocator counted it. */
  peak_gpu_bytes_per_rank: number | null;
  /** --log-throughput: model TFLOP/s per rank over the training time, MFU, and the peak it is against. */
  throughput_tflops_per_rank?: number;
  mfu?: number;
  peak_tflops?: number;
  peak_source?: string;
}

export interface TrainOptions {
  backend?: string | undefined;
  adapter?: string | undefined;
  /** Rank 0's lines (stdout by default). */
  log?: (line: string) => void;
  /** Rank 0's progress display for --train-iters iterations (the CLI gives its bar on a terminal); none by default. */
  progress?: (iterations: number) => ProgressDisplay;
  /** Every rank, after each iteration: the iteration, its loss averaged over the ranks, and this rank's own (a browser worker's page shows them). */
  onIteration?: (iteration: number, loss: number, rankLoss: number) => void;
  /** How this rank joins the job (default: from the environment, torchrun's variables). */
  init?: InitOptions;
}
