/**
 * What a training run shows and keeps (rank 0): Megatron's log line every --log-interval
 * iterations, a progress bar on a terminal, and the run folder: config.json (every resolved flag),
 * metrics.jsonl (one object per logged iteration), summary.json and loss.svg at the end.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';
import { formatBytes } from '../gpu/memory.js';
import type { IterationTiming } from './timing.js';
import type { RankTimes, StragglerReport } from './stragglers.js';

export interface MetricsLine {
  iteration: number;
  consumed_samples: number;
  loss?: number;
  lr?: number;
  grad_norm?: number | null;
  loss_scale?: number | null;
  skipped?: number;
  nan_iterations?: number;
  tokens_per_s?: number;
  step_ms?: number;
  val_loss?: number;
  phases?: Record<string, number>;
  /** Payload bytes rank 0 sent to its peers per iteration over the interval (every collective). */
  sent_bytes_per_iteration?: number;
  /** --timing: this iteration on rank 0, phase by phase. */
  timing?: IterationTiming;
  /** --log-params-norm: the L2 norm of the main params after this iteration. */
  params_norm?: number;
  /** --log-num-zeros-in-grad: the grad elements that were exactly zero at the last step (null: it was skipped). */
  num_zeros?: number | null;
  /** Rank 0's live GPU bytes by category (those not zero) at the logged iteration. */
  memory_bytes?: Record<string, number>;
  /** --log-straggler: every rank's times over the interval and who held the others up. */
  stragglers?: StragglerReport & { ranks: RankTimes[] };
  /** --log-throughput: model TFLOP/s per rank over the interval (Megatron's formula) and MFU. */
  throughput_tflops_per_rank?: number;
  mfu?: number;
}

const pad = (n: number, width: number) => String(n).padStart(width);

/** Megatron's one decimal, or three significant digits below 1 TFLOP/s (CPU drivers, tiny models). */
const tflopsText = (x: number) => (x >= 1 ? x.toFixed(1) : x.toPrecision(3));

/** Python's '{:.6E}': 1.234568E-04 (at least two exponent digits). */
export function sci(x: number): string {
  if (!Number.isFinite(x)) return String(x).toUpperCase().replace('INFINITY', 'INF');
  const [mantissa, exponent] = x.toExponential(6).split('e') as [string, string];
  const sign = exponent.startsWith('-') ? '-' : '+';
  return `${mantissa}E${sign}${exponent.replace(/^[+-]/, '').padStart(2, '0')}`;
}

/** Megatron's log line (its training_log, with webtron's tokens/s appended). */
export function megatronLine(o: {
  time: Date;
  iteration: number;
  trainIters: number;
  consumedSamples: number;
  msPerIteration: number;
  lr: number;
  globalBatchSize: number;
  loss: number | null;
  lossScale: number;
  gradNorm: number | null;
  /** --log-num-zeros-in-grad: the last step's grad elements that were zero (null: skipped). */
  numZeros?: number | null;
  skipped: number;
  nan: number;
  tokensPerS: number;
  /** --log-throughput: TFLOP/s per rank and MFU (a fraction). */
  throughput?: { tflops: number; mfu: number };
  /** --log-params-norm: the L2 norm of the main params after this iteration. */
  paramsNorm?: number;
}): string {
  const t = o.time;
  const two = (n: number) => String(n).padStart(2, '0');
  const stamp = `${t.getFullYear()}-${two(t.getMonth() + 1)}-${two(t.getDate())} ${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}`;
  const parts = [
    ` [${stamp}] iteration ${pad(o.iteration, 8)}/${pad(o.trainIters, 8)} |`,
    ` consumed samples: ${pad(o.consumedSamples, 12)} |`,
    ` elapsed time per iteration (ms): ${o.msPerIteration.toFixed(1)} |`,
    o.throughput
      ? ` throughput per GPU (TFLOP/s/GPU): ${tflopsText(o.throughput.tflops)} | MFU: ${(100 * o.throughput.mfu).toPrecision(3)}% |`
      : '',
    ` learning rate: ${sci(o.lr)} |`,
    ` global batch size: ${pad(o.globalBatchSize, 5)} |`,
    o.loss === null ? '' : ` lm loss: ${sci(o.loss)} |`,
    ` loss scale: ${o.lossScale.toFixed(1)} |`,
    o.gradNorm === null ? '' : ` grad norm: ${o.gradNorm.toFixed(3)} |`,
    o.numZeros === undefined || o.numZeros === null ? '' : ` num zeros: ${o.numZeros.toFixed(1)} |`,
    o.paramsNorm === undefined ? '' : ` params norm: ${o.paramsNorm.toFixed(3)} |`,
    ` number of skipped iterations: ${pad(o.skipped, 3)} |`,
    ` number of nan iterations: ${pad(o.nan, 3)} |`,
    ` tokens/s: ${o.tokensPerS.toFixed(1)} |`,
  ];
  return parts.join('');
}

