/**
 * `webtron train --timing`: every phase of every iteration on every rank. Each rank records the
 * wall-clock span of each phase (PhaseTimes.spans), the GPU time of its forward and backward passes
 * from timestamp queries where the adapter has them, and the idle time no phase covers; it appends
 * one JSON line per iteration to timing-rank<r>.jsonl in the run folder, and rank 0 prints a line per
 * iteration. At the end, rank 0 draws one iteration of every rank on its node as timeline.svg.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { uncovered, type PhaseSpan, type PhaseTimes } from '../ddp/phases.js';
import type { GpuContext } from '../gpu/context.js';
import { GpuTimer } from '../gpu/timer.js';
import { writeFileAtomic } from '../files.js';

export interface IterationTiming {
  iteration: number;
  rank: number;
  /** Start of the iteration, ms of the Unix epoch. */
  start: number;
  step_ms: number;
  /** Wall-clock ms per phase, summed over its calls (phases may nest or overlap). */
  phases: Record<string, number>;
  /** GPU ms of the passes begun in each phase (forward, backward), from timestamp queries; null without them. */
  gpu_ms: Record<string, number> | null;
  /** ms of the iteration no phase covers. */
  idle_ms: number;
  /** Every phase call, ms from the iteration's start. */
  spans: { phase: string; start: number; end: number }[];
}

export class StepTimer {
  /** Timestamps for the graph's passes, when the adapter has them. */
  readonly gpu: GpuTimer | null;
  private readonly file: string | null = null;
  private start = 0;

  /** `dir`: the run folder (null: nothing written). */
  constructor(
    ctx: GpuContext,
    private readonly rank: number,
    readonly dir: string | null,
  ) {
    this.gpu = ctx.hasTimestamps ? new GpuTimer(ctx) : null;
    if (dir) {
      mkdirSync(dir, { recursive: true });
      this.file = timingFile(dir, rank);
      writeFileAtomic(this.file, '');
    }
  }

  begin(phases: PhaseTimes): void {
    phases.spans = [];
    this.start = performance.timeOrigin + performance.now();
  }

  /** The label of the GPU passes begun from now on. */
  label(name: string): void {
    if (this.gpu) this.gpu.label = name;
  }

  async end(iteration: number, phases: PhaseTimes): Promise<IterationTiming> {
    const end = performance.timeOrigin + performance.now();
    const spans: PhaseSpan[] = phases.spans ?? [];
    phases.spans = null;
    const gpu = this.gpu ? (await this.gpu.read()).ms : null;
    const summed: Record<string, number> = {};
    for (const s of spans) summed[s.phase] = (summed[s.phase] ?? 0) + s.end - s.start;
    const record: IterationTiming = {
      iteration,
      rank: this.rank,
      start: this.start,
      step_ms: end - this.start,
      phases: round(summed),
      gpu_ms: gpu && round(gpu),
      idle_ms: r3(uncovered(spans, this.start, end)),
      spans: spans.map((s) => ({ phase: s.phase, start: r3(s.start - this.start), end: r3(s.end - this.start) })),
    };
    if (this.file) appendFileSync(this.file, `${JSON.stringify(record)}\n`);
    return record;
  }

  destroy(): void {
    this.gpu?.destroy();
  }
}

const r3 = (v: number) => Math.round(v * 1000) / 1000;
const round = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, r3(v)]));

export function timingFile(dir: string, rank: number): string {
  return join(dir, `timing-rank${rank}.jsonl`);
}

/** One line for a person: the step, each phase (with its GPU time), the idle time. */
export function timingLine(t: IterationTiming): string {
  const phases = Object.entries(t.phases)
    .map(([k, v]) => `${k} ${v.toFixed(1)}${t.gpu_ms?.[k] !== undefined ? ` (GPU ${t.gpu_ms[k]!.toFixed(1)})` : ''}`)
    .join(' | ');
  return ` timing | iteration ${t.iteration} | rank ${t.rank} | step ${t.step_ms.toFixed(1)} ms | ${phases} | idle ${t.idle_ms.toFixed(1)}`;
}

/** The records of `iteration` from every rank's file in `dir` (ranks 0 … world - 1 whose file is there). */
export function readIteration(dir: string, world: number, iteration: number): IterationTiming[] {
  const out: IterationTiming[] = [];
  for (let r = 0; r < world; r++) {
    const file = timingFile(dir, r);
    if (!existsSync(file)) continue;
    const line = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as IterationTiming)
      .find((t) => t.iteration === iteration);
    if (line) out.push(line);
  }
  return out;
}

/** Colors of the phases in the timeline (communication warm, compute cool). */
export const PHASE_COLORS: Record<string, string> = {
  data: '#bbbbbb',
  forward: '#4e79a7',
  backward: '#76b7b2',
  'grad readback': '#f28e2b',
  'reduce-scatter': '#e15759',
  'all-reduce': '#e15759',
  'grad upload': '#ff9da7',
  'grad sync wait': '#d3d3d3',
  'grad norm': '#59a14f',
  unscale: '#8cd17d',
  adam: '#2f8f3a',
  sgd: '#2f8f3a',
  lion: '#2f8f3a',
  'param readback': '#edc948',
  'all-gather': '#b07aa1',
  'param upload': '#9c755f',
  'optimizer step': '#e8e8e8',
};

/** timeline.svg in `dir`: iteration `iteration` of every rank whose timing file has it; returns its path (null: no rank there has it). */
export async function writeTimeline(dir: string, world: number, iteration: number, what: string): Promise<string | null> {
  const { timelineSvg } = await import('../plot/svg.js');
  const records = readIteration(dir, world, iteration);
  if (records.length === 0) return null; // no rank in this folder timed it (--profile-ranks)
  const t0 = Math.min(...records.map((r) => r.start));
  const lanes = records.map((r) => ({
    label: `rank ${r.rank}`,
    spans: r.spans.map((s) => ({ phase: s.phase, start: s.start + r.start - t0, end: s.end + r.start - t0 })),
  }));
  const path = join(dir, 'timeline.svg');
  writeFileAtomic(
    path,
    timelineSvg(lanes, PHASE_COLORS, {
      title: `${what}: iteration ${iteration}, ${records.length} rank${records.length === 1 ? '' : 's'}`,
      xLabel: "ms from the first rank's start of the iteration",
    }),
  );
  return path;
}
