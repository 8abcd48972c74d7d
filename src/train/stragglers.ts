/**
 * --log-straggler: which rank holds the others up. In synchronous data parallelism every rank's
 * step takes as long as the slowest one's: the others wait for it in the grad sync. So a rank's own
 * time is its step minus that wait; the rank with the most is the straggler, and its slowest phase
 * is the one furthest above the ranks' median: data loading, compute (everything else it does
 * itself), or the grad sync (a slow link).
 */

/** One rank's milliseconds per iteration over a log interval. */
export interface RankTimes {
  step: number;
  data: number;
  /** Waiting for the grad sync to finish after the backward pass. */
  gradSync: number;
}

export const STRAGGLER_PHASES = ['data', 'compute', 'grad sync'] as const;
export type StragglerPhase = (typeof STRAGGLER_PHASES)[number];

export interface StragglerReport {
  step: { min: number; median: number; max: number };
  own: { min: number; median: number; max: number };
  /** Ranks by own time: the `count` slowest first, and the `count` fastest. */
  slowest: { rank: number; ms: number }[];
  fastest: { rank: number; ms: number }[];
  /** The slowest rank's phase furthest above the median, and by how much. */
  phase: StragglerPhase;
  excessMs: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

const spread = (xs: number[]) => ({ min: Math.min(...xs), median: median(xs), max: Math.max(...xs) });

/** The report over every rank's times (index = rank); `count`: Megatron's --straggler-minmax-count. */
export function stragglerReport(times: readonly RankTimes[], count = 1): StragglerReport {
  const own = times.map((t) => t.step - t.gradSync);
  const phases = times.map((t) => ({ data: t.data, compute: t.step - t.data - t.gradSync, 'grad sync': t.gradSync }));
  const ranked = own.map((ms, rank) => ({ rank, ms })).sort((a, b) => b.ms - a.ms || a.rank - b.rank);
  const slow = ranked[0]!.rank;
  let phase: StragglerPhase = 'compute';
  let excessMs = -Infinity;
  for (const p of STRAGGLER_PHASES) {
    const excess = phases[slow]![p] - median(phases.map((x) => x[p]));
    if (excess > excessMs) [phase, excessMs] = [p, excess];
  }
  const n = Math.min(count, times.length);
  return {
    step: spread(times.map((t) => t.step)),
    own: spread(own),
    slowest: ranked.slice(0, n),
    fastest: ranked.slice(-n).reverse(),
    phase,
    excessMs,
  };
}

/** The log line: 'stragglers: step 105.2 ms min, … own time …: rank 1 is slowest, in data (+70.0 ms over the median)'. */
export function stragglerLine(r: StragglerReport): string {
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  const ranks = (list: { rank: number; ms: number }[]) => list.map((x) => `rank ${x.rank} ${ms(x.ms)}`).join(', ');
  return (
    `stragglers: step ${ms(r.step.min)} min, ${ms(r.step.median)} median, ${ms(r.step.max)} max; ` +
    `own time (step minus waiting for the grad sync) ${ms(r.own.min)} min, ${ms(r.own.median)} median, ${ms(r.own.max)} max; ` +
    `slowest ${ranks(r.slowest)}; fastest ${ranks(r.fastest)}: rank ${r.slowest[0]!.rank} is slowest, in ${r.phase} (+${ms(r.excessMs)} over the median)`
  );
}
