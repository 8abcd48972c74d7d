/**
 * The training run of one rank (`webtron train` runs it in every worker), in the shape of Megatron-LM's
 * training.py: `runTraining` is pretrain; src/train/data.ts builds the data, src/train/setup.ts the
 * model and optimizer (and loads a checkpoint), src/train/step.ts is train_step, src/train/evaluate.ts
 * evaluate, src/train/training-log.ts training_log, and `Saver` below is save_checkpoint_and_time.
 *
 * What makes results independent of the data-parallel size d and the micro-batch size (up to float
 * summation order): an iteration trains on the next G global samples (G the global batch), a
 * function of the seed and the sample index (src/data/samples.ts); rank r takes the r-th slice of
 * them; dropout masks are keyed by the global sample index; the grads are the mean over the global
 * batch (src/train/step.ts).
 */
import { type AsyncSave, type AsyncSaveState, reserveAsyncSaveMemory, saveCheckpoint, startAsyncSave } from '../checkpoint/checkpoint.js';
import { type Distributed, initProcessGroup } from '../collectives/init.js';
import { entropies } from '../data/corpus.js';
import { GpuContext } from '../gpu/context.js';
import { formatBytes } from '../gpu/memory.js';
import { NO_PROGRESS } from '../progress.js';
import { ATTENTION_KERNEL_OF, type TrainConfig } from './config.js';
import { type GptShape, recomputeText } from '../nn/gpt-spec.js';
import { documentResets, openData, type TrainData } from './data.js';
import { evaluate } from './evaluate.js';
import { ExitConditions } from './exit.js';
import { tellLauncher } from './lifeline.js';
import { checkWeightHashes, maybeCorruptParams } from './replicas.js';
import { RunFolder } from './run-log.js';
import { loadTrainerCheckpoint, setupModelAndOptimizer, type TrainRun } from './setup.js';
import { type Counters, type TrainerState, TrainingError, type TrainOptions, type TrainSummary } from './state.js';
import { narrowState, stateDtypesText } from '../optimizer/optimizer-base.js';
import { badGrad, RerunExit, trainStep } from './step.js';
import { allGatherText } from '../collectives/process-group.js';
import { hostname } from 'node:os';
import { splitmix32 } from '../data/samples.js';
import { globalBatchAt } from './config.js';
import { iterationsToSkip, ResultValidationError, type RerunCheckpoint, RerunStateMachine } from './rerun.js';
import { schedulerStateOf } from './schedule.js';
import { StepTimer, writeTimeline } from './timing.js';
import { TrainingLog } from './training-log.js';
import { gptFlopsPerIteration, knownPeak, measuredPeak } from './throughput.js';

export { checkDataPath } from './data.js';
export { TrainingError, type TrainOptions, type TrainSummary } from './state.js';

/**
 * Megatron's save_checkpoint_and_time, sync or async: the checkpoint, its line, and its path; the
 * time an iteration is blocked by it is not training time. With --async-save a save is started
 * (the state copied to host memory) and committed at the first iteration boundary where every
 * rank's writer is done, or before the next save or the end, whichever comes first.
 */
class Saver {
  private pending: AsyncSave | null = null;
  private pendingSince = 0;
  private spare: Uint8Array[] = [];
  /** The newest committed checkpoint. */
  checkpoint: string | null = null;

  constructor(
    private readonly run: TrainRun,
    private readonly log: TrainingLog,
  ) {
    if (!run.cfg.save || !run.cfg.asyncSave) return;
    const t0 = performance.now();
    this.spare = reserveAsyncSaveMemory(
      { group: run.group, ddp: run.ddp, optimizer: run.optimizer },
      { optimizerState: !run.cfg.noSaveOptim },
    );
    const mib = this.spare.reduce((s, m) => s + m.byteLength, 0) / 2 ** 20;
    log.line(
      `--async-save: ${mib.toFixed(1)} MiB of host memory per rank reserved for checkpoints in ${seconds(performance.now() - t0)} s`,
    );
  }

  private committed(dir: string, iteration: number): void {
    this.checkpoint = dir;
    tellLauncher({ checkpoint: dir, iteration });
  }

  /** This rank's background save, if one is being written. */
  get writing(): AsyncSaveState | null {
    return this.pending?.state ?? null;
  }

