/** One timed call: the phase, and its start and end in milliseconds of the Unix epoch (comparable across processes of a machine). */
export interface PhaseSpan {
  phase: string;
  start: number;
  end: number;
}

/**
 * Wall-clock time per named phase of a training step, summed over calls (for benchmarks and logs);
 * while `spans` is an array, every call is also recorded there (`webtron train --timing`).
 */
export class PhaseTimes {
  readonly ms: Record<string, number> = {};
  spans: PhaseSpan[] | null = null;

  async time<T>(name: string, work: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      const t1 = performance.now();
      this.ms[name] = (this.ms[name] ?? 0) + t1 - t0;
      this.spans?.push({ phase: name, start: performance.timeOrigin + t0, end: performance.timeOrigin + t1 });
    }
  }

  reset(): void {
    for (const key of Object.keys(this.ms)) delete this.ms[key];
  }
}

/** Milliseconds of [start, end) that no span covers. */
export function uncovered(spans: readonly PhaseSpan[], start: number, end: number): number {
  let covered = 0;
  let reach = start;
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    const from = Math.max(s.start, reach);
    const to = Math.min(s.end, end);
    if (to > from) covered += to - from;
    reach = Math.max(reach, s.end);
  }
  return Math.max(0, end - start - covered);
}
