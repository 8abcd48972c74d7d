/**
 * webtron under a real Slurm (a one-host cluster from Debian's slurm-wlm and munge, started and
 * stopped by the test; test/helpers/slurm.ts): `srun -n 2 webtron train` and `sbatch` of
 * examples/slurm/train.sbatch, whose tasks take rank, size, master and token from Slurm's
 * environment alone, train with the losses of a single-node run of the same global batch. Root only.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandHostlist } from '../../src/collectives/slurm.js';
import { seeded } from '../helpers/seed.js';
import { OneHostSlurm, slurmUnavailable } from '../helpers/slurm.js';
import { BIN, dir, expectIdenticalLosses, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const unavailable = slurmUnavailable();
if (unavailable) console.log(`skipped: the Slurm tests need a one-host Slurm: ${unavailable}`);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const JOB = [...TINY, '--train-iters', '6', '--global-batch-size', '4', '--hidden-dropout', '0', '--attention-dropout', '0'];
/** The sbatch scripts' own flags that JOB does not override: a cosine decay to 3e-4 (for the single-node references). */
const SCRIPT_SCHEDULE = ['--min-lr', '3e-4', '--lr-decay-style', 'cosine'];
let slurm: OneHostSlurm | null = null;
let base = '';
let tokenFile = '';

beforeAll(async () => {
  if (unavailable) return;
  slurm = await OneHostSlurm.start();
  base = dir();
  tokenFile = join(base, 'job-token');
  writeFileSync(tokenFile, 'a-secret-only-root-can-read-0123456789\n');
  chmodSync(tokenFile, 0o600);
}, 120_000);
afterAll(async () => {
  await slurm?.stop();
});

/** A job's environment: Slurm's and the token file only (no MASTER_ADDR, no WEBTRON_JOB_TOKEN), and the webtron command for the scripts. */
function jobEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...slurm!.env, WEBTRON_JOB_TOKEN_FILE: tokenFile, WEBTRON: BIN };
  for (const v of ['MASTER_ADDR', 'MASTER_PORT', 'WEBTRON_JOB_TOKEN']) delete env[v];
  return env;
}

describe.skipIf(unavailable !== null)('webtron train under Slurm', () => {
  it('srun -n 2 and sbatch examples/slurm/train.sbatch: the losses of a single-node run, the token derived from a file', async () => {
    const single = await train([...JOB, '--nproc-per-node', '2', '--use-distributed-optimizer', '--run-dir', join(base, 'single')]);
    expect(single.code, single.stderr).toBe(0);
    const env = jobEnv();
    const srun = spawnSync(
      'srun',
      ['-n', '2', '-N', '1', 'node', BIN, 'train', ...JOB, '--use-distributed-optimizer', '--run-dir', join(base, 'srun')],
      { env, encoding: 'utf8', cwd: ROOT, timeout: 120_000 },
    );
    expect(srun.status, srun.stderr).toBe(0);
    expectSameLosses(losses(join(base, 'single')), losses(join(base, 'srun')), 1e-6, 'srun -n 2 vs one node');
    const sbatch = spawnSync(
      'sbatch',
      [
        '--wait',
        `--chdir=${ROOT}`,
        `--output=${join(base, 'sbatch-%j.out')}`,
        join(ROOT, 'examples/slurm/train.sbatch'),
        ...JOB,
        '--run-dir',
        join(base, 'sbatch'),
      ],
      { env, encoding: 'utf8', timeout: 180_000 },
    );
    const out = readdirSync(base).find((f) => f.startsWith('sbatch-'));
    expect(sbatch.status, `${sbatch.stderr}\n${out ? spawnSync('cat', [join(base, out)], { encoding: 'utf8' }).stdout : ''}`).toBe(0);
    const cosine = await train([
      ...JOB,
      ...SCRIPT_SCHEDULE,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--run-dir',
      join(base, 'single-cosine'),
    ]);
    expect(cosine.code, cosine.stderr).toBe(0);
    expectSameLosses(losses(join(base, 'single-cosine')), losses(join(base, 'sbatch')), 1e-6, 'sbatch vs one node');
  });

  it('a requeued job (scontrol requeue, as a preemption does) saves on SIGTERM, starts again, resumes from --save and ends with the losses of an uninterrupted run', async () => {
    const iters = ['--train-iters', '60'];
    const env = jobEnv();
    const output = join(base, 'requeue.out');
    const submitted = spawnSync(
      'sbatch',
      [
        '--parsable',
        `--chdir=${ROOT}`,
        `--output=${output}`,
        join(ROOT, 'examples/slurm/train-preemptible.sbatch'),
        ...JOB,
        ...iters,
        '--save',
        join(base, 'requeue-ckpt'),
        '--run-dir',
        join(base, 'requeue'),
      ],
      { env, encoding: 'utf8' },
    );
    expect(submitted.status, submitted.stderr).toBe(0);
    const job = submitted.stdout.trim().split(';')[0]!;
    const log = () => (existsSync(output) ? readFileSync(output, 'utf8') : '');
    const until = async (what: string, ok: () => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the job's log:\n${log()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    await until('iteration 5 of the first start', () => / iteration +5\//.test(log()), 120_000);
    const requeue = spawnSync('scontrol', ['requeue', job], { env, encoding: 'utf8' });
    expect(requeue.status, requeue.stderr).toBe(0);
    const squeue = () => spawnSync('squeue', ['-h', '-j', job, '-o', '%T'], { env, encoding: 'utf8' }).stdout.trim();
    await until('the job to start again and finish', () => log().includes('start 2 on') && squeue() === '', 300_000);
    const text = log();
    const left = /exiting program at iteration (\d+): SIGTERM received \(--exit-signal-handler\)/.exec(text);
    expect(left, text).not.toBeNull();
    const k = left![1]!;
    expect(text).toMatch(new RegExp(`loaded \\S+iter_${k.padStart(7, '0')}: iteration ${k},`));
    expect(text).toMatch(/webtron train: done in/);
    const whole = await train([
      ...JOB,
      ...iters,
      ...SCRIPT_SCHEDULE,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--run-dir',
      join(base, 'requeue-whole'),
    ]);
    expect(whole.code, whole.stderr).toBe(0);
    expectIdenticalLosses(losses(join(base, 'requeue-whole')), losses(join(base, 'requeue')));
  }, 420_000);

  it('hostlists expand as scontrol show hostnames expands them, on random lists', () => {
    const { random } = seeded('hostlists');
    const pick = (n: number) => Math.floor(random() * n);
    for (let trial = 0; trial < 30; trial++) {
      const items = Array.from({ length: 1 + pick(3) }, () => {
        const width = 1 + pick(3);
        const lo = pick(20);
        const ranges = Array.from({ length: 1 + pick(3) }, (_, k) => {
          const a = lo + 30 * k + pick(5);
          const b = a + pick(4);
          return a === b ? String(a).padStart(width, '0') : `${String(a).padStart(width, '0')}-${String(b).padStart(width, '0')}`;
        });
        // One or two bracket groups (rack[1-2]-gpu[01-04]); Slurm 22.05 refuses text after the last bracket.
        return `${pick(2) ? `rack[${1 + pick(3)}-${4 + pick(3)}]-` : ''}${['gpu', 'node', 'x'][pick(3)]}[${ranges.join(',')}]`;
      });
      const list = items.join(',');
      const reference = spawnSync('scontrol', ['show', 'hostnames', list], { env: slurm!.env, encoding: 'utf8' }).stdout.trim().split('\n');
      expect(expandHostlist(list), list).toEqual(reference);
    }
  });
});