  async save(state: TrainerState): Promise<void> {
    const { run, log } = this;
    const parts = { group: run.group, ddp: run.ddp, optimizer: run.optimizer };
    const options = {
      iteration: state.iteration,
      extra: state as unknown as Record<string, unknown>,
      retain: run.cfg.saveRetain,
      retainInterval: run.cfg.saveRetainInterval,
      optimizerState: !run.cfg.noSaveOptim,
    };
    if (!run.cfg.asyncSave) {
      const t0 = performance.now();
      const saved = await saveCheckpoint(run.cfg.save!, parts, options);
      this.committed(saved.dir, saved.iteration);
      log.line(`saved checkpoint ${saved.dir} (${(saved.totalBytes / 2 ** 20).toFixed(1)} MiB) in ${seconds(performance.now() - t0)} s`);
      log.exclude(performance.now() - t0);
      return;
    }
    await this.finish();
    const t0 = performance.now();
    this.pending = await startAsyncSave(run.cfg.save!, parts, options, this.spare);
    this.pendingSince = t0;
    this.spare = [];
    log.line(
      `saving checkpoint of iteration ${state.iteration} in the background: state copied to host memory in ${seconds(performance.now() - t0)} s`,
    );
    log.exclude(performance.now() - t0);
  }

  /** Commit the background save (waiting for this rank's writer if it still runs): a collective, at the same iteration on every rank. */
  async finish(): Promise<void> {
    const pending = this.pending;
    if (!pending) return;
    this.pending = null;
    const t0 = performance.now();
    const saved = await pending.finish();
    this.spare = pending.memory();
    this.committed(saved.dir, saved.iteration);
    this.log.line(
      `saved checkpoint ${saved.dir} (${(saved.totalBytes / 2 ** 20).toFixed(1)} MiB) in the background in ${seconds(performance.now() - this.pendingSince)} s, ${seconds(performance.now() - t0)} s of it waited for`,
    );
    this.log.exclude(performance.now() - t0);
  }
}

const seconds = (ms: number) => (ms / 1000).toFixed(2);

/** The global batch, and how it grows under a batch-size schedule. */
function batchText(cfg: TrainConfig, d: number): string {
  const schedule = cfg.batchSizeSchedule;
  if (!schedule || schedule.length === 1)
    return `global batch ${cfg.globalBatchSize} = ${cfg.microBatchSize} × ${d} × ${cfg.gradAccumulation} micro-batches`;
  return `global batch from ${schedule[0]![1]} to ${cfg.globalBatchSize} (${cfg.microBatchSize} × ${d} × ${schedule[0]![1] / (cfg.microBatchSize * d)} to ${cfg.gradAccumulation} micro-batches) in ${schedule.length - 1} steps by sample ${schedule.at(-1)![0]}`;
}

/** Rank 0's first line: the model, the parallelism, the batch and the data. */
function headerLine(run: TrainRun, data: TrainData, reference: { unigram: number; bigram: number | null }): string {
  const { cfg, d, model, layout } = run;
  return (
    `webtron train: ${layout.paramCount.toLocaleString('en-US')} params (${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ${cfg.numAttentionHeads} heads${model.kvChannels === undefined ? '' : ` of ${model.kvChannels}`}, vocab ${data.tokenizer.vocabSize} padded to ${model.vocabSize}), ${cfg.precision}${recomputation(cfg)}, ` +
    `${d} rank${d === 1 ? '' : 's'}, ${cfg.useDistributedOptimizer ? 'distributed optimizer' : 'non-distributed optimizer'}${narrowState(cfg.stateDtypes) ? ` (${stateDtypesText(cfg.stateDtypes)})` : ''}${optimizerText(cfg)}, ${batchText(cfg, d)}${lossText(cfg, data, model)}${decoupledText(run)}; ` +
    `${data.name}: ${data.trainTokens.toLocaleString('en-US')} train tokens (${data.train.count} samples of ${cfg.seqLength}), ${data.validTokens.toLocaleString('en-US')} validation tokens${data.testTokens > 0 ? `, ${data.testTokens.toLocaleString('en-US')} test tokens` : ''}; unigram entropy ${reference.unigram.toFixed(3)}${reference.bigram === null ? ' nats (too few tokens per pair for a bigram figure)' : `, bigram ${reference.bigram.toFixed(3)} nats`}`
  );
}

/** The header's words for --optimizer sgd or lion, with their settings; none for Adam. */
function optimizerText(cfg: TrainConfig): string {
  if (cfg.optimizer === 'sgd') return `, SGD with momentum ${cfg.sgdMomentum}`;
  if (cfg.optimizer === 'lion') return `, Lion with betas ${cfg.lionBetas.join(', ')}`;
  return '';
}

