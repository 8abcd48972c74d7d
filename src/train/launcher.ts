/**
 * `webtron launch`: start this node's worker processes, torchrun style. Each worker gets RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and WEBTRON_JOB_TOKEN; node 0's
 * launcher serves the rendezvous store itself (workers get WEBTRON_STORE_EXTERNAL=1). When one
 * worker fails, the launcher stops the others and exits with that worker's code; when the launcher
 * dies, its workers stop too (src/train/lifeline.ts).
 */
import { ConfigError } from '../errors.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { StoreClient, StoreServer } from '../collectives/store.js';
import { DAWN_NOTICE } from '../gpu/dawn-notice.js';
import { BrowserHost } from './browser-host.js';
import type { TrainConfig } from './config.js';

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
  /** After SIGTERM, how long workers get before SIGKILL (default 10 s). */
  graceMs?: number;
  /** Lines of a failed worker's stderr to repeat (default 20). */
  tailLines?: number;
  /**
   * torchrun's --max-restarts: when a worker fails, stop the others and start them all again, this
   * many times (default 0). With several nodes every node's launcher restarts its workers, agreed
   * through node 0's store.
   */
  maxRestarts?: number;
  /** How long a node's launcher waits for the others to agree on a restart (default 300 s: WEBTRON_JOIN_TIMEOUT_MS). */
  agreeTimeoutMs?: number;
  /**
   * Browser tabs that join as the last ranks (every node counts them in the world size); node 0
   * serves their page, prints a URL for each, and watches them as it watches its processes.
   */
  browser?: { workers: number; host: string; port: number; config: TrainConfig };
}

/** Ranks in the job: every node's processes, then the browser workers. */
export const worldSizeOf = (o: LaunchOptions) => o.nnodes * o.nprocPerNode + (o.browser?.workers ?? 0);

/** Environment of each local worker, pure. */
export function workerEnvironments(o: LaunchOptions, token: string, restart = 0): Record<string, string>[] {
  const world = worldSizeOf(o);
  return Array.from({ length: o.nprocPerNode }, (_, local) => ({
    RANK: String(o.nodeRank * o.nprocPerNode + local),
    WORLD_SIZE: String(world),
    LOCAL_RANK: String(local),
    LOCAL_WORLD_SIZE: String(o.nprocPerNode),
    ...jobEnvironment(o, token),
    WEBTRON_RESTART_COUNT: String(restart),
  }));
}

/** What every rank of the job shares, a process's or a browser tab's: the store it meets at and the job's token. */
function jobEnvironment(o: LaunchOptions, token: string): Record<string, string> {
  return { MASTER_ADDR: o.masterAddr, MASTER_PORT: String(o.masterPort), WEBTRON_JOB_TOKEN: token, WEBTRON_STORE_EXTERNAL: '1' };
}

