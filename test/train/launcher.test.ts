import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkLaunchOptions, workerEnvironments, type LaunchOptions } from '../../src/train/launcher.js';
import { freePort, WORKER } from '../helpers/job.js';

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const base: LaunchOptions = { nprocPerNode: 2, nnodes: 2, nodeRank: 1, masterAddr: '10.0.0.1', masterPort: 29500, token: 't', command: ['x.js'] };

describe('webtron launch', () => {
  it('gives each local worker torchrun\'s variables', () => {
    expect(workerEnvironments(base, 't')).toEqual([
      { RANK: '2', WORLD_SIZE: '4', LOCAL_RANK: '0', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500', WEBTRON_JOB_TOKEN: 't', WEBTRON_STORE_EXTERNAL: '1' },
      { RANK: '3', WORLD_SIZE: '4', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500', WEBTRON_JOB_TOKEN: 't', WEBTRON_STORE_EXTERNAL: '1' },
    ]);
  });

  it('refuses bad options with what to do', () => {
    expect(() => checkLaunchOptions({ ...base, token: undefined })).toThrow(/multi-node job needs the same WEBTRON_JOB_TOKEN on every node/);
    expect(() => checkLaunchOptions({ ...base, nodeRank: 2 })).toThrow('--node-rank must be in 0..1, got 2');
    expect(() => checkLaunchOptions({ ...base, command: [] })).toThrow(/no program to launch: put it after `--`/);
    expect(() => checkLaunchOptions({ ...base, nprocPerNode: 0 })).toThrow('--nproc-per-node must be a positive integer, got 0');
  });

  it('runs a 3-worker job with a generated token and serves the store itself', async () => {
    const port = await freePort();
    const env = { ...process.env, WEBTRON_JOB_TOKEN: '' };
    const run = spawnSync('node', [bin, 'launch', '--nproc-per-node', '3', '--master-port', String(port), '--', WORKER, 'loop', '{"iterations":3,"elements":1001}'], { encoding: 'utf8', env });
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.iterations === 3)).toHaveLength(3);
    expect(lines.filter((l) => l.done)).toHaveLength(3);
  });

  it('stops the others and exits with the failing worker\'s code', async () => {
    const port = await freePort();
    // The 'mismatch' scenario runs different ops on the two ranks, so both fail with exit code 1.
    const run = spawnSync('node', [bin, 'launch', '--nproc-per-node', '2', '--master-port', String(port), '--', WORKER, 'mismatch'], {
      encoding: 'utf8',
      env: { ...process.env, WEBTRON_TIMEOUT_MS: '3000' },
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/webtron launch: rank \d exited with 1; stopping the other workers/);
  });
});
