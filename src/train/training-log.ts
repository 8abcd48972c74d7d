/**
 * Megatron's training_log for rank 0: the progress bar, the memory line after the first iteration,
 * Megatron's line every --log-interval iterations, the validation line, metrics.jsonl, and at the
 * end summary.json, loss.svg and the last line. Every rank keeps the counts; only rank 0 prints.
 */
import { gptActivationBytes } from '../memory/activations.js';
import { modelStateBytes } from '../memory/model-state.js';
import type { ProgressDisplay } from '../progress.js';
import { megatronLine, memoryLine, type MetricsLine, type RunFolder, sci } from './run-log.js';
import { documentResets } from './data.js';
import { learningRate } from './schedule.js';
import type { TrainRun } from './setup.js';
import type { Counters, TrainSummary } from './state.js';
import { type StepOutcome, scheduleCount } from './step.js';
import { type IterationTiming, timingLine } from './timing.js';
import { type Peak, throughput } from './throughput.js';
import type { TensorBoardWriter } from './tensorboard.js';
import { type RankTimes, type StragglerReport, stragglerLine, stragglerReport } from './stragglers.js';

interface Interval {
  t0: number;
  iterations: number;
  lossSum: number;
  lossCount: number;
  skipped: number;
  nan: number;
  tokens: number;
  /** --log-throughput: the model FLOPs of the interval's iterations. */
  flops: number;
  /** The global batch of the interval's last iteration. */
  batch: number;
}

const freshInterval = (): Interval => ({
  t0: performance.now(),
  iterations: 0,
  lossSum: 0,
  lossCount: 0,
  skipped: 0,
  nan: 0,
  tokens: 0,
  flops: 0,
  batch: 0,
});

/** Megatron's perplexity of a loss: exp(min(20, loss)). */
const ppl = (loss: number) => Math.exp(Math.min(20, loss));

export class TrainingLog {
  private readonly started = performance.now();
  private interval = freshInterval();
  /** The group's sent bytes at the start of the interval. */
  private sentAtStart = 0;
  private lastLoss: number | null = null;
  private lastVal: number | null = null;
  private bestVal: number | null = null;
  private lastTest: number | null = null;
  private lastGradNorm: number | null = null;
  /** --log-num-zeros-in-grad: the last step's count (null: skipped). */
  private lastNumZeros: number | null = null;
  /** Until the first iteration this process trains is logged (Megatron writes no times for it). */
  private firstStep = true;
  private readonly trainCurve: { x: number; y: number }[] = [];
  private readonly validCurve: { x: number; y: number }[] = [];
  private trainedTokens = 0;
  private memory: { measured: number; predicted: number; activationsPeak: number } | null = null;
  /** --log-throughput: the model FLOPs of an iteration of a global batch, and the peak MFU is taken against. */
  private throughput: { flops: (batch: number) => number; peak: Peak } | null = null;
  /** Model FLOPs and milliseconds of the training so far (logged intervals). */
  private flopsTrained = 0;
  private msTrained = 0;
  /** This rank's times per iteration over the last log interval (for --log-straggler). */
  private intervalTimes: RankTimes = { step: 0, data: 0, gradSync: 0 };
  /** --tensorboard-dir: the event file (rank 0). */
  private tensorboard: TensorBoardWriter | null = null;

  constructor(
    private readonly run: TrainRun,
    private readonly say: (line: string) => void,
    private readonly folder: RunFolder | null,
    private readonly progress: ProgressDisplay,
  ) {}

  /** --tensorboard-dir: write TensorBoard scalars to `writer` from now on (closed by `finish`). */
  writeTensorBoard(writer: TensorBoardWriter): void {
    this.tensorboard = writer;
  }

  /** --log-throughput: count `flops(global batch)` per iteration against `peak` from now on. */
  logThroughput(flops: (batch: number) => number, peak: Peak): void {
    this.throughput = { flops, peak };
  }

