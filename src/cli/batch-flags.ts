/**
 * A global batch that grows with the samples consumed, Megatron's two ways:
 * --step-batch-size-schedule "THRESHOLD:BATCH ..." (its current flag: from THRESHOLD tokens on, a
 * global batch of BATCH; K, M, B and T multiply by a thousand, million, billion, trillion) and
 * --rampup-batch-size START INCREMENT SAMPLES (its older one, in GPT-3's recipe: from START to
 * --global-batch-size in steps of INCREMENT, spread evenly over SAMPLES samples). Either needs a run
 * in samples (--train-samples), whose iterations it counts as Megatron's update_train_iters does.
 */
import { globalBatchAt } from '../train/config.js';
import { FlagError, type FlagValues } from './flags.js';

export type BatchSizeSchedule = [samples: number, batch: number][];

/** The schedule the flags give, and how many iterations `trainSamples` samples take with it. */
export interface BatchSizeFlags {
  schedule: BatchSizeSchedule;
  globalBatchSize: number;
  iterations: (trainSamples: number) => number;
}

const SUFFIX: Record<string, number> = { '': 1, K: 1e3, M: 1e6, B: 1e9, T: 1e12 };

const EXAMPLE = 'give e.g. "0:256 1B:512" (thresholds in tokens)';

/** The one line for an entry of --step-batch-size-schedule that is no THRESHOLD:BATCH. */
const notAnEntry = (entry: string) => new FlagError(`--step-batch-size-schedule: '${entry}' is not THRESHOLD:BATCH; ${EXAMPLE}`);

/** 250B, 1.5M, 768: a count as Megatron's schedule parser reads it. */
function count(text: string, entry: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMBT]?)$/i.exec(text.trim());
  if (!m) throw notAnEntry(entry);
  return Math.floor(Number(m[1]) * SUFFIX[m[2]!.toUpperCase()]!);
}

/** --step-batch-size-schedule's entries: thresholds in tokens, made samples (floor of tokens / seq length). */
function stepSchedule(text: string, seqLength: number): BatchSizeSchedule {
  const entries = text.replace(/,/g, ' ').trim().split(/\s+/).filter(Boolean);
  if (entries.length === 0) throw new FlagError(`--step-batch-size-schedule is empty; ${EXAMPLE}`);
  const schedule = entries.map((entry): [number, number] => {
    const [threshold, batch, extra] = entry.split(':');
    if (batch === undefined || extra !== undefined) throw notAnEntry(entry);
    const size = count(batch, entry);
    if (size < 1) throw new FlagError(`--step-batch-size-schedule: '${entry}' has a batch of 0; every batch must be at least 1`);
    return [Math.floor(count(threshold!, entry) / seqLength), size];
  });
  schedule.sort((a, b) => a[0] - b[0]);
  if (schedule[0]![0] !== 0)
    throw new FlagError(
      `--step-batch-size-schedule must start at threshold 0 (the batch to begin with); its first is ${schedule[0]![0] * seqLength} tokens`,
    );
  for (let i = 1; i < schedule.length; i++)
    if (schedule[i]![0] === schedule[i - 1]![0])
      throw new FlagError(
        `--step-batch-size-schedule: two thresholds fall on sample ${schedule[i]![0]} (thresholds are tokens, ${seqLength} per sample); give each its own sample`,
      );
  return schedule;
}

/**
 * --rampup-batch-size START INCREMENT SAMPLES as thresholds: the k-th increment from the first
 * consumed count c where Megatron's int(c / (SAMPLES / increments)) reaches k (its float division
 * kept, so that the batches are Megatron's at every count), the whole batch after SAMPLES.
 */