/** The header's words for --eod-mask-loss, --reset-position-ids, --reset-attention-mask and --calculate-per-token-loss, after the batch. */
function lossText(cfg: TrainConfig, data: TrainData, model: GptShape): string {
  const eod = data.tokenizer.eod;
  const mask = cfg.eodMaskLoss ? `, no loss where the input is the end-of-document token ${eod}` : '';
  const { positions, attention } = documentResets(cfg, model);
  const reset = [positions ? 'positions' : '', attention ? 'attention' : ''].filter((w) => w !== '');
  const documents = reset.length > 0 ? `, ${reset.join(' and ')} restarting after each end-of-document token ${eod}` : '';
  const perToken = cfg.calculatePerTokenLoss ? ", the loss a mean over the global batch's tokens" : '';
  return mask + documents + perToken;
}

/** Whether iteration `iteration` (from 1) is timed: every one with --timing, those of --profile's window with --profile. */
function timed(cfg: TrainConfig, iteration: number): boolean {
  if (cfg.timing) return true;
  return cfg.profileSteps !== null && iteration > cfg.profileSteps[0] && iteration <= cfg.profileSteps[1];
}

/** Whether `rank` records the timed iterations: every rank with --timing, those of --profile-ranks (all by default) with --profile. */
function timedRank(cfg: TrainConfig, rank: number): boolean {
  return cfg.timing || cfg.profileRanks.length === 0 || cfg.profileRanks.includes(rank);
}

/** The header's words for --decoupled-lr, after the loss's. */
function decoupledText(run: TrainRun): string {
  const s = run.decoupledSchedule;
  return s ? `, the embedding and output layer at their own learning rate (${s.lr} to ${s.minLr})` : '';
}

/** The header's words for --recompute-granularity, after the precision. */
function recomputation(cfg: TrainConfig): string {
  if (cfg.recompute && cfg.recompute.method !== 'mlp') return `, ${recomputeText(cfg.recompute)}`;
  if (cfg.recomputeGranularity !== 'selective') return '';
  const what = [
    ATTENTION_KERNEL_OF[cfg.attentionBackend] === 'fused' ? "the fused attention's" : '',
    cfg.recompute ? "each block's MLP" : '',
  ];
  return `, selective recomputation (${what.filter(Boolean).join(' and ')})`;
}

/** rank 0 with a run folder: config.json, every resolved flag and what the run found. */
function openRunFolder(run: TrainRun, data: TrainData, reference: { unigram: number; bigram: number | null }): RunFolder | null {
  const { cfg } = run;
  if (run.rank !== 0 || !cfg.runDir) return null;
  const folder = new RunFolder(cfg.runDir);
  folder.writeConfig({
    ...cfg,
    params: run.layout.paramCount,
    vocab_size: data.tokenizer.vocabSize,
    padded_vocab_size: run.model.vocabSize,
    corpus: data.name,
    world_size: run.d,
    unigram_entropy: reference.unigram,
    bigram_entropy: reference.bigram,
  });
  return folder;
}

/** This rank's result validation (--rerun-mode and its flags): its lines go to this rank's stderr. */
function rerunStateMachine(run: TrainRun): RerunStateMachine {
  const { cfg, rank } = run;
  // The same draws on every rank: (draw + rank) % rate picks one rank to inject at, as Megatron's does.
  const draw = splitmix32(cfg.seed);
  return new RerunStateMachine({
    mode: cfg.rerunMode,
    errorInjectionRate: cfg.errorInjectionRate,
    errorInjectionType: cfg.errorInjectionType,
    trackerFile: cfg.resultRejectedTrackerFilename,
    rank,
    where: { node: hostname(), device: Number(process.env.LOCAL_RANK ?? process.env.SLURM_LOCALID ?? 0) },
    randomInt: (n) => draw() % n,
    warn: (line) => process.stderr.write(`webtron train: rank ${rank}: ${line}\n`),
  });
}

/** UTF-16 code units per rank for what a rerun's ranks tell each other: their findings, their part of the checkpoint. */
const RERUN_TEXT_WIDTH = 4096;

/**
 * Result validation ended the run at the iteration after `counters.iteration`, before its update:
 * save the checkpoint it asks for (with each rank's part of the pending rerun), then the error that
 * says what the reruns found, with Megatron's exit code.
 */
