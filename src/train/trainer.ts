/**
 * The training loop of one rank (`webtron train` runs it in every worker), Megatron-LM's
 * pretrain_gpt in shape: a GPT over DDP buffers with either optimizer, Megatron's param groups and
 * learning-rate schedule, gradient accumulation over micro-batches (all but the last in noSync),
 * overlapped grad reduce and param gather, evaluation, checkpoints, logs.
 *
 * What makes results independent of the data-parallel size d and the micro-batch size (up to float
 * summation order): iteration i trains on the global samples [(i-1)·G, i·G), a function of the seed
 * and the sample index (src/data/samples.ts); rank r takes the r-th slice of them; dropout masks are
 * keyed by the global sample index; every micro-batch's mean loss is scaled by 1/(micro-batches) and
 * DDP averages over ranks, so the grads are the mean over the global batch whatever d is.
 */
import { readOnnxParams } from '../onnx/proto.js';
import { ConfigError, WebtronError } from '../errors.js';
import { loadCheckpoint, readCheckpointIndex, saveCheckpoint } from '../checkpoint/checkpoint.js';
import { CheckpointError } from '../checkpoint/errors.js';
import { initProcessGroup, type Distributed } from '../collectives/init.js';
import { mobyDick, entropies, splitTexts, textFile } from '../data/corpus.js';
import { dataKind, openIndexedGptData, type GptSampleSource } from '../data/gpt-dataset.js';
import { IndexedDataset } from '../data/indexed.js';
import { GptSamples } from '../data/samples.js';
import {
  ByteTokenizer,
  CharTokenizer,
  loadTokenizer,
  paddedVocabSize,
  readTokenizerFiles,
  type Tokenizer,
  type TokenizerState,
} from '../data/tokenizer.js';
import { DistributedDataParallel } from '../ddp/ddp.js';
import { computeLayout } from '../ddp/layout.js';
import { GpuContext } from '../gpu/context.js';
import { gptActivationBytes } from '../memory/activations.js';
import { PRECISION_DTYPES } from '../memory/calculator.js';
import { modelStateBytes } from '../memory/model-state.js';
import { Gpt, type GptConfig } from '../nn/gpt.js';
import { Graph } from '../nn/graph.js';
import { paramTensors } from '../nn/params.js';
import { megatronWeightDecay } from '../optimizer/optimizer-base.js';
import { createOptimizer } from '../optimizer/optimizer.js';
import type { TrainConfig } from './config.js';
import { learningRate } from './schedule.js';
import { StepTimer, timingLine, writeTimeline } from './timing.js';
import { ProgressBar } from '../cli/progress.js';
import { megatronLine, memoryLine, RunFolder, sci, type MetricsLine } from './run-log.js';

/** The run stopped for a reason of the run itself (NaN, bad data): one line, exit code 1. */
export class TrainingError extends WebtronError {
  override name = 'TrainingError';
  override readonly code: string = 'ERR_TRAINING';
  override readonly exitCode: 1 | 2 = 1;
}

/** What a checkpoint keeps for the trainer (index.json's `extra`). */
interface TrainerState {
  iteration: number;
  consumedSamples: number;
  skippedIterations: number;
  nanIterations: number;
  tokenizer: TokenizerState;
  model: GptConfig;
  args: TrainConfig;
}

export interface TrainSummary {
  iterations: number;
  consumed_samples: number;
  final_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
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
}

export interface TrainOptions {
  backend?: string | undefined;
  adapter?: string | undefined;
  /** Rank 0's lines (stdout by default). */
  log?: (line: string) => void;
  /** Show a progress bar on stderr (rank 0 on a terminal). */
  progress?: boolean;
}

const CHAR_NEEDS_TEXT =
  'tokenizerType: CharTokenizer builds its vocabulary from a text corpus, and --data-path names an indexed dataset; give the --tokenizer-type it was made with';