  /** A line on rank 0, the progress bar cleared first. */
  line(text: string): void {
    this.progress.clear();
    this.say(text);
  }

  /**
   * Whether `iteration` is logged (Megatron's line or TensorBoard's scalars): where --log-params-norm
   * and --log-straggler take their collectives.
   */
  logs(iteration: number): { line: boolean; tensorboard: boolean } {
    const { cfg } = this.run;
    return {
      line: iteration % cfg.logInterval === 0 || iteration === cfg.trainIters,
      tensorboard: cfg.tensorboardDir !== null && iteration % cfg.tensorboardLogInterval === 0,
    };
  }

  /** After an iteration: its timing line, the progress bar, the memory line once, Megatron's line at the log interval. */
  step(
    counters: Counters,
    outcome: StepOutcome,
    stepMs: number,
    timing: IterationTiming | null,
    paramsNorm: number | null = null,
  ): MetricsLine | null {
    const { iteration } = counters;
    const { loss, result, nan, tokens } = outcome;
    if (result.skipped) this.interval.skipped += 1;
    if (nan) this.interval.nan += 1;
    if (!result.skipped && Number.isFinite(loss)) {
      this.interval.lossSum += loss;
      this.interval.lossCount += 1;
      this.lastGradNorm = result.gradNorm;
    }
    this.lastNumZeros = result.numZeros;
    this.interval.iterations += 1;
    this.interval.tokens += tokens;
    this.interval.batch = outcome.batch;
    if (this.throughput) this.interval.flops += this.throughput.flops(outcome.batch);
    this.trainedTokens += tokens;
    this.lastLoss = loss;
    if (this.tensorboard && this.logs(iteration).tensorboard) this.tensorboardScalars(counters, outcome, stepMs, paramsNorm, timing);
    this.firstStep = false;
    if (timing && this.run.rank === 0) this.line(timingLine(timing));
    this.progress.update(
      iteration,
      `lm loss ${Number.isFinite(loss) ? loss.toFixed(3) : loss} | ${(tokens / (stepMs / 1000)).toFixed(0)} tokens/s`,
    );
    if (this.memory === null) this.memoryOnce(iteration);
    return this.logs(iteration).line ? this.megatron(counters, paramsNorm) : null;
  }

  private memoryOnce(iteration: number): void {
    const { ctx, layout, rank, cfg, model } = this.run;
    const live = ctx.memoryReport();
    const predicted = modelStateBytes(layout, rank, cfg.stateDtypes, cfg.shardingStrategy ?? 'optim');
    const modelState = (r: Record<string, number>) =>
      ['params', 'grads', 'main-params', 'optimizer-state'].reduce((sum, c) => sum + (r[c] ?? 0), 0);
    this.memory = { measured: modelState(live.live), predicted: predicted.total, activationsPeak: live.peak.activations };
    if (rank === 0)
      this.line(
        memoryLine(
          rank,
          iteration,
          live.live,
          live.peak,
          predicted.byCategory as unknown as Record<string, number>,
          gptActivationBytes(model, {
            microBatchSize: cfg.microBatchSize,
            hiddenDropout: cfg.hiddenDropout > 0,
            attentionDropout: cfg.attentionDropout > 0,
            halfGrads: layout.buffers.some((b) => b.gradDtype !== 'float32'),
            attention: ctx.attentionKernel,
            recompute: cfg.recompute,
            documents: documentResets(cfg, model),
          }),
        ),
      );
  }

