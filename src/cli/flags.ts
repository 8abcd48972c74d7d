/**
 * Command-line flags, pure: a spec per command, `--name value`, `--name=value` and boolean
 * `--name`, tokenized by Node's util.parseArgs; values are converted and checked here, and every
 * mistake is a one-line `FlagError` that names the flag and what to do.
 */
import { parseArgs } from 'node:util';
import { WebtronError } from '../errors.js';

export class FlagError extends WebtronError {
  override name = 'FlagError';
  override readonly code: string = 'ERR_FLAG';
}

/** 'strings': one or more values, as argparse's nargs='+' (`--data-path 0.7 A 0.3 B`): the words after the flag up to the next flag. */
export type FlagKind = 'string' | 'int' | 'number' | 'boolean' | 'list' | 'strings';

export interface FlagSpec {
  kind: FlagKind;
  help: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  default?: string | number | boolean | string[];
  /** A flag known to be refused: given, it is this one line (why, and what to do), not "unknown flag". */
  refused?: string;
  /** torchrun's flags: also taken spelled with underscores (`--nproc_per_node`), as torchrun takes them. */
  underscored?: boolean;
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

const BYTE_SUFFIXES: Record<string, number> = {
  '': 1,
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/** A size such as 80GiB, 24GB, 512MiB or a number of bytes, given to flag `--name`. */
export function parseBytes(text: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)$/i.exec(text.trim());
  const unit = m ? BYTE_SUFFIXES[m[2]!.toUpperCase()] : undefined;
  if (!m || unit === undefined || !(Number(m[1]) > 0))
    throw new FlagError(`--${name}: '${text}' is not a size; use e.g. 80GiB, 24GB or a number of bytes`);
  return Math.floor(Number(m[1]) * unit);
}

function convert(name: string, spec: FlagSpec, raw: string): string | number | boolean | string[] {
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'strings':
      return [raw];
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    case 'boolean':
      if (['1', 'true', 'yes', 'on', ''].includes(raw)) return true;
      if (['0', 'false', 'no', 'off'].includes(raw)) return false;
      throw new FlagError(`--${name}: expected true or false, got '${raw}'`);
    case 'int': {
      const value = Number(raw);
      if (!Number.isSafeInteger(value)) throw new FlagError(`--${name}: expected an integer, got '${raw}'`);
      return value;
    }
    case 'number': {
      const value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value)) throw new FlagError(`--${name}: expected a number, got '${raw}'`);
      return value;
    }
  }
}

/** Typed readers of a command's flag values (`specs` gives the help a missing one's error quotes), each a one-line FlagError for a missing or bad one. */
export function flagReader(v: FlagValues, specs: Record<string, FlagSpec>) {
  const int = (name: string, min: number): number => {
    const value = v[name];
    if (value === undefined) throw new FlagError(`--${name} is required (${specs[name]!.help})`);
    if (!Number.isInteger(value) || (value as number) < min)
      throw new FlagError(`--${name} must be an integer of at least ${min}, got ${String(value)}`);
    return value as number;
  };
  const optionalInt = (name: string, min: number): number | null => (v[name] === undefined ? null : int(name, min));
  const num = (name: string, ok: (x: number) => boolean, what: string): number => {
    const value = v[name];
    if (value === undefined) throw new FlagError(`--${name} is required (${specs[name]!.help})`);
    if (typeof value !== 'number' || !ok(value)) throw new FlagError(`--${name} must be ${what}, got ${String(value)}`);
    return value;
  };
  // Probabilities: dropout, Adam's betas.
  const probability = (name: string) => num(name, (x) => x >= 0 && x < 1, 'in [0, 1)');
  const nonNegative = (name: string) => num(name, (x) => x >= 0, 'a number >= 0');
  const choice = <T extends string>(name: string, choices: readonly T[]): T => {
    const value = String(v[name]);
    if (!(choices as readonly string[]).includes(value))
      throw new FlagError(`--${name} must be ${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}, got '${value}'`);
    return value as T;
  };
  return { int, optionalInt, num, probability, nonNegative, choice };
}

/**
 * A negative number after a flag that takes a value is that value (`--lr -1`, as argparse reads
 * it): written `--lr=-1` for util.parseArgs, which otherwise calls it ambiguous.
 */
function joinNegativeValues(argv: string[], specs: Record<string, FlagSpec>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return out.concat(argv.slice(i));
    const spec = arg.startsWith('--') && !arg.includes('=') ? specs[arg.slice(2)] : undefined;
    const next = argv[i + 1];
    if (spec && spec.kind !== 'boolean' && next !== undefined && /^-(\d|\.\d|Infinity|NaN)/.test(next)) {
      out.push(`${arg}=${next}`);
      i += 1;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/**
 * Optimal string alignment distance: edits (insert, delete, substitute, swap of neighbours) from `a`
 * to `b`, stopping once it exceeds `limit`.
 */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let before = new Array<number>(b.length + 1).fill(0);
  let last = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(last[j]! + 1, row[j - 1]! + 1, last[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, before[j - 2]! + 1);
      row.push(d);
    }
    if (Math.min(...row) > limit) return limit + 1;
    [before, last] = [last, row];
  }
  return last[b.length]!;
}

/**
 * The known flags a mistyped one most likely meant (at most three): the closest by edits, within a
 * third of its length (at least 2; 1 for names of up to 3 letters), or those whose name contains it.
 */