async function leaveForRerun(
  run: TrainRun,
  rerun: RerunStateMachine,
  exit: RerunExit,
  saver: Saver,
  state: () => TrainerState,
): Promise<never> {
  const { cfg } = run;
  await run.ddp.finishParamSync(); // nothing of the last step's may still be on the wire
  const iteration = state().iteration + 1;
  const found = (await allGatherText(run.group, rerun.findings.join('; '), RERUN_TEXT_WIDTH)).flatMap((line, r) =>
    line ? [`rank ${r}: ${line}`] : [],
  );
  const grad = cfg.checkForNanInLossAndGrad ? await badGrad(run) : null;
  const what = [...found, ...(grad ? [grad] : [])].join('; ');
  let code = exit.exitCode;
  let next: string;
  if (exit.checkpoint && cfg.save) {
    const ranks = (await allGatherText(run.group, JSON.stringify(rerun.rankState()), RERUN_TEXT_WIDTH)).map((json) => JSON.parse(json));
    const pending: RerunCheckpoint = { mode: rerun.mode, state: rerun.state, iteration, ranks };
    await saver.save({ ...state(), rerun: pending });
    await saver.finish();
    next = `saved ${saver.checkpoint} from before it: resume from it on another node or device to tell a faulty device from a correct result`;
  } else if (exit.checkpoint) {
    code = 17;
    next = 'no --save to resume from on another device: stopping';
  } else if (rerun.state === 'rerunning_again_from_checkpoint') {
    next = 'resume from the same checkpoint on another node or device';
  } else {
    next = rerun.state === 'rerunning_in_place' ? 'resume from the last checkpoint' : 'stopping';
  }
  throw new ResultValidationError(
    `iteration ${iteration}: a result failed validation (${what}); ${next} (exit code ${code}; --rerun-mode)`,
    code,
  );
}

/** Megatron's report of how results differed between an iteration's two runs (--rerun-mode report_stats), over every rank so far. */
async function reportDeterminism(run: TrainRun, rerun: RerunStateMachine, say: (line: string) => void): Promise<void> {
  const messages = [...rerun.stats.keys()].sort();
  if (messages.length === 0) return; // no check ran (fp16 without --check-for-spiky-loss or --check-for-large-grads)
  // After the step's param gathers (--overlap-param-gather issues them bucket by bucket): this is a collective.
  await run.ddp.finishParamSync();
  const stats = messages.map((m) => rerun.stats.get(m)!);
  const sums = new Float32Array(stats.flatMap((s) => [s.total, s.identical, s.sum]));
  const maxima = new Float32Array(stats.map((s) => s.max));
  await run.group.allReduce(sums, 'sum');
  await run.group.allReduce(maxima, 'max');
  say('Stats on computation determinism in validation calls');
  messages.forEach((m, i) => {
    const [total, identical, sum] = [sums[3 * i]!, sums[3 * i + 1]!, sums[3 * i + 2]!];
    const spread =
      total > identical
        ? `, rel. variability: avg= ${(sum / total).toExponential(3)}, max: ${maxima[i]!.toExponential(3)}`
        : ', all identical';
    say(
      `  From validation call '${m}': ${total.toLocaleString('en-US')}/${identical.toLocaleString('en-US')} total/identical samples${spread}`,
    );
  });
}

