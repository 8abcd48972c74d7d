import type { ProgressDisplay } from '../progress.js';

/** A one-line progress bar for a terminal (rank 0 of `webtron train`, `webtron preprocess-data`): redrawn in place, cleared before other output. */
export class ProgressBar implements ProgressDisplay {
  private shown = false;
  private readonly started = Date.now();

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream | { write(s: string): boolean },
    private readonly enabled: boolean,
  ) {}

  update(done: number, note: string): void {
    if (!this.enabled) return;
    const width = 24;
    const filled = Math.round((done / this.total) * width);
    const elapsed = (Date.now() - this.started) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.total - done) : NaN;
    const time = (s: number) => (Number.isFinite(s) ? `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}` : '?');
    this.out.write(
      `\r\u001b[K[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${this.total} ${note} | ${time(elapsed)} elapsed, ${time(eta)} left`,
    );
    this.shown = true;
  }

  /** Clear the bar (before printing a line). */
  clear(): void {
    if (this.shown) this.out.write('\r\u001b[K');
    this.shown = false;
  }

  finish(): void {
    if (this.enabled && this.shown) this.out.write('\n');
    this.shown = false;
  }
}
