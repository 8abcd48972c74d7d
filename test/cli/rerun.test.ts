/**
 * `webtron train`'s result validation end to end (Megatron's --rerun-mode and its flags; the state
 * machine itself is checked against Megatron's in test/train/rerun.test.ts). Faults are injected with
 * Megatron's --error-injection-rate; "another node" is a UTS namespace with another host name (root
 * only). References: a run without the flags, whose losses the validated runs must repeat bit for bit.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, dir, expectIdenticalLosses, losses, metricsOf, TINY, train } from '../helpers/train.js';
import { freePort } from '../helpers/job.js';

const D2 = [...TINY, '--nproc-per-node', '2', '--use-distributed-optimizer', '--global-batch-size', '8'];
const trackerStatuses = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((line) => /rank=(\d+) iteration=(\d+) status=(\w+)/.exec(line)!.slice(1).join(' '));

describe('webtron train --rerun-mode validate_results (the default)', () => {
  it('a transient fault: the rerun differs, the run stops with exit code 17 and the tracker file says why', async () => {
    const base = dir();
    const tracker = join(base, 'tracker.txt');
    const r = await train([
      ...TINY,
      '--train-iters',
      '4',
      '--error-injection-rate',
      '1',
      '--error-injection-type',
      'transient_error',
      '--result-rejected-tracker-filename',
      tracker,
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(17);
    // No check in a process's first iteration; the injected one fails at the second.
    expect(r.stderr).toMatch(
      /^webtron train: iteration 2: a result failed validation \(rank 0: found NaN in local forward loss calculation: [\d.]+ \(an injected transient error\), then [\d.]+ on a rerun on the same device: not reproducible, a transient fault\); resume from the last checkpoint \(exit code 17; --rerun-mode\)$/m,
    );
    expect(trackerStatuses(tracker)).toEqual(['0 2 initial_run', '0 2 first_rerun_not_reproducible']);
    expect([...losses(join(base, 'run')).keys()]).toEqual([1]);
  });

  it('a persistent fault: a checkpoint and exit code 16; resumed on the same node 16 again, on another node 17; --rerun-mode disabled trains on', async () => {
    const base = dir();
    const save = join(base, 'ck');
    const faulty = ['--error-injection-rate', '1', '--error-injection-type', 'persistent_error'];
    const first = await train([
      ...D2,
      ...faulty,
      '--train-iters',
      '4',
      '--save',
      save,
      '--save-interval',
      '1',
      '--run-dir',
      join(base, 'a'),
    ]);
    expect(first.code, first.stderr).toBe(16);
    expect(first.stderr).toMatch(
      /^webtron train: iteration 2: a result failed validation \(rank 0: found NaN in local forward loss calculation: [\d.]+ \(an injected persistent error\), the same on a rerun on the same device: it takes a rerun on another device to tell a faulty device from a correct result; rank 1: .*\); saved \S+iter_0000001 from before it: resume from it on another node or device to tell a faulty device from a correct result \(exit code 16; --rerun-mode\)$/m,
    );
    // The checkpoint of iteration 1, written again with both ranks' part of the pending rerun.
    expect(readFileSync(join(save, 'latest_checkpointed_iteration.txt'), 'utf8').trim()).toBe('1');
    const pending = JSON.parse(readFileSync(join(save, 'iter_0000001', 'index.json'), 'utf8')).extra.rerun;
    expect(pending).toMatchObject({ mode: 'validate_results', state: 'will_rerun_from_checkpoint', iteration: 2 });
    expect(pending.ranks.map((r: { injected: string }) => r.injected)).toEqual(['persistent_error', 'persistent_error']);

    const again = await train([...D2, '--train-iters', '4', '--load', save, '--save', save, '--run-dir', join(base, 'b')]);
    expect(again.code, again.stderr).toBe(16);
    expect(again.stdout).toMatch(
      /^the checkpoint waits for a rerun of iteration 2 on another node or device \(--rerun-mode\): running it again$/m,
    );
    expect(again.stderr).toMatch(
      /resumed on node \S+ device 0, the one that reproduced it .*; resume from the same checkpoint on another node or device \(exit code 16; --rerun-mode\)$/m,
    );

    if (process.getuid?.() !== 0) {
      console.log('another node: skipped (a UTS namespace with another host name needs root)');
    } else {
      const port = await freePort();
      const args = [BIN, 'train', '--master-port', String(port), ...D2, '--train-iters', '4', '--load', save, '--save', save];
      const elsewhere = spawnSync('unshare', ['--uts', 'sh', '-c', 'hostname webtron-other-node && exec node "$@"', 'sh', ...args], {
        encoding: 'utf8',
      });
      expect(elsewhere.status, elsewhere.stderr).toBe(17);
      expect(elsewhere.stderr).toMatch(
        /rank 0: found NaN in local forward loss calculation: [\d.]+ \(an injected persistent error\) on node \S+ device 0, [\d.]+ on node webtron-other-node device 0: that device is likely faulty \(a persistent fault\)/,
      );
    }

    const wrongSize = await train([...TINY, '--train-iters', '4', '--global-batch-size', '8', '--load', save]);
    expect(wrongSize.code).toBe(2);
    expect(wrongSize.stderr.trim()).toBe(
      'webtron train: the checkpoint waits for a rerun of iteration 2 by 2 ranks, and this run has 1: resume it with 2 ranks, or give --rerun-mode disabled to train on',
    );

    // Trained on without the rerun: the losses of a run that never had the fault.
    const onward = await train([...D2, '--train-iters', '4', '--load', save, '--rerun-mode', 'disabled', '--run-dir', join(base, 'c')]);
    expect(onward.code, onward.stderr).toBe(0);
    const plain = await train([...D2, '--train-iters', '4', '--run-dir', join(base, 'plain')]);
    expect(plain.code, plain.stderr).toBe(0);
    const reference = losses(join(base, 'plain'));
    reference.delete(1);
    expectIdenticalLosses(reference, losses(join(base, 'c')));
  });

  it('report_stats runs every iteration twice, reports them identical, and trains as a run without it', async () => {
    const base = dir();
    // With the step's param gathers overlapped, the report's collectives must wait for them.
    const overlap = [...D2, '--train-iters', '6', '--overlap-grad-reduce', '--overlap-param-gather', '--ddp-bucket-size', '5000'];
    const stats = await train([...overlap, '--rerun-mode', 'report_stats', '--run-dir', join(base, 'stats')]);
    expect(stats.code, stats.stderr).toBe(0);
    const lines = stats.stdout.split('\n').filter((l) => l.includes('From validation call'));
    // Reports after iterations 1, 3 and 5, each with the loss checks and the grad norm checks.
    expect(lines).toHaveLength(12);
    for (const line of lines) {
      const [, total, identical] = /: (\d+)\/(\d+) total\/identical samples, all identical$/.exec(line) ?? [];
      expect(Number(total), line).toBeGreaterThan(0);
      expect(identical, line).toBe(total);
    }
    const plain = await train([...overlap, '--rerun-mode', 'disabled', '--run-dir', join(base, 'plain')]);
    expect(plain.code, plain.stderr).toBe(0);
    expectIdenticalLosses(losses(join(base, 'plain')), losses(join(base, 'stats')));
  });
});

describe('webtron train --iterations-to-skip', () => {
  it("consumes a skipped iteration's samples without training or moving the schedule; a tracker file's repeated rejections skip the same", async () => {
    const base = dir();
    const args = [...TINY, '--train-iters', '4', '--global-batch-size', '2'];
    const skipped = await train([...args, '--iterations-to-skip', '2', '--run-dir', join(base, 'skip')]);
    expect(skipped.code, skipped.stderr).toBe(0);
    expect(skipped.stdout).toMatch(/^iteration 2 skipped \(--iterations-to-skip\): 2 samples consumed without training$/m);
    const plain = await train([...args, '--run-dir', join(base, 'plain')]);
    expect(plain.code, plain.stderr).toBe(0);
    const got = metricsOf(join(base, 'skip'));
    const want = metricsOf(join(base, 'plain'));
    expect(got.map((m) => m.iteration)).toEqual([1, 3, 4]);
    expect(got.map((m) => m.consumed_samples)).toEqual([2, 6, 8]);
    // The learning rate of iteration 3 is that of the plain run's second step: the skip did not move it.
    expect(got.map((m) => m.lr)).toEqual([want[0]!.lr, want[1]!.lr, want[2]!.lr]);

    const tracker = join(base, 'tracker.txt');
    const line = (job: string) =>
      `ts=2026-12-07T00:00:00.000Z node=n device=0 jobID=${job} rank=0 iteration=2 status=rerun_disabled result=nan message='found NaN in local forward loss calculation'`;
    writeFileSync(tracker, `${line('1')}\n${line('2')}\n`);
    const tracked = await train([...args, '--result-rejected-tracker-filename', tracker, '--run-dir', join(base, 'tracked')]);
    expect(tracked.code, tracked.stderr).toBe(0);
    expect(tracked.stdout).toMatch(/^webtron train: skipping iteration 2: rejected twice on a rank in \S+tracker.txt$/m);
    expectIdenticalLosses(losses(join(base, 'skip')), losses(join(base, 'tracked')));
  });
});
