/**
 * Faults injected on purpose, for the tests that prove a run survives them. Each is off unless its
 * environment variable is set; none changes anything a run computes while it is off.
 *
 *   WEBTRON_FAULT_STALL_SAVE=N           every rank's writer of iteration N's save (sync or
 *                                        --async-save) stops before its last file: a crash or a
 *                                        dead link mid-save is then easy to stage
 *   WEBTRON_FAULT_CORRUPT_PARAM=N:R      after iteration N, rank R adds 1 to its first param (a
 *                                        replica drifting, for --check-weight-hash-across-dp-replicas-interval)
 *   WEBTRON_FAULT_SLOW_DATA=R:MS         rank R sleeps MS milliseconds in every micro-batch's data
 *                                        loading (a straggler, for --log-straggler)
 */

function numbers(name: string, count: number): number[] | null {
  const text = process.env[name];
  if (!text) return null;
  const parts = text.split(':').map(Number);
  if (parts.length !== count || !parts.every(Number.isSafeInteger))
    throw new Error(`${name}='${text}': expected ${count} integer(s) joined by ':'`);
  return parts;
}

/** Whether the writer of `iteration`'s save stalls. */
export function stallSave(iteration: number): boolean {
  return numbers('WEBTRON_FAULT_STALL_SAVE', 1)?.[0] === iteration;
}

/** Milliseconds `rank` sleeps in each micro-batch's data loading (0: none). */
export function slowData(rank: number): number {
  const at = numbers('WEBTRON_FAULT_SLOW_DATA', 2);
  return at !== null && at[0] === rank ? at[1]! : 0;
}

/** Whether `rank` corrupts its params after `iteration`. */
export function corruptParam(iteration: number, rank: number): boolean {
  const at = numbers('WEBTRON_FAULT_CORRUPT_PARAM', 2);
  return at !== null && at[0] === iteration && at[1] === rank;
}
