/** What every `webtron <command>` module exports: its summary, flags and what it runs. */
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

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

/** A server's --port: an integer from 0 (any free port) to 65535, or a FlagError. */
export function portFlag(values: FlagValues): number {
  const port = values.port as number;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new FlagError(`--port must be an integer from 0 to 65535, got ${port}`);
  return port;
}

/** Start a server on --host and --port; its listen error (a port in use) is one line naming both. */
export async function listenFlag<T>(values: FlagValues, start: (host: string, port: number) => Promise<T>): Promise<T> {
  const [host, port] = [values.host as string, portFlag(values)];
  return start(host, port).catch((e: Error) => {
    throw new FlagError(`--host ${host} --port ${port}: ${e.message}; give another port (0 picks a free one)`);
  });
}

/** Wait for Ctrl-C or SIGTERM, then `close`. */
export function untilStopped(close: () => Promise<void>): Promise<void> {
  return new Promise<void>((done) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void close().then(done);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
