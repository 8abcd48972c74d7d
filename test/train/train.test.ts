/**
 * `webtron train` as a user runs it, with real worker processes and one tiny GPT: the runs that must
 * agree (d, the sharding strategies, precisions, resharded checkpoints). The runs that are stopped,
 * killed and resumed are in stops.test.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dir, expectIdenticalLosses, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

describe('webtron train', () => {
  it('d = 1 without and d = 2 with the distributed optimizer give the same losses for 20 iterations, with grad accumulation, dropout and overlap too', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([...TINY, '--train-iters', '20', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return losses(join(base, name));
    };
    const noDropout = ['--hidden-dropout', '0', '--attention-dropout', '0'];
    // Global batch 4: d = 1 accumulates 2 micro-batches, d = 2 runs one each.
    const single = await run('d1', ['--global-batch-size', '4', ...noDropout]);
    const double = await run('d2', ['--nproc-per-node', '2', '--use-distributed-optimizer', '--global-batch-size', '4', ...noDropout]);
    expectSameLosses(single, double, 1e-4, 'd = 1 vs d = 2');
    expect(single.get(20)!).toBeLessThan(single.get(1)! - 0.5); // it learns
    // Global batch 8 with dropout: 4 micro-batches at d = 1, 2 at d = 2 (with both overlaps on, and a time limit).
    const single8 = await run('d1-dropout', ['--global-batch-size', '8', '--hidden-dropout', '0.1', '--attention-dropout', '0.1']);
    const double8 = await run('d2-dropout', [
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--overlap-grad-reduce',
      '--overlap-param-gather',
      // Their collectives come after every step, while the next forward's gathers of several buckets run.
      '--exit-duration-in-mins',
      '600',
      '--log-params-norm',
      '--ddp-bucket-size',
      '2000',
      '--global-batch-size',
      '8',
      '--hidden-dropout',
      '0.1',
      '--attention-dropout',
      '0.1',
    ]);
    expectSameLosses(single8, double8, 1e-4, 'd = 1 vs d = 2, accumulation, dropout, overlap');
    // The run folder: config, metrics, summary, chart.
    const runDir = join(base, 'd2');
    expect(readdirSync(runDir).sort()).toEqual(['config.json', 'loss.svg', 'metrics.jsonl', 'summary.json']);
    const config = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ useDistributedOptimizer: true, globalBatchSize: 4, gradAccumulation: 1, dataParallelSize: 2, lr: 3e-3 });
    const first = JSON.parse(readFileSync(join(runDir, 'metrics.jsonl'), 'utf8').split('\n')[0]!) as Record<string, unknown>;
    expect(Object.keys(first)).toEqual(
      expect.arrayContaining([
        'iteration',
        'consumed_samples',
        'loss',
        'lr',
        'grad_norm',
        'loss_scale',
        'skipped',
        'tokens_per_s',
        'step_ms',
      ]),
    );
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as { iterations: number; final_val_loss: number };
    expect(summary.iterations).toBe(20);
    expect(summary.final_val_loss).toBeGreaterThan(0);
  });

  it("Megatron-FSDP's strategies: optim_grads and optim_grads_params repeat ZeRO-1's losses bit for bit, and d = 1, 2, 4 agree, with accumulation and dropout", async () => {
    const base = dir();
    // Buckets of about 2k elements: the tiny GPT spreads over several, so they are gathered and freed one by one.
    const common = [...TINY, '--train-iters', '20', '--global-batch-size', '8', '--hidden-dropout', '0.1', '--attention-dropout', '0.1'];
    const run = async (name: string, extra: string[]) => {
      const r = await train([...common, '--ddp-bucket-size', '2000', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      const memory = r.stdout.split('\n').find((l) => l.includes('GPU memory:'))!;
      for (const category of ['params', 'grads', 'main-params', 'optimizer-state']) {
        expect(memory, `${name}: ${category}`).toMatch(new RegExp(`${category} [^|]*\\(predicted [^,]*, equal\\)`));
      }
      expect(memory, `${name}: activations`).toMatch(/activations peak [^|]*\(predicted for one micro-batch [^,]*, equal\)/);
      return losses(join(base, name));
    };
    const fsdp = (strategy: string) => [
      '--use-distributed-optimizer',
      '--use-megatron-fsdp',
      '--data-parallel-sharding-strategy',
      strategy,
    ];
    const zero1 = await run('zero1-d2', ['--nproc-per-node', '2', '--use-distributed-optimizer']);
    for (const strategy of ['optim', 'optim_grads', 'optim_grads_params']) {
      const d2 = await run(`${strategy}-d2`, ['--nproc-per-node', '2', ...fsdp(strategy)]);
      expectIdenticalLosses(zero1, d2);
    }
    for (const strategy of ['optim_grads', 'optim_grads_params']) {
      const d1 = await run(`${strategy}-d1`, fsdp(strategy));
      expectSameLosses(d1, zero1, 1e-4, `${strategy}: d = 1 vs ZeRO-1 at d = 2`);
    }
    // Megatron's full recomputation: every span of 2 blocks again in the backward, its params gathered
    // again for it, the same dropout masks: the same losses, and the activations it predicts.
    const again = ['--recompute-granularity', 'full', '--recompute-method', 'uniform', '--recompute-num-layers', '2'];
    expectIdenticalLosses(zero1, await run('recompute-d2', ['--nproc-per-node', '2', ...fsdp('optim_grads_params'), ...again]));
    const d4 = await run('optim_grads_params-d4', ['--nproc-per-node', '4', ...fsdp('optim_grads_params')]);
    expectSameLosses(d4, zero1, 1e-4, 'optim_grads_params: d = 4 vs ZeRO-1 at d = 2');
    expect(zero1.get(20)!).toBeLessThan(zero1.get(1)! - 0.5);
  });

  it.each([
    [['--bf16', '--grad-reduce-in-bf16']],
    [['--fp16']],
    [['--bf16', '--use-precision-aware-optimizer', '--main-grads-dtype', 'bf16', '--main-params-dtype', 'fp16']],
  ])('Megatron-FSDP with %j: optim_grads and optim_grads_params repeat ZeRO-1 bit for bit', async (precision) => {
    const base = dir();
    const common = [...TINY, '--train-iters', '8', '--global-batch-size', '4', '--ddp-bucket-size', '2000', '--nproc-per-node', '2'];
    const run = async (name: string, extra: string[]) => {
      const r = await train([...common, ...precision, '--use-distributed-optimizer', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return losses(join(base, name));
    };
    const zero1 = await run('zero1', []);
    for (const strategy of ['optim_grads', 'optim_grads_params']) {
      expectIdenticalLosses(zero1, await run(strategy, ['--use-megatron-fsdp', '--data-parallel-sharding-strategy', strategy]));
    }
  });

  it('a GPT whose fp32 model state is 3x --max-device-memory trains at d = 4 with optim_grads_params within it; at d = 1 it is refused in one line', async () => {
    const base = dir();
    // 14.3M params: 217.6 MiB of fp32 model state (16 B a param) at d = 1, 3x 72.5 MiB.
    const big = [
      '--num-layers',
      '32',
      '--hidden-size',
      '192',
      '--num-attention-heads',
      '4',
      '--seq-length',
      '8',
      '--micro-batch-size',
      '1',
      '--lr',
      '1e-3',
      '--log-interval',
      '1',
      '--eval-interval',
      '1000',
      '--eval-iters',
      '1',
      '--train-iters',
      '3',
      '--use-distributed-optimizer',
      '--use-megatron-fsdp',
      '--data-parallel-sharding-strategy',
      'optim_grads_params',
      '--ddp-bucket-size',
      '60000',
      '--max-device-memory',
      '72.5MiB',
    ];
    const refused = await train([...big, '--run-dir', join(base, 'd1')]);
    expect(refused.code, refused.stderr).toBe(2);
    const lines = refused.stderr.split('\n').filter((l) => l && !l.startsWith('Warning:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^webtron train: --max-device-memory 72\.50 MiB: this run needs 2\d\d\.\d\d MiB per rank at its peak .*no optimizer setting fits: use more ranks/,
    );
    const r = await train([...big, '--nproc-per-node', '4', '--run-dir', join(base, 'd4')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^webtron train: 14,262,144 params/m);
    const summary = JSON.parse(readFileSync(join(base, 'd4', 'summary.json'), 'utf8')) as { peak_gpu_bytes_per_rank: number };
    // The model state alone at d = 1 (16 B a param, padding included) is 3x the budget.
    const budget = 72.5 * 2 ** 20;
    expect(16 * 14_262_144).toBeGreaterThan(3 * budget);
    expect(summary.peak_gpu_bytes_per_rank).toBeLessThanOrEqual(budget);
    expect(r.stdout).toMatch(/peak GPU memory [\d.]+ MiB per rank \(the most of any rank\), within --max-device-memory 72\.50 MiB/);
  });

  it('checkpoints reshard across strategies and d: optim_grads_params saves, ZeRO-1 resumes bit for bit, optim_grads at d = 4 within rounding, and back', async () => {
    const base = dir();
    const common = [...TINY, '--train-iters', '10', '--global-batch-size', '8', '--ddp-bucket-size', '2000', '--use-distributed-optimizer'];
    const fsdp = (strategy: string) => ['--use-megatron-fsdp', '--data-parallel-sharding-strategy', strategy];
    const run = async (name: string, extra: string[]) => {
      const r = await train([...common, '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return losses(join(base, name));
    };
    const zero3 = await run('zero3', [
      '--nproc-per-node',
      '2',
      ...fsdp('optim_grads_params'),
      '--save',
      join(base, 'z3'),
      '--save-interval',
      '5',
    ]);
    const zero1 = await run('zero1', [
      '--nproc-per-node',
      '2',
      '--load',
      join(base, 'z3', 'iter_0000005'),
      '--save',
      join(base, 'z1'),
      '--save-interval',
      '2',
    ]);
    expect([...zero1.keys()]).toEqual([6, 7, 8, 9, 10]);
    for (const [it, loss] of zero1) expect(loss, `ZeRO-1 from ZeRO-3, iteration ${it}`).toBe(zero3.get(it));
    const zero2 = await run('zero2-d4', ['--nproc-per-node', '4', ...fsdp('optim_grads'), '--load', join(base, 'z3', 'iter_0000005')]);
    expectSameLosses(new Map([...zero3].filter(([it]) => it > 5)), zero2, 1e-4, 'optim_grads at d = 4 from optim_grads_params at d = 2');
    const back = await run('zero3-again', [
      '--nproc-per-node',
      '2',
      ...fsdp('optim_grads_params'),
      '--load',
      join(base, 'z1', 'iter_0000008'),
    ]);
    expect([...back.keys()]).toEqual([9, 10]);
    for (const [it, loss] of back) expect(loss, `ZeRO-3 from ZeRO-1, iteration ${it}`).toBe(zero3.get(it));
  });

  // bf16 main grads round each rank's grads before the sum (d = 2), or each micro-batch's into the
  // sum (d = 1): the runs still agree within 1e-4 (5e-5 measured here).
  it.each([
    [[], 'bf16 exp_avg, bf16 exp_avg_sq'],
    [
      ['--bf16', '--main-grads-dtype', 'bf16', '--main-params-dtype', 'fp16'],
      'bf16 exp_avg, bf16 exp_avg_sq, fp16 main params, bf16 main grads',
    ],
  ])(
    '--use-precision-aware-optimizer with bf16 moments and %j: d = 1 and d = 2 agree for 20 iterations, and the memory line measures what it predicts',
    async (more, text) => {
      const base = dir();
      const flags = [
        '--use-distributed-optimizer',
        '--use-precision-aware-optimizer',
        '--exp-avg-dtype',
        'bf16',
        '--exp-avg-sq-dtype',
        'bf16',
        ...more,
      ];
      const run = async (name: string, extra: string[]) => {
        const r = await train([
          ...TINY,
          '--train-iters',
          '20',
          '--global-batch-size',
          '4',
          '--run-dir',
          join(base, name),
          ...flags,
          ...extra,
        ]);
        expect(r.code, `${name}: ${r.stderr}`).toBe(0);
        expect(r.stdout).toContain(`distributed optimizer (${text})`);
        // Every model-state category of the trainer's memory line: measured = predicted.
        const memory = r.stdout.split('\n').find((l) => l.includes('GPU memory:'))!;
        for (const category of ['params', 'grads', 'main-params', 'optimizer-state']) {
          expect(memory, category).toMatch(new RegExp(`${category} [^|]*\\(predicted [^,]*, equal\\)`));
        }
        return { losses: losses(join(base, name)), memory };
      };
      const single = await run('d1', []);
      const double = await run('d2', ['--nproc-per-node', '2']);
      expectSameLosses(single.losses, double.losses, 1e-4, `${text}: d = 1 vs d = 2`);
      expect(single.losses.get(20)!).toBeLessThan(single.losses.get(1)! - 0.5);
    },
  );
});