/** The loop: train steps, logs, evaluation and saves until --train-iters; returns the last checkpoint and the last timed iteration. */
async function train(
  run: TrainRun,
  data: TrainData,
  counters: Counters,
  log: TrainingLog,
  stepTimer: StepTimer | null,
  { rerun, skip }: { rerun: RerunStateMachine; skip: Set<number> },
  onIteration?: (iteration: number, loss: number, rankLoss: number) => void,
): Promise<{ checkpoint: string | null; lastTimed: number }> {
  const { cfg, ddp } = run;
  const optParamScheduler = cfg.checkpointScheduler ?? schedulerStateOf(cfg, cfg.globalBatchSize);
  const state = (): TrainerState => ({ ...counters, tokenizer: data.tokenizer.state(), model: run.model, args: cfg, optParamScheduler });
  const saver = new Saver(run, log);
  let lastTimed = 0;
  const exits = new ExitConditions(cfg, performance.now());
  while (counters.iteration < cfg.trainIters && !cfg.skipTrain) {
    if (skip.has(counters.iteration + 1)) {
      // Megatron's skip: the samples are consumed, nothing trains on them, the schedules do not move.
      const batch = globalBatchAt(cfg, counters.consumedSamples);
      counters.iteration += 1;
      counters.consumedSamples += batch;
      log.line(`iteration ${counters.iteration} skipped (--iterations-to-skip): ${batch} samples consumed without training`);
      if (cfg.save && counters.iteration === cfg.trainIters) await saver.save(state());
      continue;
    }
    const stepStart = performance.now();
    // Every rank knows which iterations are timed (rank 0 draws the last one, timed on it or not).
    const inWindow = stepTimer !== null && timed(cfg, counters.iteration + 1);
    const timer = inWindow && timedRank(cfg, run.rank) ? stepTimer : null;
    const outcome = await trainStep(run, data.train, counters, timer, rerun).catch(async (e: unknown) => {
      if (!(e instanceof RerunExit)) throw e;
      return leaveForRerun(run, rerun, e, saver, state);
    });
    const iteration = counters.iteration;
    if (cfg.rerunMode === 'report_stats' && iteration % 2 === 1) await reportDeterminism(run, rerun, (line) => log.line(line));
    tellLauncher({ iteration });
    onIteration?.(iteration, outcome.loss, outcome.rankLoss);
    const timing = timer ? await timer.end(iteration, ddp.phases) : null;
    if (inWindow) lastTimed = iteration;
    const stepMs = performance.now() - stepStart;
    const logs = log.logs(iteration);
    // Collectives on every rank at the same iterations, outside the training time.
    let paramsNorm: number | null = null;
    if (cfg.logParamsNorm && (logs.line || logs.tensorboard)) {
      const t0 = performance.now();
      paramsNorm = await run.optimizer.paramsNorm();
      log.exclude(performance.now() - t0);
    }
    const metrics = log.step(counters, outcome, stepMs, timing, paramsNorm);
    if (metrics && cfg.logStraggler) {
      const t0 = performance.now();
      metrics.stragglers = await log.stragglers();
      log.exclude(performance.now() - t0);
    }
    let val: number | null = null;
    if (iteration % cfg.evalInterval === 0 || iteration === cfg.trainIters) {
      const t0 = performance.now();
      const value = await evaluate(run, data.valid);
      val = log.validation(counters, value, performance.now() - t0);
    }
    log.metric(counters, metrics, val, timing);
    await maybeCorruptParams(run, iteration);
    if (cfg.checkWeightHashInterval !== null && iteration % cfg.checkWeightHashInterval === 0) await checkWeightHashes(run, iteration);
    const saveNow = (cfg.saveInterval !== null && iteration % cfg.saveInterval === 0) || iteration === cfg.trainIters;
    if (cfg.save && saveNow) await saver.save(state());
    const { exit, save } = await exits.check(run, iteration, saver.writing);
    if (save === 'written' || save === 'failed') await saver.finish();
    if (exit !== null) {
      if (cfg.save && !saveNow) await saver.save(state());
      await saver.finish();
      log.line(`exiting program at iteration ${iteration}: ${exit}`);
      break;
    }
  }
  exits.destroy();
  await saver.finish();
  await ddp.finishParamSync();
  return { checkpoint: saver.checkpoint, lastTimed };
}

