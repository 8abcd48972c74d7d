/** What every `webtron <command>` module exports: its summary, flags and what it runs. */
import type { FlagSpec, FlagValues } from './flags.js';

export interface Command {
  summary: string;
  flags: Record<string, FlagSpec>;
  /** `--help` text instead of one line per flag. */
  help?: () => string;
  run(values: FlagValues, positional: string[], argv: string[]): Promise<void>;
}

/** A command finished and wants this exit code, with nothing more to say. */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}
