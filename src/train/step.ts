/**
 * Megatron's train_step for one rank: the iteration's micro-batches forward and backward (all but the
 * last in noSync, the last with the grads handed to DDP's overlapped reduce as they are made), the
 * grad sync, the loss averaged over the ranks, the optimizer step, and the NaN check.
 *
 * An iteration trains on the next G global samples (G the global batch, which a batch-size schedule
 * grows with the samples consumed); rank r takes the r-th slice of them; every micro-batch's mean
 * loss is scaled by 1/(micro-batches) and DDP averages over the ranks, so the grads are the mean
 * over the global batch whatever d is. A micro-batch's mean is over its unmasked tokens
 * (--eod-mask-loss); --calculate-per-token-loss scales micro-batch m by d · n_m / N instead, n_m its
 * unmasked tokens and N the global batch's, so the grads are the one mean over N tokens (Megatron's
 * sum over the tokens divided by their count).
 */
import { wordsToFloat32 } from '../collectives/reduce.js';
import { slowData } from '../faults.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { GptSampleSource } from '../data/gpt-dataset.js';
import { batchDocuments, countedTargets } from './data.js';
import { type BackwardOptions, Graph } from '../nn/graph.js';
import type { PreparedStep, StepResult } from '../optimizer/optimizer.js';
import type { AnyRank, RerunStateMachine } from './rerun.js';
import { learningRate, weightDecay } from './schedule.js';
import type { TrainRun } from './setup.js';
import { globalBatchAt } from './config.js';
import { type Counters, TrainingError } from './state.js';
import type { StepTimer } from './timing.js';

/** What one iteration gives the log. */
export interface StepOutcome {
  /** The mean loss over the global batch. */
  loss: number;
  /** The mean loss over this rank's micro-batches. */
  rankLoss: number;
  result: StepResult;
  /** The loss or the grad norm is not finite. */
  nan: boolean;
  /** The global batch, in samples, and its tokens. */
  batch: number;
  tokens: number;
}

/** Where the schedules stand: Adam's applied steps for a schedule in iterations, their samples for one in samples. */
export function scheduleCount(run: TrainRun, counters: Counters): number {
  return run.schedule.unit === 'samples' ? counters.schedulerSamples : run.optimizer.stepCount;
}

/**
 * The first param, in the model's order, whose grad on this rank holds a NaN or infinity: its index,
 * or `order.length`. Sharded grads: the part of each param in this rank's shards.
 */
async function firstBadGrad(ddp: DistributedDataParallel, order: string[], rank: number, d: number): Promise<number> {
  const grads = await Promise.all(
    ddp.buffers.map(async (b) => {
      const bytes = await ddp.ctx.transfers.readback(b.sharding?.grads ? b.gradShard! : b.grads);
      const { gradDtype } = b.layout;
      // 16-bit grads widen exactly (an infinity or NaN stays one): one check for every dtype.
      const values =
        gradDtype === 'float32'
          ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
          : wordsToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2), gradDtype);
      return { b, values };
    }),
  );
  const bad = (name: string): boolean => {
    for (const { b, values } of grads) {
      const p = b.layout.params.find((x) => x.name === name);
      if (!p) continue;
      // Elements [from, to) of the param, at `at` in what was read back.
      const part = b.sharding?.grads ? b.shardPart(name, 'grads', rank, d) : { from: p.start, to: p.end, place: { offset: p.start } };
      if (!part) continue;
      const { from, to } = part;
      const at = part.place.offset;
      for (let i = 0; i < to - from; i++) if (!Number.isFinite(values[at + i]!)) return true;
    }
    return false;
  };
  const k = order.findIndex(bad);
  return k < 0 ? order.length : k;
}

/**
 * Forward and backward of one micro-batch starting at global sample `first`, its loss's grad seeded
 * with `seed(n)` for its n unmasked tokens; returns its mean loss and n.
 */