  private megatron(counters: Counters, paramsNorm: number | null): MetricsLine {
    const { cfg, optimizer, ddp } = this.run;
    const { iteration, consumedSamples } = counters;
    const interval = this.interval;
    const elapsed = performance.now() - interval.t0;
    const avg = interval.lossCount > 0 ? interval.lossSum / interval.lossCount : null;
    const lr = learningRate(this.run.schedule, scheduleCount(this.run, counters));
    const tokensPerS = interval.tokens / (elapsed / 1000);
    const rate = this.throughput
      ? throughput(interval.flops / interval.iterations, elapsed / interval.iterations, this.run.d, this.throughput.peak)
      : null;
    if (this.throughput) {
      this.flopsTrained += interval.flops;
      this.msTrained += elapsed;
    }
    this.line(
      megatronLine({
        time: new Date(),
        iteration,
        trainIters: cfg.trainIters,
        consumedSamples,
        msPerIteration: elapsed / interval.iterations,
        lr,
        globalBatchSize: interval.batch,
        loss: avg,
        lossScale: optimizer.scaler?.scale ?? 1,
        gradNorm: this.lastGradNorm,
        ...(cfg.logNumZerosInGrad ? { numZeros: this.lastNumZeros } : {}),
        ...(paramsNorm !== null ? { paramsNorm } : {}),
        skipped: interval.skipped,
        nan: interval.nan,
        tokensPerS,
        ...(rate ? { throughput: rate } : {}),
      }),
    );
    if (avg !== null) this.trainCurve.push({ x: iteration, y: avg });
    const line: MetricsLine = {
      iteration,
      consumed_samples: consumedSamples,
      loss: avg ?? NaN,
      lr,
      grad_norm: this.lastGradNorm,
      ...(cfg.logNumZerosInGrad ? { num_zeros: this.lastNumZeros } : {}),
      ...(paramsNorm !== null ? { params_norm: paramsNorm } : {}),
      memory_bytes: Object.fromEntries(Object.entries(this.run.ctx.memoryReport().live).filter(([, bytes]) => bytes > 0)),
      loss_scale: optimizer.scaler?.scale ?? null,
      skipped: interval.skipped,
      nan_iterations: interval.nan,
      tokens_per_s: tokensPerS,
      step_ms: elapsed / interval.iterations,
      phases: Object.fromEntries(Object.entries(ddp.phases.ms).map(([k, v]) => [k, v / interval.iterations])),
      ...(rate ? { throughput_tflops_per_rank: rate.tflops, mfu: rate.mfu } : {}),
      ...(this.run.group.sentBytes === undefined
        ? {}
        : { sent_bytes_per_iteration: Math.round((this.run.group.sentBytes - this.sentAtStart) / interval.iterations) }),
    };
    this.sentAtStart = this.run.group.sentBytes ?? 0;
    this.intervalTimes = {
      step: elapsed / interval.iterations,
      data: (ddp.phases.ms.data ?? 0) / interval.iterations,
      gradSync: (ddp.phases.ms['grad sync wait'] ?? 0) / interval.iterations,
    };
    ddp.phases.reset();
    this.interval = freshInterval();
    return line;
  }

