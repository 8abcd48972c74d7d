/**
 * Command-line flags, pure: a spec per command, `--name value`, `--name=value` and boolean
 * `--name`; every mistake is a one-line `FlagError` that names the flag and what to do.
 */
import { WebtronError } from '../errors.js';

export class FlagError extends WebtronError {
  override name = 'FlagError';
  override readonly code: string = 'ERR_FLAG';
}

export type FlagKind = 'string' | 'int' | 'number' | 'boolean' | 'list';

export interface FlagSpec {
  kind: FlagKind;
  help: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  default?: string | number | boolean | string[];
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

function convert(name: string, spec: FlagSpec, raw: string): string | number | boolean | string[] {
  switch (spec.kind) {
    case 'string':
      return raw;
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

/** Parse `argv` against `specs`; returns the values and the positional arguments. */
export function parseFlags(
  argv: string[],
  specs: Record<string, FlagSpec>,
  env: Record<string, string | undefined> = process.env,
): { values: FlagValues; positional: string[] } {
  const values: FlagValues = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = specs[name];
    if (!spec) {
      const known = Object.keys(specs)
        .map((k) => `--${k}`)
        .join(', ');
      throw new FlagError(`unknown flag --${name}; known flags: ${known || 'none'}`);
    }
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (spec.kind === 'boolean') raw = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new FlagError(`--${name} needs a value (${spec.help})`);
      raw = next;
      i += 1;
    }
    values[name] = convert(name, spec, raw);
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

/** Help text: one line per flag. */
/** One flag's help line: its name and value, then its help from column `width`, its env variable and default. */
export function flagLine(name: string, s: FlagSpec, width = 34): string {
  const value = s.kind === 'boolean' ? '' : ` <${s.kind}>`;
  const extra = [s.env && `env ${s.env}`, s.default !== undefined && `default ${String(s.default)}`].filter(Boolean).join(', ');
  return `  --${name}${value}`.padEnd(width) + s.help + (extra ? ` (${extra})` : '');
}

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