/** The tokenizer a run uses: from the checkpoint it resumes, else from the flags (CharTokenizer: built from the corpus text). */
async function tokenizerFor(cfg: TrainConfig, text: string | null): Promise<Tokenizer> {
  if (cfg.load) {
    const { dir, index } = readCheckpointIndex(cfg.load);
    const extra = index.extra as Partial<TrainerState>;
    if (!extra.tokenizer)
      throw new CheckpointError(`${dir}: not a checkpoint of webtron train (index.json has no tokenizer); --load needs one`);
    if (extra.tokenizer.type !== cfg.tokenizerType)
      throw new CheckpointError(`${dir}: saved with ${extra.tokenizer.type}, but --tokenizer-type is ${cfg.tokenizerType}`);
    return loadTokenizer(extra.tokenizer);
  }
  switch (cfg.tokenizerType) {
    case 'CharTokenizer':
      if (text === null) throw new ConfigError(CHAR_NEEDS_TEXT, 'tokenizerType');
      return CharTokenizer.fromText(text);
    case 'ByteTokenizer':
      return new ByteTokenizer();
    default:
      return loadTokenizer(readTokenizerFiles(cfg.tokenizerType, cfg));
  }
}

/**
 * What --data-path names, checked without reading the data: indexed datasets (each index read and
 * checked), or one text file. The launcher runs it before any worker starts, so a bad path is one
 * line, not one per rank.
 */
export function checkDataPath(cfg: TrainConfig): 'indexed' | 'text' | 'moby-dick' {
  const blend = cfg.dataBlend;
  if (!blend) return 'moby-dick';
  const kinds = blend.map((e) => dataKind(e.path));
  const missing = kinds.indexOf(null);
  if (missing >= 0)
    throw new ConfigError(
      `dataPath: ${blend[missing]!.path} is neither a text file nor the prefix of an indexed dataset (${blend[missing]!.path}.bin and .idx)`,
      'dataPath',
    );
  if (kinds[0] === 'text') {
    if (blend.length > 1)
      throw new ConfigError(
        `dataPath: ${blend[0]!.path} is a text file; a blend takes indexed datasets only (make them with webtron preprocess-data)`,
        'dataPath',
      );
    return 'text';
  }
  const text = kinds.indexOf('text');
  if (text >= 0) throw new ConfigError(`dataPath: ${blend[text]!.path} is a text file; a blend takes indexed datasets only`, 'dataPath');
  for (const e of blend) IndexedDataset.open(e.path).close();
  if (cfg.tokenizerType === 'CharTokenizer' && !cfg.load) throw new ConfigError(CHAR_NEEDS_TEXT, 'tokenizerType');
  if (cfg.tokenizerType === 'GPT2BPETokenizer' || cfg.tokenizerType === 'HuggingFaceTokenizer') readTokenizerFiles(cfg.tokenizerType, cfg);
  return 'indexed';
}

/** The run's samples: indexed datasets (--data-path PREFIX or a blend), else a text corpus (a file, or Moby-Dick). */
async function openData(cfg: TrainConfig) {
  const blend = cfg.dataBlend;
  if (blend && checkDataPath(cfg) === 'indexed') {
    const tokenizer = await tokenizerFor(cfg, null);
    const data = openIndexedGptData(blend, { split: cfg.split, seqLength: cfg.seqLength, seed: cfg.seed, vocabSize: tokenizer.vocabSize });
    return {
      tokenizer,
      name: data.name,
      train: data.train,
      valid: data.valid,
      trainTokens: data.trainTokens,
      validTokens: data.validTokens,
      head: data.head,
      close: () => {
        for (const d of data.datasets) d.close();
      },
    };
  }
  const corpus = blend ? textFile(blend[0]!.path) : mobyDick();
  const texts = splitTexts(corpus, cfg.split);
  if (!texts.train)
    throw new TrainingError(
      `the train split of ${corpus.name} is empty: --split ${cfg.split.join(',')} over ${corpus.documents.length} documents`,
    );
  const tokenizer = await tokenizerFor(cfg, `${texts.train}${texts.valid}${texts.test}`);
  const trainTokens = tokenizer.encode(texts.train);
  const validTokens = texts.valid ? tokenizer.encode(texts.valid) : null;
  return {
    tokenizer,
    name: corpus.name,
    train: new GptSamples(trainTokens, cfg.seqLength, cfg.seed, true) as GptSampleSource,
    valid:
      validTokens && validTokens.length > cfg.seqLength
        ? (new GptSamples(validTokens, cfg.seqLength, cfg.seed, false) as GptSampleSource)
        : null,
    trainTokens: trainTokens.length,
    validTokens: validTokens?.length ?? 0,
    head: trainTokens,
    close: () => undefined,
  };
}