function rampupSchedule(words: string[], globalBatchSize: number): { schedule: BatchSizeSchedule; rampupSamples: number } {
  const values = words.map(Number);
  if (values.length !== 3 || !values.every((x) => Number.isSafeInteger(x)))
    throw new FlagError(
      `--rampup-batch-size takes three integers, START INCREMENT SAMPLES (e.g. --rampup-batch-size 32 32 2000000), got '${words.join(' ')}'`,
    );
  const [start, increment, samples] = values as [number, number, number];
  if (start < 1 || start > globalBatchSize)
    throw new FlagError(`--rampup-batch-size: START ${start} must be from 1 to --global-batch-size ${globalBatchSize}`);
  if (increment < 1 || (globalBatchSize - start) % increment !== 0)
    throw new FlagError(
      `--rampup-batch-size: INCREMENT ${increment} must be at least 1 and divide --global-batch-size ${globalBatchSize} - START ${start} = ${globalBatchSize - start}`,
    );
  if (samples < 1) throw new FlagError(`--rampup-batch-size: SAMPLES ${samples} must be at least 1`);
  const increments = (globalBatchSize - start) / increment;
  const perIncrement = samples / increments;
  const reached = (consumed: number) => Math.floor(consumed / perIncrement);
  const schedule: BatchSizeSchedule = [[0, start]];
  for (let k = 1; k <= increments; k++) {
    let from = Math.ceil(k * perIncrement);
    while (from > 0 && reached(from - 1) >= k) from--;
    while (reached(from) < k) from++;
    schedule.push([Math.min(from, samples + 1), start + k * increment]);
  }
  // Increments that fall on the same sample (SAMPLES < increments): the last of them holds from there.
  const merged = schedule.filter((entry, i) => i === schedule.length - 1 || schedule[i + 1]![0] !== entry[0]);
  return { schedule: merged, rampupSamples: samples };
}

/** The flags' batch-size schedule, null without one; checked against the micro-batch and d. */
export function batchSizeFlags(v: FlagValues, microBatchSize: number, d: number, seqLength: number): BatchSizeFlags | null {
  const step = v['step-batch-size-schedule'] as string | undefined;
  const rampup = v['rampup-batch-size'] as string[] | undefined;
  if (step === undefined && rampup === undefined) return null;
  if (step !== undefined && rampup !== undefined)
    throw new FlagError('--step-batch-size-schedule and --rampup-batch-size exclude each other: give one batch-size schedule');
  const flag = step !== undefined ? '--step-batch-size-schedule' : '--rampup-batch-size';
  if (v['train-samples'] === undefined)
    throw new FlagError(`${flag} needs a run in samples: give --train-samples (and the -samples schedule flags) instead of --train-iters`);
  let schedule: BatchSizeSchedule;
  let globalBatchSize: number;
  let iterations: (trainSamples: number) => number;
  if (step !== undefined) {
    if (v['global-batch-size'] !== undefined)
      throw new FlagError('--step-batch-size-schedule and --global-batch-size exclude each other: the schedule gives every global batch');
    schedule = stepSchedule(step, seqLength);
    globalBatchSize = schedule.at(-1)![1];
    const cfg = { globalBatchSize, batchSizeSchedule: schedule };
    // Megatron's update_train_iters for a step schedule: iterations until the samples are reached.
    iterations = (trainSamples) => {
      let n = 0;
      for (let consumed = 0; consumed < trainSamples; n++) consumed += globalBatchAt(cfg, consumed);
      return n;
    };
  } else {
    if (v['global-batch-size'] === undefined)
      throw new FlagError('--rampup-batch-size needs --global-batch-size (the batch it ramps up to)');
    globalBatchSize = v['global-batch-size'] as number;
    const ramp = rampupSchedule(rampup!, globalBatchSize);
    schedule = ramp.schedule;
    const cfg = { globalBatchSize, batchSizeSchedule: schedule };
    // Megatron's update_train_iters for a rampup: the rampup's iterations, then whole global batches.
    iterations = (trainSamples) => {
      let n = 0;
      let consumed = 0;
      for (; consumed <= ramp.rampupSamples && consumed <= trainSamples; n++) consumed += globalBatchAt(cfg, consumed);
      return n + (trainSamples > consumed ? Math.floor((trainSamples - consumed) / globalBatchSize) : 0);
    };
  }
  for (const [from, batch] of schedule)
    if (batch % (microBatchSize * d) !== 0)
      throw new FlagError(
        `${flag}: the global batch ${batch} (from sample ${from}) is not divisible by --micro-batch-size ${microBatchSize} × data-parallel size ${d} = ${microBatchSize * d}`,
      );
  return { schedule, globalBatchSize, iterations };
}