async function microBatch(
  run: TrainRun,
  samples: GptSampleSource,
  first: number,
  seedOf: (counted: number) => number,
  last: boolean,
  stepTimer: StepTimer | null,
): Promise<{ loss: number; counted: number }> {
  const { cfg, ctx, ddp, gpt } = run;
  const slow = slowData(run.rank);
  const { ids, targets, starts } = await ddp.phases.time('data', async () => {
    // Node's timers may fire a little before their time by performance.now(): sleep until it says so.
    for (const t0 = performance.now(); performance.now() - t0 < slow; ) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, slow - (performance.now() - t0))));
    }
    return samples.batch(first, cfg.microBatchSize);
  });
  const counted = countedTargets(targets);
  const g = new Graph(ctx, { seed: cfg.seed, samples: { first, count: cfg.microBatchSize }, pinParamCopies: !ddp.shardedParams });
  g.documents = batchDocuments(g, cfg, run.model, starts);
  if (stepTimer) g.runner.timer = stepTimer.gpu;
  // With --timing, forward and backward are phases of their own, each run to completion on the GPU.
  const phase = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    if (!stepTimer) return work();
    stepTimer.label(name);
    return ddp.phases.time(name, async () => {
      const out = await work();
      await g.runner.sync();
      return out;
    });
  };
  // Sharded params (optim_grads_params) are gathered section by section; with
  // --overlap-param-gather the forward waits for the step's all-gathers the same way.
  // The head's weight (the tied embedding) is used at both ends of each pass: it stays whole.
  const head = gpt.sections().at(-1)!;
  const ready = ddp.shardedParams
    ? (names: string[]) => ddp.useParams(names, 'forward', head)
    : (names: string[]) => Promise.all(names.map((n) => ddp.paramsReady(n))).then(() => undefined);
  const micro = async () => {
    const idsT = g.input(ids, [cfg.microBatchSize, cfg.seqLength], 'ids');
    const targetsT = g.input(targets, [targets.length], 'targets');
    const { loss } = await phase('forward', async () =>
      cfg.overlapParamGather || ddp.shardedParams ? gpt.forwardAwaiting(g, idsT, targetsT, ready) : gpt.forward(g, idsT, targetsT),
    );
    const seed = new Float32Array([seedOf(counted)]);
    const options: BackwardOptions = {
      ...(last && ddp.overlapGradReduce ? { onParamGrad: (name: string) => ddp.registerGradReady(name) } : {}),
      // Sharded grads take memory bucket by bucket; sharded params are gathered before an op reads them.
      beforeParams: (names) => {
        ddp.beforeGradWrite(names);
        if (ddp.hasParams(names)) return;
        g.runner.flush(); // buckets released now must not be in unsubmitted work
        return ddp.useParams(names, 'backward', head);
      },
    };
    await phase('backward', async () => {
      if (ddp.shardedParams) {
        await g.backwardAwaiting(loss!, seed, options);
        await ddp.releaseParams();
      } else {
        g.backwardFrom(loss!, seed, options);
      }
    });
    return loss!;
  };
  let value = 0;
  const forwardBackward = async () => {
    const loss = last ? await micro() : await ddp.noSync(micro);
    value = (await g.read(loss))[0]!;
  };
  await (stepTimer ? forwardBackward() : ddp.phases.time('forward+backward', forwardBackward));
  g.release();
  return { loss: value, counted };
}

/**
 * --calculate-per-token-loss: the unmasked tokens of the global batch of `batch` samples from
 * `first`, every rank's, read from the data (a pure function of the sample index) rather than
 * gathered over the ranks.
 */
function globalCounted(run: TrainRun, samples: GptSampleSource, first: number, batch: number): number {
  const { cfg } = run;
  if (!cfg.eodMaskLoss) return batch * cfg.seqLength;
  let n = 0;
  for (let k = 0; k < batch; k += cfg.microBatchSize) n += countedTargets(samples.batch(first + k, cfg.microBatchSize).targets);
  return n;
}

/**
 * The iteration's results failed validation for good (src/train/rerun.ts): leave with `exitCode`,
 * after saving a checkpoint from before the iteration when `checkpoint`. Thrown by `trainStep` before
 * the optimizer changes anything, on every rank at once.
 */
export class RerunExit {
  constructor(
    readonly checkpoint: boolean,
    readonly exitCode: number,
  ) {}
}

