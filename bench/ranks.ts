/** The worker processes of a benchmark job: one per rank on this machine, JSON lines on stdout. */
import { spawn } from 'node:child_process';
import { basename } from 'node:path';

export interface RankProcess {
  /** Every JSON line the rank printed so far. */
  lines: Record<string, unknown>[];
  /** Resolves when the rank exits with 0. */
  done: Promise<void>;
  onLine(listener: (line: Record<string, unknown>) => void): void;
}

/** Where ranks run: by default on this machine; `--hosts` puts rank i in network namespace `namespaces[i]` with its own address. */
export interface RankPlacement {
  namespaces: string[];
  addresses: string[];
}

/** Start `world` ranks of `worker` with `config` as their argument, torchrun's variables and `extraEnv` set. */
export function startRanks(
  worker: string,
  world: number,
  config: Record<string, unknown>,
  placement?: RankPlacement,
  extraEnv: Record<string, string> = {},
): RankProcess[] {
  const port = String(20000 + Math.floor(Math.random() * 20000));
  const token = Math.random().toString(36).slice(2);
  return Array.from({ length: world }, (_, rank) => {
    const env = {
      RANK: String(rank),
      WORLD_SIZE: String(world),
      MASTER_ADDR: placement ? placement.addresses[0]! : '127.0.0.1',
      MASTER_PORT: port,
      WEBTRON_JOB_TOKEN: token,
      ...(placement ? { WEBTRON_BENCH_ADDR: placement.addresses[rank]! } : {}),
    };
    const [command, args] = placement
      ? ['ip', ['netns', 'exec', placement.namespaces[rank]!, process.execPath, worker, JSON.stringify(config)]]
      : [process.execPath, [worker, JSON.stringify(config)]];
    const child = spawn(command as string, args as string[], {
      env: { ...process.env, ...env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines: Record<string, unknown>[] = [];
    const listeners: ((line: Record<string, unknown>) => void)[] = [];
    let buffer = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = JSON.parse(buffer.slice(0, nl)) as Record<string, unknown>;
        buffer = buffer.slice(nl + 1);
        lines.push(line);
        for (const fn of listeners) fn(line);
      }
    });
    const done = new Promise<void>((resolve, reject) =>
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`benchmark worker ${basename(worker)} (rank ${rank}) exited with ${code}`)),
      ),
    );
    return { lines, done, onLine: (fn) => listeners.push(fn) };
  });
}