  /**
   * One iteration's scalars under Megatron's tags, by iteration and (the `vs samples` ones) by
   * consumed samples.
   */
  private tensorboardScalars(
    counters: Counters,
    outcome: StepOutcome,
    stepMs: number,
    paramsNorm: number | null,
    timing: IterationTiming | null,
  ): void {
    const { cfg, optimizer, ctx } = this.run;
    const { loss, result } = outcome;
    const lr = learningRate(this.run.schedule, scheduleCount(this.run, counters));
    const scalars: Record<string, number> = { 'learning-rate': lr, 'batch-size': outcome.batch };
    if (!result.skipped) Object.assign(scalars, { 'lm loss': loss, 'grad-norm': result.gradNorm });
    if (optimizer.scaler) scalars['loss-scale'] = optimizer.scaler.scale;
    if (paramsNorm !== null) scalars['params-norm'] = paramsNorm;
    if (result.numZeros !== null) scalars['num-zeros'] = result.numZeros;
    const bySamples = Object.fromEntries(Object.entries(scalars).map(([tag, x]) => [`${tag} vs samples`, x]));
    // --log-timers-to-tensorboard: the times, as Megatron writes them after the first iteration of a process (its set-up aside).
    if (cfg.logTimersToTensorboard && !this.firstStep) {
      scalars['iteration-time'] = stepMs / 1000;
      if (this.throughput)
        scalars.throughput = throughput(this.throughput.flops(outcome.batch), stepMs, this.run.d, this.throughput.peak).tflops;
      // Timed iterations (--timing, --profile): each phase's seconds, as Megatron's timers write theirs.
      for (const [phase, ms] of Object.entries(timing?.phases ?? {})) scalars[`${phase}-time`] = ms / 1000;
    }
    if (cfg.logMemoryToTensorboard) {
      const memory = ctx.memoryReport();
      scalars['mem-allocated-bytes'] = memory.total;
      scalars['mem-max-allocated-bytes'] = memory.peakTotal;
      for (const [category, bytes] of Object.entries(memory.live)) scalars[`mem-${category}-bytes`] = bytes;
    }
    this.tensorboard!.scalars(counters.iteration, scalars);
    this.tensorboard!.scalars(counters.consumedSamples, bySamples);
  }

  /**
   * --log-straggler, after a log interval: every rank's times (a collective: every rank calls it at
   * the same iterations), the report line on rank 0, and the report for metrics.jsonl.
   */
  async stragglers(): Promise<StragglerReport & { ranks: RankTimes[] }> {
    const { group, d, rank, cfg } = this.run;
    const all = new Float32Array(3 * d);
    const t = this.intervalTimes;
    all.set([t.step, t.data, t.gradSync], 3 * rank);
    await group.allGather(all);
    const ranks = Array.from({ length: d }, (_, r) => ({ step: all[3 * r]!, data: all[3 * r + 1]!, gradSync: all[3 * r + 2]! }));
    const report = stragglerReport(ranks, cfg.stragglerMinmaxCount);
    if (rank === 0) this.line(stragglerLine(report));
    return { ...report, ranks };
  }

  /** Megatron's validation lines; the evaluation's `ms` do not count as training time. */
  validation(counters: Counters, val: number | null, ms: number): number | null {
    const { iteration, consumedSamples } = counters;
    if (val !== null && this.tensorboard) {
      this.tensorboard.scalars(iteration, { 'lm loss validation': val });
      this.tensorboard.scalars(consumedSamples, { 'lm loss validation vs samples': val });
      if (this.run.cfg.logValidationPplToTensorboard) {
        this.tensorboard.scalars(iteration, { 'lm loss validation ppl': ppl(val) });
        this.tensorboard.scalars(consumedSamples, { 'lm loss validation ppl vs samples': ppl(val) });
      }
    }
    if (val !== null) {
      this.lastVal = val;
      this.bestVal = this.bestVal === null ? val : Math.min(this.bestVal, val);
      this.validCurve.push({ x: iteration, y: val });
      this.line(
        `${'-'.repeat(100)}\n validation loss at iteration ${iteration} | lm loss value: ${sci(val)} | lm loss PPL: ${sci(ppl(val))} | (${(ms / 1000).toFixed(1)} s)\n${'-'.repeat(100)}`,
      );
    }
    this.exclude(ms);
    return val;
  }

  /** The test split's loss after training (Megatron's evaluation "on test set"): one line, and the summary's final_test_loss. */
  test(iteration: number, loss: number | null, ms: number): void {
    if (loss === null) return;
    this.lastTest = loss;
    this.line(
      `${'-'.repeat(100)}\n validation loss at iteration ${iteration} on test set | lm loss value: ${sci(loss)} | lm loss PPL: ${sci(ppl(loss))} | (${(ms / 1000).toFixed(1)} s)\n${'-'.repeat(100)}`,
    );
  }

  /** Time spent outside training (evaluation, a checkpoint save) leaves the interval's tokens/s. */
  exclude(ms: number): void {
    this.interval.t0 += ms;
  }

