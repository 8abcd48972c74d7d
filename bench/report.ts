/** Benchmark output: an aligned table for people and, with --json, one JSON object per line. */

export type Row = Record<string, unknown>;

function cell(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 100 ? value.toFixed(1) : Math.abs(value) >= 1 ? value.toFixed(3) : value.toPrecision(3);
  }
  if (value !== null && typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

/** A Markdown table (also readable as plain text) of `rows` over `columns`. */
export function table(rows: Row[], columns: string[]): string {
  const cells = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) => `| ${values.map((v, i) => v.padStart(widths[i]!)).join(' | ')} |`;
  return [line(columns), `|${widths.map((w) => `${'-'.repeat(w + 1)}:`).join('|')}|`, ...cells.map(line)].join('\n');
}

/** A slug for file names: "mesa-llvmpipe-llvm-15-0-6-256-bits". */
export function slug(text: string): string {
  return (
    text
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 80) || 'unknown'
  );
}

/** Progress for long runs goes to stderr so stdout stays tables and JSON. */
export function progress(message: string): void {
  process.stderr.write(`  … ${message}\n`);
}