export function checkLaunchOptions(o: LaunchOptions): void {
  const positive = (name: 'nprocPerNode' | 'nnodes', v: number) => {
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${name} must be a positive integer, got ${v}`, name);
  };
  positive('nprocPerNode', o.nprocPerNode);
  positive('nnodes', o.nnodes);
  if (!Number.isInteger(o.nodeRank) || o.nodeRank < 0 || o.nodeRank >= o.nnodes) {
    throw new ConfigError(`nodeRank must be in 0..${o.nnodes - 1}, got ${o.nodeRank}`, 'nodeRank');
  }
  if (!Number.isInteger(o.masterPort) || o.masterPort < 1 || o.masterPort > 65535)
    throw new ConfigError(`masterPort must be a TCP port, got ${o.masterPort}`, 'masterPort');
  const restarts = o.maxRestarts ?? 0;
  if (!Number.isInteger(restarts) || restarts < 0)
    throw new ConfigError(`maxRestarts must be an integer of at least 0, got ${restarts}`, 'maxRestarts');
  if (o.command.length === 0)
    throw new ConfigError('no program to launch: put it after `--`, e.g. webtron launch --nproc-per-node 2 -- train.js');
  if (o.nnodes > 1 && !o.token) {
    throw new ConfigError(
      'a multi-node job needs the same WEBTRON_JOB_TOKEN on every node; create one (e.g. `openssl rand -hex 32`) and export it on each node',
    );
  }
}

/** How a worker ended, as people read it, and the exit code that stands for it (128 + signal number). */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): { text: string; code: number } {
  if (signal) {
    const number = osConstants.signals[signal] ?? 0;
    return { text: `was killed by ${signal} (exit code ${128 + number})`, code: 128 + number };
  }
  return { text: `exited with code ${code ?? 1}`, code: code ?? 1 };
}

/** The last `count` lines a worker wrote to stderr (a ring; lines longer than 500 characters are cut). */
class TailLines {
  private readonly lines: string[] = [];
  private partial = '';

  constructor(private readonly count: number) {}

  push(chunk: string): void {
    const parts = (this.partial + chunk).split(/\r?\n|\r/);
    this.partial = parts.pop()!.slice(-500);
    for (const line of parts) {
      if (line.trim() === '' || DAWN_NOTICE.test(line)) continue;
      this.lines.push(line.slice(0, 500));
      if (this.lines.length > this.count) this.lines.shift();
    }
  }

  get last(): string[] {
    return this.partial.trim() ? [...this.lines, this.partial].slice(-this.count) : [...this.lines];
  }
}

const LIFELINE = fileURLToPath(new URL('./lifeline.js', import.meta.url));

/** How long after a worker fails the launcher waits for others that failed with it before naming one. */
const SETTLE_MS = 100;

/**
 * Run the job's local workers; resolves with the exit code to use. Each worker is preloaded with
 * the lifeline (it stops when this launcher dies, even by SIGKILL). A worker that fails stops the
 * others (SIGTERM, then SIGKILL after the grace period) and is reported with its code or signal and
 * the last lines of its stderr. SIGINT or SIGTERM to the launcher goes to every worker and
 * escalates to SIGKILL after the grace period; a second one kills at once. Workers that handle the
 * signal and all exit 0 (--exit-signal-handler) make the job exit 0.
 */
export async function launch(o: LaunchOptions): Promise<number> {
  checkLaunchOptions(o);
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const graceMs = o.graceMs ?? 10_000;
  const token = o.token || randomBytes(32).toString('hex');
  const storeHost = (await lookup(o.masterAddr)).address;
  const store = o.nodeRank === 0 ? await StoreServer.start({ host: storeHost, port: o.masterPort, token, log }) : null;
  const browser = o.browser && o.browser.workers > 0 && store ? await startBrowserHost(o, token, storeHost, store, log) : null;
  const maxRestarts = o.maxRestarts ?? 0;
  const agents =
    o.nnodes > 1 && maxRestarts > 0
      ? await StoreClient.connect({ host: (await lookup(o.masterAddr)).address, port: o.masterPort, token })
      : null;
  const progress: RoundProgress = { iteration: null, checkpoint: null };
  // A signal between two rounds (while the nodes agree on a restart) ends the job instead of restarting it.
  let signalled: NodeJS.Signals | null = null;
  let onStop: () => void = () => {};
  const stopped = new Promise<false>((resolve) => {
    onStop = () => resolve(false);
  });
  const between = Object.fromEntries(
    (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((signal) => [
      signal,
      () => {
        signalled ??= signal;
        onStop();
      },
    ]),
  );
  for (const [signal, handler] of Object.entries(between)) process.on(signal, handler);
  let result = await runWorkers(o, token, graceMs, log, 0, progress, browser);
  for (let restart = 1; restart <= maxRestarts && result.failure && !result.stopped; restart++) {
    const failure = result.failure;
    if (agents && !(await Promise.race([everyNodeRestarts(agents, o, restart, log), stopped]))) break;
    if (signalled) {
      log(`webtron launch: ${signalled}: no restart`);
      result = { ...result, code: 128 + (osConstants.signals[signalled as NodeJS.Signals] ?? 15) };
      break;
    }
    log(`webtron launch: ${restartLine(failure, progress)}; restart ${restart} of ${maxRestarts}: ${resumeLine(progress)}`);
    if (browser) {
      browser.startRound(restart);
      for (const [rank, url] of browser.urls)
        console.log(
          `webtron train: restart ${restart}: browser worker rank ${rank} joins again by itself if its tab is open, else open ${url}`,
        );
    }
    progress.iteration = null;
    result = await runWorkers(o, token, graceMs, log, restart, progress, browser);
  }
  for (const [signal, handler] of Object.entries(between)) process.off(signal, handler);
  // Say this node is done, so that no other node waits for it to restart.
  if (agents) await agents.set(restartKey(result.round + 1, o.nodeRank), 'end').catch(() => undefined);
  agents?.close();
  await browser?.close();
  await store?.close();
  // Stopped by a signal that every worker handled (--exit-signal-handler: saved and exited 0): success.
  if (result.stopped && !result.failure && result.allZero) return 0;
  return result.code;
}

/** Node 0's page for the browser workers, and the URL each joins at (stdout, where people look for it). */
async function startBrowserHost(o: LaunchOptions, token: string, storeHost: string, store: StoreServer, log: (line: string) => void) {
  const { workers, host, port, config } = o.browser!;
  const first = o.nnodes * o.nprocPerNode;
  const forward = Object.entries(o.env ?? process.env).filter(
    ([key, value]) => key.startsWith('WEBTRON_') && value !== undefined && !/^WEBTRON_(LIFELINE|JOB_TOKEN|CLI_CHILD|STDERR_TTY)/.test(key),
  ) as [string, string][];
  const browser = await BrowserHost.start({
    host,
    port,
    ranks: Array.from({ length: workers }, (_, i) => first + i),
    worldSize: worldSizeOf(o),
    config,
    env: {
      ...Object.fromEntries(forward),
      ...jobEnvironment(o, token),
      WEBTRON_RESTART_COUNT: '0',
    },
    storeHost,
    storePort: store.port,
    peek: (key) => store.peek(key),
    log,
  });
  for (const [rank, url] of browser.urls) console.log(`webtron train: browser worker rank ${rank}: open ${url}`);
  return browser;
}

/** Where node `node` says whether it starts restart `round` of the job: 'restart' or 'end'. */
const restartKey = (round: number, node: number) => `webtron/launch/${round}/node/${node}`;

/**
 * Several nodes: this node's launcher says it restarts and waits for every other node's word on the
 * same restart, through node 0's store. Every node's workers fail soon after one fails (their
 * collectives lose a peer within the op timeout), so every launcher gets here; a node whose workers
 * ended otherwise says 'end', and then nobody restarts.
 */
async function everyNodeRestarts(agents: StoreClient, o: LaunchOptions, round: number, log: (line: string) => void): Promise<boolean> {
  const timeoutMs = o.agreeTimeoutMs ?? (Number(process.env.WEBTRON_JOIN_TIMEOUT_MS) || 300_000);
  const keys = Array.from({ length: o.nnodes }, (_, n) => restartKey(round, n));
  try {
    await agents.set(keys[o.nodeRank]!, 'restart');
    const words = (await agents.getMany(keys, timeoutMs)).map((b) => b.toString());
    const ending = words.map((w, n) => (w === 'restart' ? null : n)).filter((n) => n !== null);
    if (ending.length === 0) return true;
    log(`webtron launch: no restart ${round}: node${ending.length === 1 ? '' : 's'} ${ending.join(', ')} ended instead`);
  } catch (error) {
    log(`webtron launch: no restart ${round}: the nodes did not agree on it (${(error as Error).message})`);
  }
  return false;
}

/** What the workers reported (src/train/lifeline.ts): the iteration reached, the newest checkpoint loaded or committed. */
interface RoundProgress {
  iteration: number | null;
  checkpoint: { dir: string; iteration: number } | null;
}

function restartLine(failure: { rank: string; text: string }, p: RoundProgress): string {
  return `rank ${failure.rank} ${failure.text}${p.iteration === null ? '' : ` after iteration ${p.iteration}`}`;
}

/** What the next round resumes (a trainer loads the newest checkpoint under --save) and trains again. */
function resumeLine(p: RoundProgress): string {
  if (p.iteration === null) return 'starting every worker again';
  const from = p.checkpoint?.iteration ?? 0;
  const again = p.iteration > from ? `iterations ${from + 1}–${p.iteration} are trained again` : 'no iteration is trained again';
  return p.checkpoint
    ? `starting every worker again from ${p.checkpoint.dir} (iteration ${from}); ${again}`
    : `starting every worker again from iteration 0 (no checkpoint yet); ${again}`;
}

/** Lines of JSON a worker writes to its lifeline, read into `progress`. */
function readStatus(socket: NodeJS.ReadableStream, progress: RoundProgress): void {
  let partial = '';
  socket.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      let report: { iteration?: unknown; checkpoint?: unknown };
      try {
        report = JSON.parse(line) as typeof report;
      } catch {
        continue; // not a status line: ignored
      }
      if (typeof report.iteration !== 'number') continue;
      if (typeof report.checkpoint === 'string') progress.checkpoint = { dir: report.checkpoint, iteration: report.iteration };
      progress.iteration = Math.max(progress.iteration ?? 0, report.iteration);
    }
  });
  socket.on('error', () => undefined); // a worker that dies closes it; its exit is reported instead
}

/** One round of this node's workers: started, watched, stopped on a failure or a signal. */
async function runWorkers(
  o: LaunchOptions,
  token: string,
  graceMs: number,
  log: (line: string) => void,
  restart: number,
  progress: RoundProgress,
  browser: BrowserHost | null,
): Promise<{
  round: number;
  code: number;
  stopped: boolean;
  allZero: boolean;
  failure: { rank: string; code: number; text: string } | null;
}> {
  const children: ChildProcess[] = [];
  const codes: number[] = [];
  const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
  let firstFailure: { rank: string; code: number; text: string } | null = null;
  let stopping: { code: number } | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const stopAll = (signal: NodeJS.Signals) => {
    browser?.stop();
    for (const c of children) if (alive(c)) c.kill(signal);
    killTimer ??= setTimeout(() => {
      for (const c of children) if (alive(c)) c.kill('SIGKILL');
    }, graceMs);
    killTimer.unref();
  };
  const onSignal = (signal: NodeJS.Signals) => () => {
    if (stopping) {
      log(`webtron launch: ${signal} again: killing every worker now`);
      for (const c of children) if (alive(c)) c.kill('SIGKILL');
      return;
    }
    stopping = { code: 128 + (osConstants.signals[signal] ?? 15) };
    log(`webtron launch: ${signal}: stopping ${children.filter(alive).length} worker(s) (SIGKILL after ${graceMs / 1000} s)`);
    stopAll(signal);
  };
  const handlers = { SIGINT: onSignal('SIGINT'), SIGTERM: onSignal('SIGTERM'), SIGHUP: onSignal('SIGHUP') };
  for (const [signal, handler] of Object.entries(handlers)) process.on(signal, handler);
  // Failed workers seen within SETTLE_MS of the first: one killed by a signal is the root cause of
  // the others (they exit with code 1 once their connection to it is gone), whichever the launcher
  // happened to reap first; without one, the first seen.
  const failures: { rank: string; code: number; text: string; signalled: boolean; last: string[] }[] = [];
  let settling: Promise<void> | null = null;
  const reportRootCause = () => {
    if (stopping || failures.length === 0) return;
    const root = failures.find((f) => f.signalled) ?? failures[0]!;
    firstFailure = { rank: root.rank, code: root.code, text: root.text };
    // Bad input rank 0 reported (exit code 2): its one line is the message; the rest just stop.
    if (root.rank === '0' && root.code === 2) {
      stopAll('SIGTERM');
      return;
    }
    log(
      `webtron launch: rank ${root.rank} ${root.text}; stopping the other workers${root.last.length ? `. Its last stderr lines:\n${root.last.map((l) => `  [rank ${root.rank}] ${l}`).join('\n')}` : ''}`,
    );
    stopAll('SIGTERM');
  };
  // A rank ended (a process here, or a browser tab): its code counts, and a failure is a candidate root cause.
  const ended = (failure: { rank: string; code: number; text: string; signalled: boolean; last: string[] }) => {
    codes.push(failure.code);
    if (failure.code === 0 || firstFailure || stopping) return;
    failures.push(failure);
    settling ??= new Promise((done) => setTimeout(() => done(reportRootCause()), SETTLE_MS));
  };
  const stderrIsTty = process.stderr.isTTY === true || process.env.WEBTRON_STDERR_TTY === '1';
  const exits = workerEnvironments(o, token, restart).map(
    (env) =>
      new Promise<void>((resolve) => {
        const tail = new TailLines(o.tailLines ?? 20);
        const child = spawn(process.execPath, ['--import', LIFELINE, ...o.command], {
          env: {
            ...(o.env ?? process.env),
            ...env,
            WEBTRON_LIFELINE_FD: '3',
            WEBTRON_LIFELINE_STATUS: '1',
            ...(stderrIsTty ? { WEBTRON_STDERR_TTY: '1' } : {}),
          },
          stdio: ['inherit', 'inherit', 'pipe', 'pipe'],
        });
        children.push(child);
        readStatus(child.stdio[3] as NodeJS.ReadableStream, progress);
        child.stderr!.on('data', (chunk: Buffer) => {
          process.stderr.write(chunk);
          tail.push(chunk.toString('utf8'));
        });
        child.on('error', (error) => log(`webtron launch: cannot start rank ${env.RANK}: ${error.message}`));
        child.on('close', (code, signal) => {
          const exit = describeExit(code, signal);
          ended({ rank: env.RANK!, code: exit.code, text: exit.text, signalled: signal !== null, last: tail.last });
          resolve();
        });
      }),
  );
  // Browser ranks end by their own report or their tab closing (a root cause, as a killed process
  // is); once every process here has ended, a tab that has not said so within the grace period is let go.
  const tabs = (browser?.ranks ?? []).map((rank) =>
    browser!
      .ended(rank)
      .then((exit) => ended({ rank: String(rank), code: exit.code, text: exit.text, signalled: exit.closed, last: exit.last })),
  );
  await Promise.all(exits);
  if (browser) {
    const grace = setTimeout(() => browser.stop(), graceMs);
    await Promise.all(tabs);
    clearTimeout(grace);
  }
  await settling;
  if (killTimer) clearTimeout(killTimer);
  for (const [signal, handler] of Object.entries(handlers)) process.off(signal, handler);
  return {
    round: restart,
    code: (stopping as { code: number } | null)?.code ?? (firstFailure as { code: number } | null)?.code ?? 0,
    stopped: stopping !== null,
    allZero: codes.every((c) => c === 0),
    failure: firstFailure as { rank: string; code: number; text: string } | null,
  };
}
