/**
 * The CLI's `main()` in the test's own process, for commands that start no worker process (bad
 * input, which ends before any does; `webtron memory`): the same code `bin/webtron.js` runs in its
 * child, without its two Node start-ups (about half a second of CPU a run). Each test file that
 * uses it also runs a case through `bin/webtron.js`, the path a user takes.
 */
import { format } from 'node:util';
import { main } from '../../src/cli/main.js';

/** As spawnSync gives it: the exit code as `status`. */
export interface CliRun {
  status: number;
  stdout: string;
  stderr: string;
}

type Write = typeof process.stdout.write;

/** `webtron ARGS` run in `cwd`: its exit code and what it wrote to stdout and stderr, through console or the streams. */
export async function cliInProcess(args: string[], cwd: string): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  // As console formats them: util.format, then a newline.
  const text = (parts: unknown[]) => `${format(...parts)}\n`;
  const saved = {
    log: console.log,
    info: console.info,
    warn: console.warn,
    error: console.error,
    stdout: process.stdout.write,
    stderr: process.stderr.write,
  };
  const into =
    (sink: string[]): Write =>
    (chunk: string | Uint8Array) => {
      sink.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      return true;
    };
  const home = process.cwd();
  console.log = console.info = (...parts: unknown[]) => out.push(text(parts));
  console.warn = console.error = (...parts: unknown[]) => err.push(text(parts));
  process.stdout.write = into(out);
  process.stderr.write = into(err);
  process.chdir(cwd);
  try {
    const status = await main(args);
    return { status, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.chdir(home);
    Object.assign(console, { log: saved.log, info: saved.info, warn: saved.warn, error: saved.error });
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
  }
}