/** Megatron's pretrain for one rank: the process group, the data, the model and optimizer, the loop, the summary. */
export async function runTraining(cfg: TrainConfig, options: TrainOptions = {}): Promise<TrainSummary> {
  const print = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const attentionKernel = ATTENTION_KERNEL_OF[cfg.attentionBackend];
  const ctx = await GpuContext.create({
    backend: options.backend,
    adapter: options.adapter,
    ...(attentionKernel ? { attentionKernel } : {}),
  });
  const timeout = cfg.distributedTimeoutMinutes === null ? {} : { timeoutMs: Math.round(cfg.distributedTimeoutMinutes * 60_000) };
  const dist: Distributed = await initProcessGroup({ ...timeout, ...options.init });
  const { rank, worldSize: d } = dist.info;
  if (d !== cfg.dataParallelSize) throw new TrainingError(`the job has ${d} ranks but the flags were checked for ${cfg.dataParallelSize}`);
  const say = (line: string) => rank === 0 && print(line);
  let closeData: () => void = () => {};
  try {
    const data = await openData(cfg);
    closeData = data.close;
    const reference = entropies(data.head);
    const run = await setupModelAndOptimizer(ctx, dist, cfg, data.tokenizer);
    if (run.initializedFrom) say(`webtron train: params initialized from ${run.initializedFrom}`);
    const rerun = rerunStateMachine(run);
    const counters = await loadTrainerCheckpoint(run, say, rerun);
    const skip = new Set(cfg.iterationsToSkip);
    if (cfg.resultRejectedTrackerFilename) {
      const tracked = iterationsToSkip(cfg.resultRejectedTrackerFilename).filter((it) => !skip.has(it));
      for (const it of tracked) skip.add(it);
      if (tracked.length > 0)
        say(
          `webtron train: skipping iteration${tracked.length === 1 ? '' : 's'} ${tracked.join(', ')}: rejected twice on a rank in ${cfg.resultRejectedTrackerFilename}`,
        );
    }
    const folder = openRunFolder(run, data, reference);
    say(headerLine(run, data, reference));
    if (cfg.flagsWithoutEffect.length > 0)
      say(`webtron train: without effect here: ${cfg.flagsWithoutEffect.map(({ flag, why }) => `${flag} (${why})`).join('; ')}`);
    const progress = rank === 0 && options.progress ? options.progress(cfg.trainIters) : NO_PROGRESS;
    const log = new TrainingLog(run, say, folder, progress);
    // protobufjs, loaded only for runs that write TensorBoard events (and ONNX files).
    if (cfg.tensorboardDir && rank === 0)
      log.writeTensorBoard(new (await import('./tensorboard.js')).TensorBoardWriter(cfg.tensorboardDir));
    if (cfg.logThroughput) {
      // Every rank measures at once, so that ranks sharing a device measure what each gets in training.
      let peak = knownPeak(ctx.adapterModel, cfg.precision);
      if (!peak) {
        await run.group.barrier();
        peak = await measuredPeak(ctx);
      }
      const flops = gptFlopsPerIteration(run.model, cfg.globalBatchSize);
      log.logThroughput((batch) => gptFlopsPerIteration(run.model, batch), peak);
      say(
        `throughput: ${(flops / 1e9).toPrecision(4)} GFLOP of model work per iteration (Megatron's formula); MFU against ${peak.tflops.toPrecision(3)} TFLOP/s (${peak.source})`,
      );
    }
    const stepTimer = cfg.timing || cfg.profileSteps ? new StepTimer(ctx, rank, cfg.runDir) : null;
    const { checkpoint, lastTimed } = await train(run, data, counters, log, stepTimer, { rerun, skip }, options.onIteration);
    if (cfg.skipTrain) {
      say('skipping training (--skip-train is on) ...');
      const t0 = performance.now();
      log.metric(counters, null, log.validation(counters, await evaluate(run, data.valid), performance.now() - t0), null);
    }
    if (counters.iteration >= cfg.trainIters || cfg.skipTrain) {
      // Megatron's evaluation on the test set, once training is done (every rank: a collective).
      const t0 = performance.now();
      log.test(counters.iteration, await evaluate(run, data.test), performance.now() - t0);
    }
    // The most GPU memory any rank held at once (every category, as the allocator counted it), in
    // KiB rounded up: exact in the float32 the all-reduce carries up to 16 TiB.
    const peakKiB = new Float32Array([Math.ceil(ctx.memoryReport().peakTotal / 1024)]);
    await run.group.allReduce(peakKiB, 'max');
    const peak = peakKiB[0]! * 1024;
    const summary = await log.finish(counters.iteration, counters.consumedSamples, checkpoint, reference, data.name, peak);
    if (cfg.maxDeviceMemory !== null) {
      const within = peak <= cfg.maxDeviceMemory;
      // Over the budget: where rank 0's bytes went, each category at its own peak.
      const peaks = Object.entries(ctx.memoryReport().peak)
        .filter(([, bytes]) => bytes > 0)
        .map(([category, bytes]) => `${category} ${formatBytes(bytes)}`)
        .join(', ');
      say(
        `webtron train: peak GPU memory ${formatBytes(peak)} per rank (the most of any rank), ${within ? 'within' : 'over'} --max-device-memory ${formatBytes(cfg.maxDeviceMemory)}${within ? '' : `; rank 0's peaks by category: ${peaks}`}`,
      );
    }
    if (stepTimer) {
      // Every rank has written its file: rank 0 draws the last timed iteration of the ranks on its node.
      await run.group.barrier();
      if (rank === 0 && lastTimed > 0 && stepTimer.dir) {
        const svg = await writeTimeline(stepTimer.dir, d, lastTimed, `${run.layout.paramCount.toLocaleString('en-US')}-param GPT`);
        if (svg) say(`webtron train: timeline of iteration ${lastTimed} on ${svg}`);
      }
      stepTimer.destroy();
    }
    run.optimizer.destroy();
    run.ddp.destroy();
    await run.group.barrier();
    return summary;
  } finally {
    closeData();
    await dist.close().catch(() => undefined);
  }
}
