/**
 * Slurm's environment contract (src/collectives/slurm.ts): hostlists expanded as Slurm's
 * documentation specifies (test/multihost/slurm.test.ts also checks them against `scontrol show
 * hostnames` of a real Slurm), the
 * master a job's tasks agree on, and the job token derived from a file only its owner can read.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveInfo } from '../../src/collectives/init.js';
import { expandHostlist, jobToken, slurmMaster } from '../../src/collectives/slurm.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-slurm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Slurm hostlists', () => {
  it('expands ranges, lists, zero padding and several bracket groups in Slurm’s order', () => {
    expect(expandHostlist('node[01-04,07]')).toEqual(['node01', 'node02', 'node03', 'node04', 'node07']);
    expect(expandHostlist('tux[0-2]')).toEqual(['tux0', 'tux1', 'tux2']);
    expect(expandHostlist('n[9-11]')).toEqual(['n9', 'n10', 'n11']);
    expect(expandHostlist('n[08-10]')).toEqual(['n08', 'n09', 'n10']);
    expect(expandHostlist('head,gpu[1-2],login')).toEqual(['head', 'gpu1', 'gpu2', 'login']);
    expect(expandHostlist('rack[1-2]-gpu[1,3]')).toEqual(['rack1-gpu1', 'rack1-gpu3', 'rack2-gpu1', 'rack2-gpu3']);
    // Text after the last bracket: Debian's Slurm 22.05 refuses such a list; webtron expands it (node lists Slurm makes have none).
    expect(expandHostlist('node[1-2].cluster')).toEqual(['node1.cluster', 'node2.cluster']);
    expect(expandHostlist('single')).toEqual(['single']);
    expect(() => expandHostlist('node[1-2')).toThrow(/a bracket is not closed/);
    expect(() => expandHostlist('node[4-2]')).toThrow(/range 4-2 runs backwards/);
    expect(() => expandHostlist('node[a-b]')).toThrow(/'a-b' is not a number or a range/);
  });
});

describe('a Slurm job without MASTER_ADDR', () => {
  it('takes the first host of SLURM_JOB_NODELIST and a port from the job id', () => {
    expect(slurmMaster({ SLURM_JOB_NODELIST: 'node[07-09,12]', SLURM_JOB_ID: '123456' })).toEqual({ addr: 'node07', port: 18456 });
    expect(slurmMaster({ SLURM_JOB_NODELIST: 'a,b', SLURM_JOB_ID: '7' })).toEqual({ addr: 'a', port: 15007 });
    expect(slurmMaster({})).toBeNull();
    const info = resolveInfo({}, { SLURM_PROCID: '3', SLURM_NTASKS: '4', SLURM_JOB_NODELIST: 'gpu[2-3]', SLURM_JOB_ID: '991' });
    expect(info).toMatchObject({ rank: 3, worldSize: 4, masterAddr: 'gpu2', masterPort: 15991 });
    // torchrun's variables win.
    expect(
      resolveInfo({}, { SLURM_JOB_NODELIST: 'gpu[2-3]', SLURM_JOB_ID: '991', MASTER_ADDR: 'head', MASTER_PORT: '1234' }),
    ).toMatchObject({
      masterAddr: 'head',
      masterPort: 1234,
    });
  });

  it('derives one job token per job from a file only its owner can read, and refuses a file others can read', () => {
    const file = join(dir, 'job-token');
    writeFileSync(file, 'a-long-random-secret-0123456789abcdef\n');
    chmodSync(file, 0o600);
    const env = (job: string) => ({ SLURM_JOB_ID: job, WEBTRON_JOB_TOKEN_FILE: file });
    const token = jobToken(env('42'))!;
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    expect(jobToken(env('42'))).toBe(token); // every task of the job
    expect(jobToken(env('43'))).not.toBe(token); // another job
    expect(token).not.toContain('a-long-random-secret');
    expect(jobToken({ ...env('42'), WEBTRON_JOB_TOKEN: 'given' })).toBe('given');
    expect(jobToken({ SLURM_JOB_ID: '42', HOME: dir })).toBeUndefined(); // no ~/.webtron/job-token: no token
    chmodSync(file, 0o644);
    expect(() => jobToken(env('42'))).toThrow(/job-token is readable by others \(mode 644\); `chmod 600/);
    expect(() => jobToken({ SLURM_JOB_ID: '42', WEBTRON_JOB_TOKEN_FILE: join(dir, 'none') })).toThrow(/cannot read .*none: ENOENT/);
  });
});