/** Each rank's flags → whether any rank's is set: one all-reduce (max). */
export function anyRankOf(run: TrainRun): AnyRank {
  return async (flags) => {
    const values = new Float32Array(flags.map(Number));
    await run.group.allReduce(values, 'max');
    return [...values].map((v) => v > 0);
  };
}

/** Whether NaN and infinity in the loss and the grads stop the run (fp16 runs keep going: the loss scaler skips such steps). */
const nanChecked = (cfg: TrainRun['cfg']) => cfg.checkForNanInLossAndGrad && cfg.precision !== 'fp16';

/** A loss or grad norm at least this many times the largest of the first 100 is unexpectedly large (Megatron's factor for both). */
const LARGE_FACTOR = 10;

/** Megatron's checks of a micro-batch's loss on its rank (pretrain_gpt's loss_func). */
function validateLoss(rerun: RerunStateMachine, run: TrainRun, loss: number): void {
  const { cfg } = run;
  if (nanChecked(cfg)) {
    rerun.validate(loss, Number.isNaN, 'found NaN in local forward loss calculation', 0, true);
    rerun.validate(loss, (v) => v === Infinity || v === -Infinity, 'found Inf in local forward loss calculation', 0, true);
  }
  if (cfg.checkForSpikyLoss) rerun.validate(loss, (v) => rerun.isUnexpectedlyLarge(v, LARGE_FACTOR, 'loss'), 'Spiky loss', 0, false);
}

/**
 * Checks of the grads before the optimizer step: of the global grad norm the step computes anyway
 * (Megatron checks each bucket's local norm before the grad sync, an extra pass; the state machine
 * treats both alike), with its tolerance for non-deterministic backward kernels.
 */
function validateGrads(rerun: RerunStateMachine, run: TrainRun, prepared: PreparedStep): void {
  const { cfg } = run;
  if (prepared.foundInf) return; // fp16: the loss scaler skips the step
  const norm = prepared.gradNorm;
  if (nanChecked(cfg)) {
    rerun.validate(norm, Number.isNaN, 'found NaN in the grad norm before the optimizer step', 0.001, true);
    rerun.validate(norm, (v) => v === Infinity, 'found Inf in the grad norm before the optimizer step', 0.001, true);
  }
  if (cfg.checkForLargeGrads)
    rerun.validate(
      norm,
      (v) => rerun.isUnexpectedlyLarge(v, LARGE_FACTOR, 'grads'),
      'found unexpected large grads before the optimizer step',
      0.001,
      false,
    );
}

/**
 * One iteration; advances `counters` (iteration first, consumed samples and the skip and NaN counts
 * after). Its forwards and backwards run again while `rerun` asks (result validation); throws
 * `RerunExit`, `counters` back as before the iteration, when validation ends the run.
 */
