import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkLaunchOptions, describeExit, workerEnvironments, type LaunchOptions } from '../../src/train/launcher.js';
import { freePort, isAlive, WORKER } from '../helpers/job.js';

const STUBBORN = fileURLToPath(new URL('../../dist/test/workers/stubborn-worker.js', import.meta.url));

/** Start `webtron launch` and resolve with it and its workers' pids once every worker said it started. */
async function launchAndWait(
  args: string[],
  workers: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{
  launcher: ChildProcess;
  pids: number[];
  stdout: () => string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}> {
  const launcher = spawn('node', [bin, 'launch', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const pids = new Set<number>();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    launcher.on('exit', (code, signal) => resolve({ code, signal })),
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`workers did not start: ${out} ${err}`)), 60_000);
    launcher.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      for (const m of out.matchAll(/"started":true[^}]*"pid":(\d+)/g)) pids.add(Number(m[1]));
      if (pids.size === workers) {
        clearTimeout(timer);
        resolve();
      }
    });
    launcher.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  });
  return { launcher, pids: [...pids], stdout: () => out, stderr: () => err, exit };
}

async function allGone(pids: number[], withinMs: number): Promise<boolean> {
  const until = Date.now() + withinMs;
  while (Date.now() < until) {
    if (pids.every((p) => !isAlive(p))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const p of pids) if (isAlive(p)) process.kill(p, 'SIGKILL'); // leave nothing behind
  return false;
}

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const base: LaunchOptions = {
  nprocPerNode: 2,
  nnodes: 2,
  nodeRank: 1,
  masterAddr: '10.0.0.1',
  masterPort: 29500,
  token: 't',
  command: ['x.js'],
};

describe('webtron launch', () => {
  it("gives each local worker torchrun's variables", () => {
    expect(workerEnvironments(base, 't')).toEqual([
      {
        RANK: '2',
        WORLD_SIZE: '4',
        LOCAL_RANK: '0',
        LOCAL_WORLD_SIZE: '2',
        MASTER_ADDR: '10.0.0.1',
        MASTER_PORT: '29500',
        WEBTRON_JOB_TOKEN: 't',
        WEBTRON_STORE_EXTERNAL: '1',
        WEBTRON_RESTART_COUNT: '0',
      },
      {
        RANK: '3',
        WORLD_SIZE: '4',
        LOCAL_RANK: '1',
        LOCAL_WORLD_SIZE: '2',
        MASTER_ADDR: '10.0.0.1',
        MASTER_PORT: '29500',
        WEBTRON_JOB_TOKEN: 't',
        WEBTRON_STORE_EXTERNAL: '1',
        WEBTRON_RESTART_COUNT: '0',
      },
    ]);
  });

  it('refuses bad options with what to do', () => {
    expect(() => checkLaunchOptions({ ...base, token: undefined })).toThrow(
      /multi-node job needs the same WEBTRON_JOB_TOKEN on every node/,
    );
    expect(() => checkLaunchOptions({ ...base, nodeRank: 2 })).toThrow('nodeRank must be in 0..1, got 2');
    expect(() => checkLaunchOptions({ ...base, command: [] })).toThrow(/no program to launch: put it after `--`/);
    expect(() => checkLaunchOptions({ ...base, nprocPerNode: 0 })).toThrow('nprocPerNode must be a positive integer, got 0');
  });

  it('runs a 3-worker job with a generated token and serves the store itself', async () => {
    const port = await freePort();
    const env = { ...process.env, WEBTRON_JOB_TOKEN: '' };
    const run = spawnSync(
      'node',
      [bin, 'launch', '--nproc-per-node', '3', '--master-port', String(port), '--', WORKER, 'loop', '{"iterations":3,"elements":1001}'],
      { encoding: 'utf8', env },
    );
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.iterations === 3)).toHaveLength(3);
    expect(lines.filter((l) => l.done)).toHaveLength(3);
  });

  it("stops the others and exits with the failing worker's code", async () => {
    const port = await freePort();
    // The 'mismatch' scenario runs different ops on the two ranks, so both fail with exit code 1.
    const run = spawnSync('node', [bin, 'launch', '--nproc-per-node', '2', '--master-port', String(port), '--', WORKER, 'mismatch'], {
      encoding: 'utf8',
      env: { ...process.env, WEBTRON_TIMEOUT_MS: '3000' },
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/webtron launch: rank \d exited with code 1; stopping the other workers/);
  });

  it.each(['SIGKILL', 'SIGSEGV'] as const)('workers all-reducing with each other stop when their launcher dies by %s', async (signal) => {
    // Before: workers of a killed launcher ran on, all-reducing with each other, for good.
    const port = await freePort();
    const job = await launchAndWait(
      ['--nproc-per-node', '3', '--master-port', String(port), '--', WORKER, 'loop', '{"iterations":100000000,"elements":1000}'],
      3,
    );
    job.launcher.kill(signal);
    expect((await job.exit).signal).toBe(signal);
    expect(await allGone(job.pids, 10_000), `workers ${job.pids.join(', ')} outlived their launcher`).toBe(true);
  });

  it('SIGTERM reaches every worker and escalates to SIGKILL after the grace period', async () => {
    const port = await freePort();
    const job = await launchAndWait(['--nproc-per-node', '2', '--master-port', String(port), '--stop-grace-ms', '1500', '--', STUBBORN], 2);
    const t0 = Date.now();
    job.launcher.kill('SIGTERM');
    const exit = await job.exit;
    expect(exit.code).toBe(143);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(job.stdout().match(/"ignored":"SIGTERM"/g)).toHaveLength(2);
    expect(job.stderr()).toMatch(/webtron launch: SIGTERM: stopping 2 worker\(s\) \(SIGKILL after 1\.5 s\)/);
    expect(await allGone(job.pids, 2000)).toBe(true);
  });

  it('a worker killed by a signal is reported by its name, code 128 + its number, and its last stderr lines', async () => {
    const port = await freePort();
    const job = await launchAndWait(
      ['--nproc-per-node', '2', '--master-port', String(port), '--stop-grace-ms', '500', '--', STUBBORN, 'segv'],
      2,
    );
    const exit = await job.exit;
    expect(exit.code).toBe(139);
    expect(job.stderr()).toMatch(
      /webtron launch: rank 1 was killed by SIGSEGV \(exit code 139\); stopping the other workers\. Its last stderr lines:\n {2}\[rank 1\] rank 1 about to crash/,
    );
    expect(await allGone(job.pids, 2000)).toBe(true);
  });

  it('of workers failing within 100 ms of each other, the one killed by a signal is named, not the one that exited on losing it', async () => {
    const port = await freePort();
    const job = await launchAndWait(
      ['--nproc-per-node', '2', '--master-port', String(port), '--stop-grace-ms', '500', '--', STUBBORN, 'peer-dies'],
      2,
    );
    const exit = await job.exit;
    expect(exit.code).toBe(137);
    expect(job.stderr()).toMatch(/webtron launch: rank 1 was killed by SIGKILL \(exit code 137\); stopping the other workers/);
    expect(job.stderr()).not.toMatch(/webtron launch: rank 0 exited/);
    expect(await allGone(job.pids, 2000)).toBe(true);
  });

  it('describeExit: codes as they are, signals as 128 + their number', () => {
    expect(describeExit(0, null)).toEqual({ text: 'exited with code 0', code: 0 });
    expect(describeExit(3, null)).toEqual({ text: 'exited with code 3', code: 3 });
    expect(describeExit(null, 'SIGSEGV')).toEqual({ text: 'was killed by SIGSEGV (exit code 139)', code: 139 });
    expect(describeExit(null, 'SIGKILL')).toEqual({ text: 'was killed by SIGKILL (exit code 137)', code: 137 });
  });
});
