/**
 * A log that cannot flood: at most `lines` lines per `windowMs`; what it drops is counted and said
 * in one line when the next window opens. For lines a stranger can cause (refused connections).
 */
export function rateLimitedLog(
  log: (line: string) => void,
  options: { lines?: number; windowMs?: number; what?: string } = {},
): (line: string) => void {
  const lines = options.lines ?? 10;
  const windowMs = options.windowMs ?? 60_000;
  const what = options.what ?? 'lines';
  let windowStart = -Infinity;
  let shown = 0;
  let dropped = 0;
  return (line: string) => {
    const now = Date.now();
    if (now - windowStart >= windowMs) {
      if (dropped > 0) log(`webtron: ${dropped} more ${what} in the last ${Math.round((now - windowStart) / 1000)} s not shown`);
      windowStart = now;
      shown = 0;
      dropped = 0;
    }
    if (shown < lines) {
      shown += 1;
      log(line);
    } else {
      dropped += 1;
    }
  };
}
