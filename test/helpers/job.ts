/** Runs a collectives test job: one real process per rank on loopback. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

export const WORKER = fileURLToPath(new URL('../../dist/test/workers/collective-worker.js', import.meta.url));

export interface RankResult {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  lines: Record<string, unknown>[];
  stderr: string;
  /** Milliseconds from spawn to exit. */
  ms: number;
}

/** Whether process `pid` still exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The environment of process `pid` as `NAME=value` entries ([] once it is gone). */
export function environOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** The worker among `pids` whose environment says RANK=`rank`. */
/** The pids of `pid`'s children. */
export const childrenOf = (pid: number): number[] =>
  spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => n > 0);

/** The worker processes below `pid` (bin/webtron.js runs the CLI in a child, which starts them): those with RANK set. */
export const workersOf = (pid: number): number[] =>
  childrenOf(pid).flatMap((c) => (environOf(c).some((v) => v.startsWith('RANK=')) ? [c] : workersOf(c)));

export const workerOfRank = (pids: readonly number[], rank: number): number | undefined =>
  pids.find((pid) => environOf(pid).includes(`RANK=${rank}`));

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface JobOptions {
  world: number;
  /** The collectives worker's scenario (with `params`), or `worker` and `argv` for another worker. */
  scenario?: string;
  worker?: string;
  argv?: string[];
  params?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Extra environment of one rank (after `env`). */
  rankEnv?: (rank: number) => Record<string, string>;
  /** Ranks to start (default all); the others never join. */
  ranks?: number[];
  token?: string;
  /** Called for each stdout JSON line as it arrives. */
  onLine?: (rank: number, line: Record<string, unknown>, child: ChildProcess) => void;
}

export interface Job {
  port: number;
  token: string;
  children: ChildProcess[];
  done: Promise<RankResult[]>;
}

export async function startJob(options: JobOptions): Promise<Job> {
  const port = await freePort();
  const token = options.token ?? `token-${Math.random().toString(36).slice(2)}`;
  const ranks = options.ranks ?? Array.from({ length: options.world }, (_, r) => r);
  const children: ChildProcess[] = [];
  const results = ranks.map((rank) => {
    const started = Date.now();
    const args = options.argv ?? [options.scenario ?? 'matrix', JSON.stringify(options.params ?? {})];
    const child = spawn(process.execPath, [options.worker ?? WORKER, ...args], {
      env: {
        ...process.env,
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        RANK: String(rank),
        WORLD_SIZE: String(options.world),
        WEBTRON_JOB_TOKEN: token,
        ...options.env,
        ...options.rankEnv?.(rank),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const lines: Record<string, unknown>[] = [];
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      for (let nl = stdout.indexOf('\n'); nl >= 0; nl = stdout.indexOf('\n')) {
        const text = stdout.slice(0, nl);
        stdout = stdout.slice(nl + 1);
        try {
          const line = JSON.parse(text) as Record<string, unknown>;
          lines.push(line);
          options.onLine?.(rank, line, child);
        } catch {
          lines.push({ text });
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    return new Promise<RankResult>((resolve) => {
      child.on('exit', (code, signal) => resolve({ rank, code, signal, lines, stderr, ms: Date.now() - started }));
    });
  });
  return { port, token, children, done: Promise.all(results) };
}

export async function runJob(options: JobOptions): Promise<RankResult[]> {
  return (await startJob(options)).done;
}

/**
 * Run `worker` (a compiled test worker) as `world` ranks with `config` as its argument; resolves with
 * each rank's stdout JSON lines.
 */
export async function runWorkers(
  worker: string,
  world: number,
  config: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<Record<string, unknown>[][]> {
  const results = await runJob({ world, worker, argv: [JSON.stringify(config)], env: { WEBTRON_TIMEOUT_MS: '30000', ...env } });
  return results.map((r) => r.lines);
}
