/** Wall-clock time per named phase of a training step, summed over calls (for benchmarks and logs). */
export class PhaseTimes {
  readonly ms: Record<string, number> = {};

  async time<T>(name: string, work: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await work();
    } finally {
      this.ms[name] = (this.ms[name] ?? 0) + performance.now() - t0;
    }
  }

  reset(): void {
    for (const key of Object.keys(this.ms)) delete this.ms[key];
  }
}