export async function trainStep(
  run: TrainRun,
  samples: GptSampleSource,
  counters: Counters,
  stepTimer: StepTimer | null,
  rerun: RerunStateMachine,
): Promise<StepOutcome> {
  const { cfg, rank, d, ddp, optimizer } = run;
  counters.iteration += 1;
  rerun.iteration = counters.iteration;
  stepTimer?.begin(ddp.phases);
  optimizer.learningRate = learningRate(run.schedule, scheduleCount(run, counters));
  if (run.decoupledSchedule) optimizer.decoupledLearningRate = learningRate(run.decoupledSchedule, scheduleCount(run, counters));
  optimizer.weightDecay = weightDecay(run.weightDecaySchedule, scheduleCount(run, counters));
  const scale = optimizer.scaler?.scale ?? 1;
  const batch = globalBatchAt(cfg, counters.consumedSamples);
  const accumulation = batch / (cfg.microBatchSize * d);
  // The mean over the micro-batches (and, through DDP's average, over the ranks), or over the global
  // batch's unmasked tokens; fp16: times the loss scale.
  const total = cfg.calculatePerTokenLoss
    ? Math.max(await ddp.phases.time('data', async () => globalCounted(run, samples, counters.consumedSamples, batch)), 1)
    : 0;
  const seedOf = cfg.calculatePerTokenLoss ? (n: number) => (scale * d * n) / total : () => scale / accumulation;
  let reported = { loss: NaN, rankLoss: NaN };
  let prepared: PreparedStep = { foundInf: false, gradNorm: NaN, numZeros: null };
  while (await rerun.shouldRunForwardBackward(anyRankOf(run))) {
    ddp.zeroGradBuffer();
    const local = new LossTally();
    for (let m = 0; m < accumulation; m++) {
      const first = counters.consumedSamples + (rank * batch) / d + m * cfg.microBatchSize;
      const micro = await microBatch(run, samples, first, seedOf, m === accumulation - 1, stepTimer);
      local.add(micro.loss, micro.counted);
      validateLoss(rerun, run, micro.loss);
    }
    await ddp.phases.time('grad sync wait', () => ddp.finishGradSync());
    // Before the step: with --overlap-param-gather the step returns with all-gathers still being
    // issued, and every rank must issue its collectives in the same order.
    reported = await reportedLoss(run, local, accumulation);
    prepared = await ddp.phases.time('optimizer step', () => optimizer.prepareStep());
    validateGrads(rerun, run, prepared);
  }
  const verdict = rerun.shouldCheckpointAndExit();
  if (verdict.exitCode !== null) {
    counters.iteration -= 1; // not applied: a checkpoint now is one from before it
    throw new RerunExit(verdict.checkpoint, verdict.exitCode);
  }
  const { loss, rankLoss } = reported;
  const result = await ddp.phases.time('optimizer step', () => optimizer.applyStep(prepared));
  counters.consumedSamples += batch;
  if (!result.skipped) counters.schedulerSamples += batch;
  const nan = !Number.isFinite(loss) || (!result.skipped && !Number.isFinite(result.gradNorm));
  if (nan && nanChecked(cfg)) {
    // After the gathers, for the order of collectives.
    await ddp.finishParamSync();
    const where = (await badGrad(run)) ?? 'no grad holds a NaN or infinity';
    throw new TrainingError(
      `iteration ${counters.iteration}: lm loss ${loss}, grad norm ${result.gradNorm}: ${where}; stopping (--no-check-for-nan-in-loss-and-grad trains on)`,
    );
  }
  if (result.skipped) counters.skippedIterations += 1;
  if (nan) counters.nanIterations += 1;
  return { loss, rankLoss, result, nan, batch, tokens: batch * cfg.seqLength };
}

/** Which param's grad, the earliest in the model's order on any rank, holds a NaN or infinity (null: none). A collective. */
export async function badGrad(run: TrainRun): Promise<string | null> {
  const { ddp, order, rank, d, group } = run;
  // The earliest param over all ranks: max of (count - index).
  const found = new Float32Array([order.length - (await firstBadGrad(ddp, order, rank, d))]);
  await group.allReduce(found, 'max');
  const k = order.length - found[0]!;
  return k < order.length ? `the grad of '${order[k]}' holds a NaN or infinity` : null;
}

/** A rank's micro-batch losses: the sum of their means, and of their sums over their unmasked tokens with those tokens' count. */
export class LossTally {
  means = 0;
  sums = 0;
  counted = 0;

  add(mean: number, counted: number): void {
    this.means += mean;
    this.sums += mean * counted;
    this.counted += counted;
  }
}

/**
 * The loss the log reports, over the global batch and over this rank's micro-batches: the mean of
 * the micro-batches' means; with loss masks, Megatron's sum over the unmasked tokens divided by their
 * count (micro-batches with fewer such tokens count for less).
 */
export async function reportedLoss(run: TrainRun, local: LossTally, accumulation: number): Promise<{ loss: number; rankLoss: number }> {
  const { cfg, group, d } = run;
  if (!cfg.eodMaskLoss) {
    const lossSum = new Float32Array([local.means]);
    await group.allReduce(lossSum, 'sum');
    return { loss: lossSum[0]! / (accumulation * d), rankLoss: local.means / accumulation };
  }
  const sums = new Float32Array([local.sums, local.counted]);
  await group.allReduce(sums, 'sum');
  return { loss: sums[0]! / Math.max(sums[1]!, 1), rankLoss: local.sums / Math.max(local.counted, 1) };
}
