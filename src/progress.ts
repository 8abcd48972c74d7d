/** What draws a long job's progress (the CLI's bar on a terminal): the amount done, a clear before another line, an end. */
export interface ProgressDisplay {
  update(done: number, note: string): void;
  /** Clear the display before another line is printed. */
  clear(): void;
  finish(): void;
}

/** Shows nothing. */
export const NO_PROGRESS: ProgressDisplay = { update: () => undefined, clear: () => undefined, finish: () => undefined };
