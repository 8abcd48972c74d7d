/** `webtron dashboard RUN_DIR...`: live charts of runs in a browser, served from this machine. */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startDashboard } from '../dashboard/server.js';
import { type Command, listenFlag, untilStopped } from './command.js';
import { FlagError } from './flags.js';

export const DASHBOARD_FLAGS = {
  host: {
    kind: 'string',
    default: '127.0.0.1',
    help: 'the address to listen on (127.0.0.1: this machine only; 0.0.0.0 shows the runs to the network)',
  },
  port: { kind: 'int', default: 6007, help: 'the port (0: any free one)' },
} as const;

export const dashboardCommand: Command = {
  summary: 'live charts of run folders in a browser: loss, learning rate, grad norm, tokens/s, MFU, memory, per-rank step times',
  flags: DASHBOARD_FLAGS,
  async run(values, positional) {
    if (positional.length === 0)
      throw new FlagError('give one or more run folders (the --run-dir of webtron train), e.g. webtron dashboard runs/moby-dick');
    for (const dir of positional) {
      if (!existsSync(dir)) throw new FlagError(`${dir}: no such folder; give a run folder (the --run-dir of webtron train)`);
      if (!existsSync(join(dir, 'metrics.jsonl')) && !existsSync(join(dir, 'config.json')))
        throw new FlagError(`${dir}: no metrics.jsonl or config.json; give a run folder (the --run-dir of webtron train)`);
    }
    const dashboard = await listenFlag(values, (host, port) => startDashboard({ runs: positional, host, port }));
    console.log(`webtron dashboard: ${dashboard.url} (${positional.length} run${positional.length === 1 ? '' : 's'}; Ctrl-C stops it)`);
    await untilStopped(dashboard.close);
  },
};