export function nearestFlags(name: string, known: string[]): string[] {
  const wanted = name.toLowerCase().replaceAll('_', '-');
  const limit = wanted.length <= 3 ? 1 : Math.max(2, Math.floor(wanted.length / 3));
  const scored = known
    .map((k) => ({ k, d: editDistance(wanted, k, limit) }))
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d || x.k.localeCompare(y.k));
  const best = scored[0]?.d;
  const close = scored.filter(({ d }) => d === best).map(({ k }) => k);
  const within = wanted.length >= 4 ? known.filter((k) => !close.includes(k) && k.includes(wanted)) : [];
  return [...close, ...within].slice(0, 3);
}

/** util.parseArgs' errors in webtron's words: the flag, what was wrong, what to do. */
function flagErrorOf(error: unknown, specs: Record<string, FlagSpec>): FlagError {
  const { code, message } = error as { code?: string; message: string };
  const flag = /'(--?[\w-]+)/.exec(message)?.[1] ?? '?';
  const name = flag.replace(/^--?/, '');
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const near = nearestFlags(name, Object.keys(specs));
    const names = near.map((k) => `--${k}`);
    const hint = names.length > 0 ? `did you mean ${[names.slice(0, -1).join(', '), names.at(-1)].filter(Boolean).join(' or ')}? ` : '';
    return new FlagError(`unknown flag ${flag}; ${hint}--help lists this command's flags`);
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    if (message.includes('does not take an argument')) return new FlagError(`${flag} is a switch: give it without a value`);
    const help = specs[name]?.help;
    return new FlagError(`${flag} needs a value${help ? ` (${help})` : ''}; a value starting with '-' is written ${flag}=VALUE`);
  }
  return new FlagError(message.split('\n')[0]!);
}

/** `--a_b` (or `--a_b=v`) as `--a-b` where `a-b` is a flag taken with underscores too (FlagSpec.underscored). */
function dashedNames(argv: string[], specs: Record<string, FlagSpec>): string[] {
  const end = argv.indexOf('--');
  return argv.map((arg, i) => {
    const m = /^--([\w-]+_[\w-]*)(=.*)?$/s.exec(arg);
    if (!m || (end >= 0 && i > end)) return arg;
    const dashed = m[1]!.replaceAll('_', '-');
    return specs[dashed]?.underscored ? `--${dashed}${m[2] ?? ''}` : arg;
  });
}

function tokenize(argv: string[], specs: Record<string, FlagSpec>) {
  try {
    return parseArgs({
      args: joinNegativeValues(dashedNames(argv, specs), specs),
      options: Object.fromEntries(
        Object.entries(specs).map(([name, s]) => [name, { type: s.kind === 'boolean' ? ('boolean' as const) : ('string' as const) }]),
      ),
      strict: true,
      allowPositionals: true,
      tokens: true,
    });
  } catch (error) {
    throw flagErrorOf(error, specs);
  }
}

/** Parse `argv` against `specs` (util.parseArgs, then each value converted and checked); returns the values and the positional arguments. */
export function parseFlags(
  argv: string[],
  specs: Record<string, FlagSpec>,
  env: Record<string, string | undefined> = process.env,
): { values: FlagValues; positional: string[] } {
  const parsed = tokenize(argv, specs);
  const values: FlagValues = {};
  const positional: string[] = [];
  let collecting: string[] | null = null; // the values of a 'strings' flag, while positionals follow it
  for (const t of parsed.tokens) {
    if (t.kind === 'positional') {
      (collecting ?? positional).push(t.value);
      continue;
    }
    collecting = null;
    if (t.kind !== 'option') continue;
    if (specs[t.name]!.refused) throw new FlagError(`--${t.name}: ${specs[t.name]!.refused}`);
    values[t.name] = t.value === undefined ? true : convert(t.name, specs[t.name]!, t.value);
    if (specs[t.name]!.kind === 'strings') collecting = values[t.name] as string[];
  }
  for (const [name, spec] of Object.entries(specs)) {
    if (values[name] !== undefined) continue;
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') {
      try {
        values[name] = convert(name, spec, fromEnv);
      } catch (e) {
        throw new FlagError(`${spec.env} (for --${name}): ${(e as Error).message.replace(/^--\S+: /, '')}`);
      }
    } else if (spec.default !== undefined) {
      values[name] = spec.default;
    }
  }
  return { values, positional };
}

/** One flag's help line: its name and value, then its help from column `width`, its env variable and default. */
export function flagLine(name: string, s: FlagSpec, width = 34): string {
  const value = s.kind === 'boolean' ? '' : s.kind === 'strings' ? ' <string>...' : ` <${s.kind}>`;
  const extra = [s.env && `env ${s.env}`, s.default !== undefined && `default ${String(s.default)}`].filter(Boolean).join(', ');
  // At least two spaces before the help, where a long flag passes the column.
  return `${`  --${name}${value}`.padEnd(width - 2)}  ${s.help}${extra ? ` (${extra})` : ''}`;
}

/** Help text: one line per flag. */
export function flagHelp(specs: Record<string, FlagSpec>): string {
  return Object.entries(specs)
    .map(([name, s]) => flagLine(name, s))
    .join('\n');
}

/** The flags every GPU command shares. */
export const GPU_FLAGS: Record<string, FlagSpec> = {
  backend: { kind: 'string', env: 'WEBTRON_BACKEND', help: 'Dawn backend: vulkan, metal, d3d12, d3d11, opengl, opengles' },
  adapter: { kind: 'string', env: 'WEBTRON_ADAPTER', help: 'adapter name as `webtron info --list` prints it' },
};