  /** One metrics.jsonl object for this iteration, when there is anything to keep. */
  metric(counters: Counters, metrics: MetricsLine | null, val: number | null, timing: IterationTiming | null): void {
    if (!this.folder || !(metrics || val !== null || timing)) return;
    this.folder.metric({
      ...(metrics ?? { iteration: counters.iteration, consumed_samples: counters.consumedSamples }),
      ...(val !== null ? { val_loss: val } : {}),
      ...(timing ? { timing } : {}),
    } as MetricsLine);
  }

  /** The summary (and on rank 0 with a run folder: summary.json, loss.svg and the last line). */
  async finish(
    iterations: number,
    consumedSamples: number,
    checkpoint: string | null,
    reference: { unigram: number; bigram: number | null },
    corpus: string,
    peakBytes: number | null = null,
  ): Promise<TrainSummary> {
    const { cfg, layout, d } = this.run;
    this.progress.finish();
    const elapsed = (performance.now() - this.started) / 1000;
    this.tensorboard?.close();
    const summary: TrainSummary = {
      iterations,
      consumed_samples: consumedSamples,
      final_loss: this.lastLoss,
      final_val_loss: this.lastVal,
      best_val_loss: this.bestVal,
      final_test_loss: this.lastTest,
      tokens_per_s: this.trainedTokens / elapsed,
      elapsed_s: elapsed,
      params: layout.paramCount,
      unigram_entropy: reference.unigram,
      bigram_entropy: reference.bigram,
      run_dir: cfg.runDir,
      checkpoint,
      model_state_bytes_per_rank: this.memory?.measured ?? null,
      predicted_model_state_bytes_per_rank: this.memory?.predicted ?? null,
      activations_peak_bytes: this.memory?.activationsPeak ?? null,
      peak_gpu_bytes_per_rank: peakBytes,
    };
    if (this.throughput && this.msTrained > 0) {
      const { tflops, mfu } = throughput(this.flopsTrained, this.msTrained, d, this.throughput.peak);
      Object.assign(summary, {
        throughput_tflops_per_rank: tflops,
        mfu,
        peak_tflops: this.throughput.peak.tflops,
        peak_source: this.throughput.peak.source,
      });
    }
    if (this.folder) {
      this.folder.writeSummary(summary as unknown as Record<string, unknown>);
      if (this.trainCurve.length > 0)
        await this.folder.writeChart(
          this.trainCurve,
          this.validCurve,
          reference,
          `${layout.paramCount.toLocaleString('en-US')}-param GPT on ${corpus.replace(/ \(.*\)$/, '')}, ${d} rank${d === 1 ? '' : 's'}`,
        );
      if (cfg.skipTrain)
        this.say(
          `webtron train: evaluated the params of iteration ${iterations}: validation ${this.lastVal?.toFixed(4) ?? '-'}${this.lastTest === null ? '' : `, test ${this.lastTest.toFixed(4)}`} (--skip-train)`,
        );
      else if (this.lastLoss === null || this.lastLoss === undefined)
        this.say(
          `webtron train: nothing to train: the checkpoint loaded is at iteration ${iterations} and --train-iters is ${cfg.trainIters}`,
        );
      else
        this.say(
          `webtron train: done in ${elapsed.toFixed(1)} s, ${summary.tokens_per_s.toFixed(0)} tokens/s; final lm loss ${this.lastLoss?.toFixed(4)}, validation ${this.lastVal?.toFixed(4) ?? '-'}${this.lastTest === null ? '' : `, test ${this.lastTest.toFixed(4)}`} (${reference.bigram === null ? `unigram entropy ${reference.unigram.toFixed(4)}` : `bigram entropy ${reference.bigram.toFixed(4)}`}); ${cfg.runDir}/loss.svg`,
        );
    }
    return summary;
  }
}
