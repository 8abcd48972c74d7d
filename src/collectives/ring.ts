/**
 * Ring schedules, pure: which chunk a rank sends and receives at each step, chunk boundaries for
 * any length, and segments for pipelining. No sockets here; the process group drives these.
 */

/** Elements [start, end) of a buffer. */
export interface Range {
  start: number;
  end: number;
}

/** Chunk `c` of `length` elements split into `n` nearly equal chunks (earlier chunks never larger). */
export function chunkRange(length: number, n: number, c: number): Range {
  return { start: Math.floor((c * length) / n), end: Math.floor(((c + 1) * length) / n) };
}

export function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/**
 * Reduce-scatter ring, n-1 steps. At step k rank r sends chunk (r-k-1) to its right neighbour and
 * receives chunk (r-k-2) from its left one, adding it into its own copy; after the last step rank r
 * holds the fully reduced chunk r. The chunk received at step k is the one sent at step k+1.
 */
export function reduceScatterStep(rank: number, n: number, step: number): { send: number; recv: number } {
  return { send: mod(rank - step - 1, n), recv: mod(rank - step - 2, n) };
}

/**
 * All-gather ring, n-1 steps. Rank r starts with chunk r; at step k it sends chunk (r-k) and receives
 * chunk (r-k-1), which it forwards at step k+1.
 */
export function allGatherStep(rank: number, n: number, step: number): { send: number; recv: number } {
  return { send: mod(rank - step, n), recv: mod(rank - step - 1, n) };
}

/** Split [start, end) into segments of at most `segment` elements (at least one, possibly empty). */
export function segments(range: Range, segment: number): Range[] {
  const out: Range[] = [];
  for (let s = range.start; s < range.end; s += segment) out.push({ start: s, end: Math.min(s + segment, range.end) });
  return out;
}

/** Dissemination barrier: in round k rank r signals (r + 2^k) and waits for (r - 2^k). */
export function barrierRounds(rank: number, n: number): { to: number; from: number }[] {
  const rounds: { to: number; from: number }[] = [];
  for (let d = 1; d < n; d *= 2) rounds.push({ to: mod(rank + d, n), from: mod(rank - d, n) });
  return rounds;
}
