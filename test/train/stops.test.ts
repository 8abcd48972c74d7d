/**
 * `webtron train` stopped and resumed as a user meets it: real worker processes killed, signalled,
 * timed out, restarted, and runs resumed from their checkpoints, each against the run left whole.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, isAlive, workerOfRank, workersOf } from '../helpers/job.js';
import { BIN, dir, expectIdenticalLosses, losses, TINY, train } from '../helpers/train.js';

/** `webtron train` on two workers with the distributed optimizer, too many iterations to finish: for stopping it. */
async function endlessJob(extra: string[], detached = false) {
  const port = await freePort();
  const args = ['train', '--master-port', String(port), ...TINY, '--nproc-per-node', '2', '--use-distributed-optimizer'];
  const launcher = spawn('node', [BIN, ...args, '--train-iters', '100000', '--global-batch-size', '4', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  const exit = new Promise<number | null>((resolve) => launcher.on('close', (code) => resolve(code)));
  return { launcher, exit };
}

describe('webtron train, stopped and resumed', () => {
  it("a resumed run repeats the uninterrupted run's losses bit for bit; at another d it continues within float rounding", async () => {
    const base = dir();
    const common = [...TINY, '--train-iters', '10', '--global-batch-size', '8'];
    const whole = await train([
      ...common,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--save',
      join(base, 'ckpt'),
      '--save-interval',
      '5',
      '--run-dir',
      join(base, 'whole'),
    ]);
    expect(whole.code, whole.stderr).toBe(0);
    expect(readdirSync(join(base, 'ckpt')).sort()).toEqual(['iter_0000005', 'iter_0000010', 'latest_checkpointed_iteration.txt']);
    const resumed = await train([
      ...common,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--load',
      join(base, 'ckpt', 'iter_0000005'),
      '--run-dir',
      join(base, 'resumed'),
    ]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/loaded .*iter_0000005: iteration 5, 40 samples consumed/);
    const a = losses(join(base, 'whole'));
    const b = losses(join(base, 'resumed'));
    expect([...b.keys()]).toEqual([6, 7, 8, 9, 10]);
    for (const [it, loss] of b) expect(loss, `iteration ${it}`).toBe(a.get(it));
    // --exit-interval 3: saved and left at iteration 3 with exit code 0; resumed, the same losses again.
    const early = await train([
      ...common,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--save',
      join(base, 'early'),
      '--exit-interval',
      '3',
      '--run-dir',
      join(base, 'early-run'),
    ]);
    expect(early.code, early.stderr).toBe(0);
    expect(early.stdout).toMatch(/exiting program at iteration 3: iteration divisible by --exit-interval 3/);
    expect(readFileSync(join(base, 'early', 'latest_checkpointed_iteration.txt'), 'utf8').trim()).toBe('3');
    const rest = await train([
      ...common,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--load',
      join(base, 'early'),
      '--run-dir',
      join(base, 'rest'),
    ]);
    expect(rest.code, rest.stderr).toBe(0);
    const r = losses(join(base, 'rest'));
    expect([...r.keys()]).toEqual([4, 5, 6, 7, 8, 9, 10]);
    for (const [it, loss] of r) expect(loss, `iteration ${it} after --exit-interval`).toBe(a.get(it));
    // Saved at d = 2 with the distributed optimizer, loaded at d = 1 without it.
    const other = await train([...common, '--load', join(base, 'ckpt', 'iter_0000005'), '--run-dir', join(base, 'other')]);
    expect(other.code, other.stderr).toBe(0);
    const c = losses(join(base, 'other'));
    for (const [it, loss] of c) expect(Math.abs(loss - a.get(it)!) / loss, `iteration ${it}`).toBeLessThanOrEqual(1e-4);
  });

  it('--max-restarts 2: a random worker SIGKILLed twice at random iterations; the run resumes from --save and ends bit-identical', async () => {
    const seed = Number(process.env.WEBTRON_TEST_SEED ?? Date.now() % 100_000);
    console.log(`--max-restarts test seed ${seed} (WEBTRON_TEST_SEED=${seed} replays it)`);
    let state = seed;
    const random = (n: number) => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return (state >>> 8) % n;
    };
    const base = dir();
    const common = [...TINY, '--nproc-per-node', '2', '--use-distributed-optimizer', '--train-iters', '24', '--global-batch-size', '4'];
    const common5 = [...common, '--save-interval', '5'];
    const whole = await train([...common5, '--save', join(base, 'whole-ckpt'), '--run-dir', join(base, 'whole')]);
    expect(whole.code, whole.stderr).toBe(0);

    const port = await freePort();
    const args = ['train', '--master-port', String(port), ...common5, '--max-restarts', '2', '--save', join(base, 'ckpt')];
    const launcher = spawn('node', [BIN, ...args, '--run-dir', join(base, 'run')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exit = new Promise<number | null>((resolve) => launcher.on('close', (code) => resolve(code)));
    let stderr = '';
    launcher.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const kills = [6 + random(4), 12 + random(5)];
    let round = 0;
    let buffered = '';
    let everything = '';
    launcher.stdout.on('data', (c: Buffer) => {
      buffered += c.toString();
      everything += c.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        const at = / iteration +(\d+)\//.exec(line);
        if (!at || round >= kills.length || Number(at[1]) < kills[round]! || !stderr.includes(round === 0 ? '' : `restart ${round} of 2`))
          continue;
        const workers = workersOf(launcher.pid!);
        if (workers.length !== 2) continue;
        const rank = random(2);
        const victim = workerOfRank(workers, rank);
        if (victim === undefined) continue;
        process.kill(victim, 'SIGKILL');
        round += 1;
      }
    });
    expect(await exit, stderr).toBe(0);
    expect(round).toBe(2);
    // Each restart names the dead rank, its exit, the checkpoint resumed and the iterations trained again.
    const restarts = [
      ...stderr.matchAll(
        /webtron launch: rank (\d) was killed by SIGKILL \(exit code 137\) after iteration (\d+); restart (\d) of 2: starting every worker again from (\S+) \(iteration (\d+)\); (?:iterations (\d+)–(\d+) are trained again|no iteration is trained again)/g,
      ),
    ];
    expect(
      restarts.map((m) => m[3]),
      stderr,
    ).toEqual(['1', '2']);
    // What each restarted round really loaded (rank 0's own line), against what the launcher announced.
    const loaded = [...everything.matchAll(/loaded (\S+): iteration (\d+),/g)].map((m) => [m[1], Number(m[2])]);
    expect(loaded, everything).toEqual(restarts.map((m) => [m[4], Number(m[5])]));
    for (const m of restarts) {
      const [reached, from] = [Number(m[2]), Number(m[5])];
      // The newest committed checkpoint: the save of the iteration reached may not have committed yet.
      expect(from % 5, m[0]).toBe(0);
      expect(reached - from, m[0]).toBeLessThanOrEqual(5);
      expect(m[4], m[0]).toBe(join(base, 'ckpt', `iter_${String(from).padStart(7, '0')}`));
      if (reached > from) expect([Number(m[6]), Number(m[7])], m[0]).toEqual([from + 1, reached]);
    }
    expectIdenticalLosses(losses(join(base, 'whole')), losses(join(base, 'run')));
    const last = (root: string) => join(root, 'iter_0000024');
    const files = readdirSync(last(join(base, 'whole-ckpt'))).filter((f) => f.endsWith('.safetensors'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files)
      expect(readFileSync(join(last(join(base, 'ckpt')), f)).equals(readFileSync(join(last(join(base, 'whole-ckpt')), f))), f).toBe(true);
  });

  it('a killed worker stops the job within seconds, named by the launcher', async () => {
    const { launcher, exit } = await endlessJob(['--run-dir', join(dir(), 'run')]);
    let stderr = '';
    launcher.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    await new Promise<void>((resolve) => launcher.stdout.on('data', (c: Buffer) => / iteration {8}2\//.test(c.toString()) && resolve()));
    const workers = workersOf(launcher.pid!);
    expect(workers).toHaveLength(2);
    const killedAt = Date.now();
    // RANK of each worker from its environment: kill rank 1.
    const rank1 = workerOfRank(workers, 1)!;
    process.kill(rank1, 'SIGKILL');
    expect(await exit).toBe(137);
    expect(Date.now() - killedAt).toBeLessThan(20_000);
    expect(stderr).toMatch(/webtron launch: rank 1 was killed by SIGKILL \(exit code 137\); stopping the other workers/);
    expect(workers.filter(isAlive)).toEqual([]);
  });

  it('--exit-signal-handler: SIGTERM to the launcher saves at one iteration on every rank, exits 0, and the same command again ends bit-identical', async () => {
    const base = dir();
    const args = [
      ...TINY,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--train-iters',
      '60',
      '--global-batch-size',
      '4',
      '--exit-signal-handler',
    ];
    const whole = await train([...args, '--save', join(base, 'whole-ckpt'), '--run-dir', join(base, 'whole')]);
    expect(whole.code, whole.stderr).toBe(0);
    const same = [...args, '--save', join(base, 'ckpt'), '--run-dir', join(base, 'run')];
    const port = await freePort();
    const launcher = spawn('node', [BIN, 'train', '--master-port', String(port), ...same], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exit = new Promise<number | null>((resolve) => launcher.on('close', (code) => resolve(code)));
    let stdout = '';
    let stderr = '';
    launcher.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let workers: number[] = [];
    launcher.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (workers.length === 0 && / iteration {8}2\//.test(stdout)) {
        workers = workersOf(launcher.pid!);
        process.kill(launcher.pid!, 'SIGTERM');
      }
    });
    expect(await exit, stderr).toBe(0);
    const left = /exiting program at iteration (\d+): SIGTERM received \(--exit-signal-handler\)/.exec(stdout);
    expect(left, stdout).not.toBeNull();
    expect(Number(left![1])).toBeLessThan(60);
    const tracker = readFileSync(join(base, 'ckpt', 'latest_checkpointed_iteration.txt'), 'utf8').trim();
    expect(tracker).toBe(left![1]);
    await new Promise((r) => setTimeout(r, 500));
    expect(workers.filter(isAlive)).toEqual([]);
    // The same command again loads --save's checkpoint and finishes as if never stopped.
    const again = await train(same);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`loaded .*iter_${tracker.padStart(7, '0')}: iteration ${tracker}`));
    expectIdenticalLosses(losses(join(base, 'whole')), losses(join(base, 'run')));
  });

  it('--async-save: losses and every checkpoint byte-identical to sync saves; SIGKILL mid-write leaves the previous checkpoint, and the same command again ends bit-identical', async () => {
    const base = dir();
    const args = [
      ...TINY,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--train-iters',
      '12',
      '--global-batch-size',
      '4',
      '--save-interval',
      '4',
    ];
    const sync = await train([...args, '--save', join(base, 'sync-ckpt'), '--run-dir', join(base, 'sync')]);
    expect(sync.code, sync.stderr).toBe(0);
    const background = await train([...args, '--async-save', '--save', join(base, 'async-ckpt'), '--run-dir', join(base, 'async')]);
    expect(background.code, background.stderr).toBe(0);
    expect(background.stdout).toMatch(/saving checkpoint of iteration 4 in the background: state copied to host memory in/);
    expect(background.stdout).toMatch(/saved checkpoint .*iter_0000004 \(.* MiB\) in the background in/);
    const a = losses(join(base, 'sync'));
    expectIdenticalLosses(a, losses(join(base, 'async')));
    for (const it of ['iter_0000004', 'iter_0000008', 'iter_0000012']) {
      const files = readdirSync(join(base, 'sync-ckpt', it)).filter((f) => f.endsWith('.safetensors'));
      expect(
        readdirSync(join(base, 'async-ckpt', it))
          .filter((f) => f.endsWith('.safetensors'))
          .sort(),
      ).toEqual(files.sort());
      for (const f of files)
        expect(readFileSync(join(base, 'async-ckpt', it, f)).equals(readFileSync(join(base, 'sync-ckpt', it, f))), `${it}/${f}`).toBe(true);
    }

    // The writers of iteration 8's save stall before their last file; rank 0 is killed at iteration 10.
    const same = [...args, '--async-save', '--save', join(base, 'ckpt'), '--run-dir', join(base, 'run')];
    const port = await freePort();
    const launcher = spawn('node', [BIN, 'train', '--master-port', String(port), ...same], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WEBTRON_FAULT_STALL_SAVE: '8' },
    });
    const exit = new Promise<number | null>((resolve) => launcher.on('close', (code) => resolve(code)));
    let stdout = '';
    let killed = false;
    launcher.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
      if (!killed && /saving checkpoint of iteration 8 in the background[\s\S]* iteration +10\//.test(stdout)) {
        const rank0 = workerOfRank(workersOf(launcher.pid!), 0);
        if (rank0 !== undefined) killed = process.kill(rank0, 'SIGKILL');
      }
    });
    expect(await exit).not.toBe(0);
    expect(killed).toBe(true);
    expect(readFileSync(join(base, 'ckpt', 'latest_checkpointed_iteration.txt'), 'utf8')).toBe('4\n');
    expect(existsSync(join(base, 'ckpt', 'iter_0000008.tmp'))).toBe(true);
    const again = await train(same);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/loaded .*iter_0000004: iteration 4/);
    expect(readdirSync(join(base, 'ckpt')).sort()).toEqual([
      'iter_0000004',
      'iter_0000008',
      'iter_0000012',
      'latest_checkpointed_iteration.txt',
    ]);
    expectIdenticalLosses(a, losses(join(base, 'run')));
  });

  it('--check-weight-hash-across-dp-replicas-interval: a replica corrupted after iteration 3 is named at the check after iteration 4', async () => {
    const base = dir();
    const args = [
      ...TINY,
      '--nproc-per-node',
      '3',
      '--train-iters',
      '8',
      '--global-batch-size',
      '6',
      '--check-weight-hash-across-dp-replicas-interval',
      '2',
    ];
    const clean = await train([...args, '--run-dir', join(base, 'clean')]);
    expect(clean.code, clean.stderr).toBe(0);
    const corrupt = await train([...args, '--run-dir', join(base, 'corrupt')], { WEBTRON_FAULT_CORRUPT_PARAM: '3:2' });
    expect(corrupt.code).toBe(1);
    expect(corrupt.stderr).toMatch(
      /webtron train: params differ across data-parallel replicas after iteration 4 \(--check-weight-hash-across-dp-replicas-interval\): rank 2 \([0-9a-f]{12}\) differs from ranks 0, 1 \([0-9a-f]{12}\)/,
    );
    expect([...losses(join(base, 'corrupt')).keys()]).toEqual([1, 2, 3, 4]);
  });

  it('--exit-duration-in-mins: every rank leaves at the same iteration once the time is up, after saving', async () => {
    const base = dir();
    const run = await train([
      ...TINY,
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--train-iters',
      '1000',
      '--global-batch-size',
      '4',
      '--exit-duration-in-mins',
      '0.001',
      '--save',
      join(base, 'ckpt'),
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(run.code, run.stderr).toBe(0);
    const left = /exiting program at iteration (\d+): 0.001 minutes of training \(--exit-duration-in-mins\)/.exec(run.stdout);
    expect(left, run.stdout).not.toBeNull();
    expect(Number(left![1])).toBeLessThan(1000);
    expect(readFileSync(join(base, 'ckpt', 'latest_checkpointed_iteration.txt'), 'utf8').trim()).toBe(left![1]);
  });

  it('Ctrl-C stops every worker and leaves only complete checkpoints', async () => {
    const base = dir();
    // Its own process group, as a shell gives a foreground job: Ctrl-C signals the whole group.
    const { launcher, exit } = await endlessJob(
      ['--save', join(base, 'ckpt'), '--save-interval', '3', '--run-dir', join(base, 'run')],
      true,
    );
    await new Promise<void>((resolve) => launcher.stdout.on('data', (c: Buffer) => / iteration {7}10\//.test(c.toString()) && resolve()));
    const workers = workersOf(launcher.pid!);
    process.kill(-launcher.pid!, 'SIGINT');
    expect(await exit).toBe(130);
    await new Promise((r) => setTimeout(r, 500));
    expect(workers.filter(isAlive)).toEqual([]);
    const tracker = readFileSync(join(base, 'ckpt', 'latest_checkpointed_iteration.txt'), 'utf8').trim();
    expect(existsSync(join(base, 'ckpt', `iter_${tracker.padStart(7, '0')}`, 'index.json'))).toBe(true);
    const leftovers = readdirSync(join(base, 'ckpt')).filter(
      (f) => !/^iter_\d{7}$/.test(f) && f !== 'latest_checkpointed_iteration.txt' && !f.endsWith('.tmp'),
    );
    expect(leftovers).toEqual([]);
  });
});
