/**
 * `webtron train --optimizer sgd` and `lion` as a user runs them: real worker processes, one tiny
 * GPT. The update itself is checked against torch and a float64 Lion in test/optimizer/momentum.test.ts
 * and on real collectives in test/optimizer/distributed.test.ts; here, that runs agree across d,
 * strategies and resumes, that the memory line measures what it predicts, and what is refused.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dir, expectIdenticalLosses, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const common = [...TINY, '--train-iters', '12', '--global-batch-size', '8', '--hidden-dropout', '0', '--attention-dropout', '0'];

async function run(base: string, name: string, extra: string[]) {
  const r = await train([...common, '--run-dir', join(base, name), ...extra]);
  expect(r.code, `${name}: ${r.stderr}`).toBe(0);
  const memory = r.stdout.split('\n').find((l) => l.includes('GPU memory:'))!;
  expect(memory, `${name}: optimizer state`).toMatch(/optimizer-state [^|]*\(predicted [^,]*, equal\)/);
  return { losses: losses(join(base, name)), header: r.stdout.split('\n')[0]!, memory, stdout: r.stdout };
}

/** The memory line's optimizer-state bytes. */
function stateBytes(line: string): number {
  const [, value, unit] = /optimizer-state ([\d.]+) (B|KiB|MiB)/.exec(line)!;
  return Number(value) * { B: 1, KiB: 1024, MiB: 1024 ** 2 }[unit as 'B' | 'KiB' | 'MiB'];
}

const ZERO1 = ['--nproc-per-node', '2', '--use-distributed-optimizer'];

describe('webtron train --optimizer', () => {
  it('sgd: d = 1 and d = 2 agree and the loss falls; one moment a param, sharded; a resumed run repeats the whole one bit for bit, and resuming with Adam is refused in one line', async () => {
    const base = dir();
    const sgd = ['--optimizer', 'sgd', '--lr', '0.3', '--sgd-momentum', '0.9'];
    const d1 = await run(base, 'd1', sgd);
    expect(d1.header).toMatch(/non-distributed optimizer, SGD with momentum 0\.9/);
    const ckpt = join(base, 'ckpt');
    const whole = await run(base, 'whole', [...sgd, ...ZERO1, '--save', ckpt, '--save-interval', '6']);
    expectSameLosses(d1.losses, whole.losses, 1e-4, 'sgd: d = 1 vs d = 2');
    expect(whole.losses.get(12)!).toBeLessThan(whole.losses.get(1)! - 0.3);
    // One fp32 moment a param, half of it on each of 2 ranks (padding aside).
    expect(Math.abs(stateBytes(whole.memory) / stateBytes(d1.memory) - 0.5)).toBeLessThan(0.02);

    const index = JSON.parse(readFileSync(join(ckpt, 'iter_0000006', 'index.json'), 'utf8')) as {
      optimizer: string;
      state: Record<string, unknown>;
    };
    expect(index.optimizer).toBe('sgd');
    expect(Object.keys(index.state)).toEqual(['momentum_buffer']);
    const resumed = await run(base, 'resumed', [...sgd, ...ZERO1, '--load', join(ckpt, 'iter_0000006')]);
    expect([...resumed.losses.keys()]).toEqual([7, 8, 9, 10, 11, 12]);
    expectIdenticalLosses(new Map([...whole.losses].filter(([it]) => it > 6)), resumed.losses);

    const adam = await train([...common, ...ZERO1, '--load', ckpt, '--run-dir', join(base, 'adam')]);
    expect(adam.code).toBe(2);
    expect(adam.stderr.trim().split('\n')).toHaveLength(1);
    expect(adam.stderr).toMatch(
      /holds the state of --optimizer sgd, not of this run's adam; resume with --optimizer sgd, or take its params alone with --no-load-optim or --finetune/,
    );
  });

  it('lion: Megatron-FSDP optim_grads_params repeats ZeRO-1 bit for bit, and the loss falls', async () => {
    const base = dir();
    const lion = ['--optimizer', 'lion', '--lr', '1e-3', '--weight-decay', '0.1', ...ZERO1];
    const zero1 = await run(base, 'zero1', [...lion, '--timing']);
    expect(zero1.header).toMatch(/distributed optimizer, Lion with betas 0\.95, 0\.98/);
    // The update's timing phase is named for the optimizer.
    expect(zero1.stdout).toMatch(/timing \| iteration \d+ \| rank 0 \|.* \| lion [\d.]+ \|/);
    const fsdp = await run(base, 'fsdp', [
      ...lion,
      '--use-megatron-fsdp',
      '--data-parallel-sharding-strategy',
      'optim_grads_params',
      '--ddp-bucket-size',
      '2000',
    ]);
    expectIdenticalLosses(zero1.losses, fsdp.losses);
    expect(zero1.losses.get(12)!).toBeLessThan(zero1.losses.get(1)! - 0.3);
  });
});
