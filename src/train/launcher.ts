/**
 * `webtron launch`: start this node's worker processes, torchrun style. Each worker gets RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and WEBTRON_JOB_TOKEN; node 0's
 * launcher serves the rendezvous store itself (workers get WEBTRON_STORE_EXTERNAL=1). When one
 * worker fails, the launcher stops the others and exits with that worker's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { StoreServer } from '../collectives/store.js';
import { FlagError } from './flags.js';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** The job's secret; generated for a single-node job when absent. */
  token?: string | undefined;
  /** Program and its arguments, run with this Node.js. */
  command: string[];
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

/** Environment of each local worker, pure. */
export function workerEnvironments(o: LaunchOptions, token: string): Record<string, string>[] {
  const world = o.nnodes * o.nprocPerNode;
  return Array.from({ length: o.nprocPerNode }, (_, local) => ({
    RANK: String(o.nodeRank * o.nprocPerNode + local),
    WORLD_SIZE: String(world),
    LOCAL_RANK: String(local),
    LOCAL_WORLD_SIZE: String(o.nprocPerNode),
    MASTER_ADDR: o.masterAddr,
    MASTER_PORT: String(o.masterPort),
    WEBTRON_JOB_TOKEN: token,
    WEBTRON_STORE_EXTERNAL: '1',
  }));
}

export function checkLaunchOptions(o: LaunchOptions): void {
  const positive = (name: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) throw new FlagError(`--${name} must be a positive integer, got ${v}`);
  };
  positive('nproc-per-node', o.nprocPerNode);
  positive('nnodes', o.nnodes);
  if (!Number.isInteger(o.nodeRank) || o.nodeRank < 0 || o.nodeRank >= o.nnodes) {
    throw new FlagError(`--node-rank must be in 0..${o.nnodes - 1}, got ${o.nodeRank}`);
  }
  if (!Number.isInteger(o.masterPort) || o.masterPort < 1 || o.masterPort > 65535) throw new FlagError(`--master-port must be a TCP port, got ${o.masterPort}`);
  if (o.command.length === 0) throw new FlagError('no program to launch: put it after `--`, e.g. webtron launch --nproc-per-node 2 -- train.js');
  if (o.nnodes > 1 && !o.token) {
    throw new FlagError('a multi-node job needs the same WEBTRON_JOB_TOKEN on every node; create one (e.g. `openssl rand -hex 32`) and export it on each node');
  }
}

/** Run the job's local workers; resolves with the exit code to use. */
export async function launch(o: LaunchOptions): Promise<number> {
  checkLaunchOptions(o);
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const token = o.token || randomBytes(32).toString('hex');
  const store = o.nodeRank === 0
    ? await StoreServer.start({ host: (await lookup(o.masterAddr)).address, port: o.masterPort, token, log })
    : null;
  const children: ChildProcess[] = [];
  let firstFailure: { rank: string; code: number } | null = null;
  const stopOthers = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    setTimeout(() => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill('SIGKILL')), 5000).unref();
  };
  const forward = (signal: NodeJS.Signals) => () => children.forEach((c) => c.kill(signal));
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  const exits = workerEnvironments(o, token).map(
    (env) =>
      new Promise<void>((resolve) => {
        const child = spawn(process.execPath, o.command, { env: { ...(o.env ?? process.env), ...env }, stdio: 'inherit' });
        children.push(child);
        child.on('exit', (code, signal) => {
          const failed = code !== 0;
          if (failed && !firstFailure) {
            firstFailure = { rank: env.RANK!, code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15) };
            log(`webtron launch: rank ${env.RANK} exited with ${code ?? signal}; stopping the other workers`);
            stopOthers();
          }
          resolve();
        });
      }),
  );
  await Promise.all(exits);
  await store?.close();
  return (firstFailure as { code: number } | null)?.code ?? 0;
}