/** The first param, in the model's order, whose grad on this rank holds a NaN or infinity: its index, or `order.length`. */
async function firstBadGrad(ddp: DistributedDataParallel, order: string[]): Promise<number> {
  const grads = await Promise.all(ddp.buffers.map(async (b) => ({ b, bytes: await ddp.ctx.transfers.readback(b.grads) })));
  const bad = (name: string): boolean => {
    for (const { b, bytes } of grads) {
      const p = b.layout.params.find((x) => x.name === name);
      if (!p) continue;
      if (b.layout.gradDtype === 'float16') {
        const words = new Uint16Array(bytes.buffer, bytes.byteOffset, b.layout.numel);
        for (let i = p.start; i < p.end; i++) if ((words[i]! & 0x7c00) === 0x7c00) return true;
      } else {
        const values = new Float32Array(bytes.buffer, bytes.byteOffset, b.layout.numel);
        for (let i = p.start; i < p.end; i++) if (!Number.isFinite(values[i]!)) return true;
      }
    }
    return false;
  };
  const k = order.findIndex(bad);
  return k < 0 ? order.length : k;
}

export async function runTraining(cfg: TrainConfig, options: TrainOptions = {}): Promise<TrainSummary> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const ctx = await GpuContext.create({ backend: options.backend, adapter: options.adapter });
  const dist: Distributed = await initProcessGroup();
  const { rank, worldSize: d } = dist.info;
  if (d !== cfg.dataParallelSize) throw new TrainingError(`the job has ${d} ranks but the flags were checked for ${cfg.dataParallelSize}`);
  const group = dist.group;
  const isRank0 = rank === 0;
  const say = (line: string) => isRank0 && log(line);
  let closeData: () => void = () => {};
  try {
    // Data: the same on every rank (a pure function of the corpus, the split and the seed).
    const data = await openData(cfg);
    closeData = data.close;
    const { tokenizer, train: trainSamples, valid: validSamples } = data;
    const reference = entropies(data.head);

    const model: GptConfig = {
      numLayers: cfg.numLayers,
      hiddenSize: cfg.hiddenSize,
      numAttentionHeads: cfg.numAttentionHeads,
      seqLength: cfg.seqLength,
      maxPositionEmbeddings: cfg.maxPositionEmbeddings,
      vocabSize: paddedVocabSize(tokenizer.vocabSize, cfg.makeVocabSizeDivisibleBy),
      tiedHead: !cfg.untieEmbeddingsAndOutputWeights,
      hiddenDropout: cfg.hiddenDropout,
      attentionDropout: cfg.attentionDropout,
    };
    const [dtype, gradDtype] = PRECISION_DTYPES[cfg.precision];
    const specs = Gpt.specs(model, dtype, gradDtype);
    const layout = computeLayout(specs, {
      dataParallelSize: d,
      distributedOptimizer: cfg.useDistributedOptimizer,
      ...(cfg.ddpBucketSize ? { bucketSize: cfg.ddpBucketSize } : {}),
    });
    const ddp = new DistributedDataParallel(ctx, group, layout, {
      overlapGradReduce: cfg.overlapGradReduce,
      gradReduceInBf16: cfg.gradReduceInBf16,
    });
    const hyper = {
      lr: cfg.lr,
      beta1: cfg.adamBeta1,
      beta2: cfg.adamBeta2,
      eps: cfg.adamEps,
      weightDecay: cfg.weightDecay,
      decoupled: true,
      maximize: false,
    };
    const optimizer = createOptimizer(ctx, group, ddp, {
      hyper,
      clipGrad: cfg.clipGrad,
      overlapParamGather: cfg.overlapParamGather,
      weightDecayFor: megatronWeightDecay,
      lossScaler: {
        initialScale: cfg.initialLossScale,
        minScale: cfg.minLossScale,
        growthInterval: cfg.lossScaleWindow,
        hysteresis: cfg.hysteresis,
      },
    });
    // Every rank initializes the same params from the seed.
    ddp.importParams(cfg.initFrom ? readOnnxParams(cfg.initFrom, specs) : Gpt.init(model, cfg.seed, cfg.initMethodStd));
    const gpt = new Gpt(model, paramTensors(ddp.buffers));
    const parts = { group, ddp, optimizer };
    const paramCount = layout.paramCount;

    let iteration = 0;
    let consumedSamples = 0;
    let skippedTotal = 0;
    let nanTotal = 0;
    if (cfg.load) {
      const loaded = await loadCheckpoint(cfg.load, parts);
      const extra = loaded.index.extra as unknown as TrainerState;
      iteration = extra.iteration;
      consumedSamples = extra.consumedSamples;
      skippedTotal = extra.skippedIterations;
      nanTotal = extra.nanIterations;
      say(`loaded ${loaded.dir}: iteration ${iteration}, ${consumedSamples} samples consumed`);
    }
    const state = (): TrainerState => ({
      iteration,
      consumedSamples,
      skippedIterations: skippedTotal,
      nanIterations: nanTotal,
      tokenizer: tokenizer.state(),
      model,
      args: cfg,
    });

    let run: RunFolder | null = null;
    if (isRank0 && cfg.runDir) {
      run = new RunFolder(cfg.runDir);
      run.writeConfig({
        ...cfg,
        params: paramCount,
        vocab_size: tokenizer.vocabSize,
        padded_vocab_size: model.vocabSize,
        corpus: data.name,
        world_size: d,
        unigram_entropy: reference.unigram,
        bigram_entropy: reference.bigram,
      });
    }
    say(
      `webtron train: ${paramCount.toLocaleString('en-US')} params (${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ${cfg.numAttentionHeads} heads, vocab ${tokenizer.vocabSize} padded to ${model.vocabSize}), ${cfg.precision}, ` +
        `${d} rank${d === 1 ? '' : 's'}, ${cfg.useDistributedOptimizer ? 'distributed optimizer' : 'non-distributed optimizer'}, global batch ${cfg.globalBatchSize} = ${cfg.microBatchSize} × ${d} × ${cfg.gradAccumulation} micro-batches; ` +
        `${data.name}: ${data.trainTokens.toLocaleString('en-US')} train tokens (${trainSamples.count} samples of ${cfg.seqLength}), ${data.validTokens.toLocaleString('en-US')} validation tokens; unigram entropy ${reference.unigram.toFixed(3)}${reference.bigram === null ? ' nats (too few tokens per pair for a bigram figure)' : `, bigram ${reference.bigram.toFixed(3)} nats`}`,
    );

    const schedule = {
      lr: cfg.lr,
      minLr: cfg.minLr,
      decayStyle: cfg.lrDecayStyle,
      warmupIters: cfg.lrWarmupIters,
      decayIters: cfg.lrDecayIters,
      warmupInit: cfg.lrWarmupInit,
    };
    const perRank = cfg.globalBatchSize / d;
    const order = specs.map((s) => s.name);
    const ready = (names: string[]) => Promise.all(names.map((n) => ddp.paramsReady(n))).then(() => undefined);
    const progress = new ProgressBar(cfg.trainIters, process.stderr, isRank0 && (options.progress ?? false));
    const sayClean = (line: string) => {
      progress.clear();
      say(line);
    };

    /** Mean loss over the validation batches (every rank takes its share of each). */
    const evaluate = async (): Promise<number | null> => {
      if (!validSamples || cfg.evalIters === 0) return null;
      await ddp.finishParamSync();
      let sum = 0;
      for (let b = 0; b < cfg.evalIters; b++) {
        for (let m = 0; m < cfg.gradAccumulation; m++) {
          const first = b * cfg.globalBatchSize + rank * perRank + m * cfg.microBatchSize;
          const { ids, targets } = validSamples.batch(first, cfg.microBatchSize);
          const g = new Graph(ctx, { training: false, samples: { first, count: cfg.microBatchSize } });
          const { loss } = gpt.forward(
            g,
            g.input(ids, [cfg.microBatchSize, cfg.seqLength], 'ids'),
            g.input(targets, [targets.length], 'targets'),
          );
          sum += (await g.read(loss!))[0]!;
          g.release();
        }
      }
      const total = new Float32Array([sum]);
      await group.allReduce(total, 'sum');
      return total[0]! / (cfg.evalIters * cfg.gradAccumulation * d);
    };

    const save = async () => {
      if (!cfg.save) return;
      const t0 = performance.now();
      const saved = await saveCheckpoint(cfg.save, parts, {
        iteration,
        extra: state() as unknown as Record<string, unknown>,
        retain: cfg.saveRetain,
      });
      sayClean(
        `saved checkpoint ${saved.dir} (${(saved.totalBytes / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(2)} s`,
      );
      return saved.dir;
    };

    const started = performance.now();
    let interval = { t0: performance.now(), iterations: 0, lossSum: 0, lossCount: 0, skipped: 0, nan: 0, tokens: 0 };
    let lastLoss: number | null = null;
    let lastVal: number | null = null;
    let bestVal: number | null = null;
    let lastGradNorm: number | null = null;
    let lastCheckpoint: string | null = null;
    const trainCurve: { x: number; y: number }[] = [];
    const validCurve: { x: number; y: number }[] = [];
    let trainedTokens = 0;
    let memory: { measured: number; predicted: number; activationsPeak: number } | null = null;

    const stepTimer = cfg.timing ? new StepTimer(ctx, rank, cfg.runDir) : null;
    let lastTimed = 0;
    while (iteration < cfg.trainIters) {
      iteration += 1;
      const stepStart = performance.now();
      stepTimer?.begin(ddp.phases);
      optimizer.learningRate = learningRate(schedule, optimizer.stepCount);
      ddp.zeroGradBuffer();
      const scale = optimizer.scaler?.scale ?? 1;
      let localLoss = 0;
      const batchStart = consumedSamples;
      for (let m = 0; m < cfg.gradAccumulation; m++) {
        const first = batchStart + rank * perRank + m * cfg.microBatchSize;
        const { ids, targets } = await ddp.phases.time('data', async () => trainSamples.batch(first, cfg.microBatchSize));
        const last = m === cfg.gradAccumulation - 1;
        const g = new Graph(ctx, { seed: cfg.seed, samples: { first, count: cfg.microBatchSize } });
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
        const micro = async () => {
          const idsT = g.input(ids, [cfg.microBatchSize, cfg.seqLength], 'ids');
          const targetsT = g.input(targets, [targets.length], 'targets');
          const { loss } = await phase('forward', async () =>
            cfg.overlapParamGather ? gpt.forwardAwaiting(g, idsT, targetsT, ready) : gpt.forward(g, idsT, targetsT),
          );
          // The mean over the micro-batches (and, through DDP's average, over the ranks); fp16: times the loss scale.
          await phase('backward', async () =>
            g.backwardFrom(
              loss!,
              new Float32Array([scale / cfg.gradAccumulation]),
              last && cfg.overlapGradReduce ? { onParamGrad: (name) => ddp.registerGradReady(name) } : {},
            ),
          );
          return loss!;
        };
        const forwardBackward = async () => {
          const loss = last ? await micro() : await ddp.noSync(micro);
          localLoss += (await g.read(loss))[0]!;
        };
        await (stepTimer ? forwardBackward() : ddp.phases.time('forward+backward', forwardBackward));
        g.release();
      }
      await ddp.phases.time('grad sync wait', () => ddp.finishGradSync());
      // Before the step: with --overlap-param-gather the step returns with all-gathers still being
      // issued, and every rank must issue its collectives in the same order.
      const lossSum = new Float32Array([localLoss]);
      await group.allReduce(lossSum, 'sum');
      const loss = lossSum[0]! / (cfg.gradAccumulation * d);
      const result = await ddp.phases.time('optimizer step', () => optimizer.step());
      consumedSamples += cfg.globalBatchSize;
      const tokens = cfg.globalBatchSize * cfg.seqLength;
      trainedTokens += tokens;
      const nan = !Number.isFinite(loss) || (!result.skipped && !Number.isFinite(result.gradNorm));
      if (nan && cfg.checkForNanInLossAndGrad && cfg.precision !== 'fp16') {
        // The earliest param over all ranks: max of (count - index). After the gathers, for the order of collectives.
        await ddp.finishParamSync();
        const found = new Float32Array([order.length - (await firstBadGrad(ddp, order))]);
        await group.allReduce(found, 'max');
        const k = order.length - found[0]!;
        const where = k < order.length ? `the grad of '${order[k]}' holds a NaN or infinity` : 'no grad holds a NaN or infinity';
        throw new TrainingError(
          `iteration ${iteration}: lm loss ${loss}, grad norm ${result.gradNorm}: ${where}; stopping (--no-check-for-nan-in-loss-and-grad trains on)`,
        );
      }
      if (result.skipped) {
        skippedTotal += 1;
        interval.skipped += 1;
      }
      if (nan) {
        nanTotal += 1;
        interval.nan += 1;
      }
      if (!result.skipped && Number.isFinite(loss)) {
        interval.lossSum += loss;
        interval.lossCount += 1;
        lastGradNorm = result.gradNorm;
      }
      interval.iterations += 1;
      interval.tokens += tokens;
      lastLoss = loss;
      const timing = stepTimer ? await stepTimer.end(iteration, ddp.phases) : null;
      if (timing) {
        lastTimed = iteration;
        if (isRank0) sayClean(timingLine(timing));
      }
      const stepMs = performance.now() - stepStart;
      progress.update(
        iteration,
        `lm loss ${Number.isFinite(loss) ? loss.toFixed(3) : loss} | ${(tokens / (stepMs / 1000)).toFixed(0)} tokens/s`,
      );

      if (memory === null) {
        const live = ctx.memoryReport();
        const predicted = modelStateBytes(layout, rank);
        const modelState = (r: Record<string, number>) =>
          ['params', 'grads', 'main-params', 'optimizer-state'].reduce((sum, c) => sum + (r[c] ?? 0), 0);
        memory = { measured: modelState(live.live), predicted: predicted.total, activationsPeak: live.peak.activations };
        if (isRank0)
          sayClean(
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
                fp16Grads: cfg.precision === 'fp16',
                attention: ctx.attentionKernel,
              }),
            ),
          );
      }
      const metrics: MetricsLine | null =
        iteration % cfg.logInterval === 0 || iteration === cfg.trainIters
          ? (() => {
              const elapsed = performance.now() - interval.t0;
              const avg = interval.lossCount > 0 ? interval.lossSum / interval.lossCount : null;
              const lr = learningRate(schedule, optimizer.stepCount);
              const tokensPerS = interval.tokens / (elapsed / 1000);
              sayClean(
                megatronLine({
                  time: new Date(),
                  iteration,
                  trainIters: cfg.trainIters,
                  consumedSamples,
                  msPerIteration: elapsed / interval.iterations,
                  lr,
                  globalBatchSize: cfg.globalBatchSize,
                  loss: avg,
                  lossScale: optimizer.scaler?.scale ?? 1,
                  gradNorm: lastGradNorm,
                  skipped: interval.skipped,
                  nan: interval.nan,
                  tokensPerS,
                }),
              );
              if (avg !== null) trainCurve.push({ x: iteration, y: avg });
              const line: MetricsLine = {
                iteration,
                consumed_samples: consumedSamples,
                loss: avg ?? NaN,
                lr,
                grad_norm: lastGradNorm,
                loss_scale: optimizer.scaler?.scale ?? null,
                skipped: interval.skipped,
                nan_iterations: interval.nan,
                tokens_per_s: tokensPerS,
                step_ms: elapsed / interval.iterations,
                phases: Object.fromEntries(Object.entries(ddp.phases.ms).map(([k, v]) => [k, v / interval.iterations])),
              };
              ddp.phases.reset();
              interval = { t0: performance.now(), iterations: 0, lossSum: 0, lossCount: 0, skipped: 0, nan: 0, tokens: 0 };
              return line;
            })()
          : null;
      let evalLine: MetricsLine | null = null;
      if (iteration % cfg.evalInterval === 0 || iteration === cfg.trainIters) {
        const t0 = performance.now();
        const val = await evaluate();
        if (val !== null) {
          lastVal = val;
          bestVal = bestVal === null ? val : Math.min(bestVal, val);
          validCurve.push({ x: iteration, y: val });
          sayClean(
            `${'-'.repeat(100)}\n validation loss at iteration ${iteration} | lm loss value: ${sci(val)} | lm loss PPL: ${sci(Math.exp(val))} | (${((performance.now() - t0) / 1000).toFixed(1)} s)\n${'-'.repeat(100)}`,
          );
          evalLine = { iteration, consumed_samples: consumedSamples, val_loss: val };
        }
        interval.t0 += performance.now() - t0; // evaluation time is not training time
      }
      if (run && (metrics || evalLine || timing))
        run.metric({
          ...(metrics ?? { iteration, consumed_samples: consumedSamples }),
          ...(evalLine ? { val_loss: evalLine.val_loss } : {}),
          ...(timing ? { timing } : {}),
        } as MetricsLine);
      if (cfg.save && ((cfg.saveInterval && iteration % cfg.saveInterval === 0) || iteration === cfg.trainIters)) {
        const t0 = performance.now();
        lastCheckpoint = (await save()) ?? lastCheckpoint;
        interval.t0 += performance.now() - t0;
      }
    }
    await ddp.finishParamSync();
    progress.finish();
    const elapsed = (performance.now() - started) / 1000;
    const summary: TrainSummary = {
      iterations: iteration,
      consumed_samples: consumedSamples,
      final_loss: lastLoss,
      final_val_loss: lastVal,
      best_val_loss: bestVal,
      tokens_per_s: trainedTokens / elapsed,
      elapsed_s: elapsed,
      params: paramCount,
      unigram_entropy: reference.unigram,
      bigram_entropy: reference.bigram,
      run_dir: cfg.runDir,
      checkpoint: lastCheckpoint,
      model_state_bytes_per_rank: memory?.measured ?? null,
      predicted_model_state_bytes_per_rank: memory?.predicted ?? null,
      activations_peak_bytes: memory?.activationsPeak ?? null,
    };
    if (run) {
      run.writeSummary(summary as unknown as Record<string, unknown>);
      if (trainCurve.length > 0)
        run.writeChart(
          trainCurve,
          validCurve,
          reference,
          `${paramCount.toLocaleString('en-US')}-param GPT on ${data.name.replace(/ \(.*\)$/, '')}, ${d} rank${d === 1 ? '' : 's'}`,
        );
      say(
        `webtron train: done in ${elapsed.toFixed(1)} s, ${summary.tokens_per_s.toFixed(0)} tokens/s; final lm loss ${lastLoss?.toFixed(4)}, validation ${lastVal?.toFixed(4) ?? '-'} (${reference.bigram === null ? `unigram entropy ${reference.unigram.toFixed(4)}` : `bigram entropy ${reference.bigram.toFixed(4)}`}); ${cfg.runDir}/loss.svg`,
      );
    }
    if (stepTimer) {
      // Every rank has written its file: rank 0 draws the last timed iteration of the ranks on its node.
      await group.barrier();
      if (isRank0 && lastTimed > 0 && stepTimer.dir) {
        const svg = writeTimeline(stepTimer.dir, d, lastTimed, `${paramCount.toLocaleString('en-US')}-param GPT`);
        say(`webtron train: timeline of iteration ${lastTimed} on ${svg}`);
      }
      stepTimer.destroy();
    }
    optimizer.destroy();
    ddp.destroy();
    await group.barrier();
    return summary;
  } finally {
    closeData();
    await dist.close().catch(() => undefined);
  }
}