/** The run folder (rank 0 only). */
export class RunFolder {
  readonly metricsPath: string;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    this.metricsPath = join(dir, 'metrics.jsonl');
  }

  writeConfig(config: Record<string, unknown>): void {
    writeFileAtomic(join(this.dir, 'config.json'), `${JSON.stringify(config, null, 1)}\n`);
  }

  metric(line: MetricsLine): void {
    appendFileSync(this.metricsPath, `${JSON.stringify(line)}\n`);
  }

  writeSummary(summary: Record<string, unknown>): void {
    writeFileAtomic(join(this.dir, 'summary.json'), `${JSON.stringify(summary, null, 1)}\n`);
  }

  /** loss.svg: train and validation loss against iteration, with the corpus's entropies as reference lines. */
  async writeChart(
    train: { x: number; y: number }[],
    valid: { x: number; y: number }[],
    reference: { unigram: number; bigram: number | null },
    title: string,
  ): Promise<void> {
    const { curveChartSvg } = await import('../plot/svg.js');
    const svg = curveChartSvg(
      [
        { name: 'train loss', color: '#1f77b4', points: train },
        { name: 'validation loss', color: '#d62728', points: valid, markers: true },
        {
          name: `unigram entropy ${reference.unigram.toFixed(2)}`,
          color: '#7f7f7f',
          points: [{ x: 0, y: reference.unigram }],
          reference: true,
        },
        ...(reference.bigram === null
          ? []
          : [
              {
                name: `bigram entropy ${reference.bigram.toFixed(2)}`,
                color: '#2ca02c',
                points: [{ x: 0, y: reference.bigram }],
                reference: true,
              },
            ]),
      ],
      { title, xLabel: 'iteration', yLabel: 'loss (nats per token)', yMin: 0, yFormat: (v) => v.toFixed(1) },
    );
    writeFileAtomic(join(this.dir, 'loss.svg'), svg);
  }
}

/** One line of this rank's GPU bytes by category beside what `webtron memory` predicts. */
export function memoryLine(
  rank: number,
  iterations: number,
  measured: Record<string, number>,
  peak: Record<string, number>,
  predicted: Record<string, number>,
  activations: number,
): string {
  const cells = ['params', 'grads', 'main-params', 'optimizer-state'].map(
    (c) =>
      `${c} ${formatBytes(measured[c] ?? 0)} (predicted ${formatBytes(predicted[c] ?? 0)}${measured[c] === predicted[c] ? ', equal' : ''})`,
  );
  cells.push(
    `activations peak ${formatBytes(peak.activations ?? 0)} (predicted for one micro-batch ${formatBytes(activations)}${peak.activations === activations ? ', equal' : ''})`,
    `staging ${formatBytes(measured.staging ?? 0)}`,
  );
  return `[Rank ${rank}] (after ${iterations} iteration${iterations === 1 ? '' : 's'}) GPU memory: ${cells.join(' | ')}`;
}
