/** `webtron <command>`: the command-line entry point. */
import { WebtronError } from '../errors.js';
import { ExitCode, type Command } from './command.js';
import { dashboardCommand } from './dashboard.js';
import { exportCmd } from './export.js';
import { flagHelp, parseFlags, type FlagSpec } from './flags.js';
import { info } from './info.js';
import { launchCommand } from './launch.js';
import { memoryCommand } from './memory.js';
import { preprocessData } from './preprocess-data.js';
import { sample } from './sample.js';
import { serve } from './serve.js';
import { train } from './train.js';
import { reportsToLauncher } from '../train/lifeline.js';

const COMMANDS: Record<string, Command> = {
  train,
  'preprocess-data': preprocessData,
  sample,
  serve,
  export: exportCmd,
  memory: memoryCommand,
  launch: launchCommand,
  dashboard: dashboardCommand,
  info,
};

function usage(): string {
  const lines = ['usage: webtron <command> [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(16)}${c.summary}`);
  lines.push('', 'run `webtron <command> --help` for its flags');
  return lines.join('\n');
}

/** Library option names that are spelled differently as flags. */
const FLAG_OF_OPTION: Record<string, string> = { beta1: 'adam-beta1', beta2: 'adam-beta2', eps: 'adam-eps', bucketSize: 'ddp-bucket-size' };

/** How long a worker that leaves rank 0 to report an error every rank met waits before exiting. */
const QUIET_EXIT_DELAY_MS = 2000;

/** The one line for a webtron error: where the library's API names an option, the command's flag for it. */
export function oneLine(e: WebtronError, flags: Record<string, FlagSpec>): string {
  let message = e.message;
  for (const option of e.options) {
    const flag = FLAG_OF_OPTION[option] ?? option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (flag in flags) message = message.replace(new RegExp(`\\b${option}\\b`), `--${flag}`); // its first mention
  }
  return message;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`webtron: unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
    return 2;
  }
  const own = rest.indexOf('--') >= 0 ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    console.log(`usage: webtron ${name} [flags]\n${command.summary}\n\n${command.help ? command.help() : flagHelp(command.flags)}`);
    return 0;
  }
  try {
    const { values, positional } = parseFlags(rest, command.flags);
    await command.run(values, positional, rest);
    return 0;
  } catch (e) {
    if (e instanceof ExitCode) return e.code;
    if (!(e instanceof WebtronError)) throw e; // a bug: bin/webtron.js prints the trace and says so
    if (e.sameOnEveryRank && reportsToLauncher() && process.env.RANK !== '0') {
      // Rank 0 says it once; leaving after it keeps the launcher's first failure rank 0's.
      await new Promise((resolve) => setTimeout(resolve, QUIET_EXIT_DELAY_MS));
      return e.exitCode;
    }
    console.error(`webtron ${name}: ${oneLine(e, command.flags)}`);
    return e.exitCode;
  }
}
