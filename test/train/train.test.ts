/**
 * `webtron train` and `webtron sample` as a user runs them: real worker processes, one tiny GPT
 * (every run has the same shapes, so the shader cache compiles them once for the whole file).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, isAlive, workerOfRank, workersOf } from '../helpers/job.js';
import { BIN, dir, expectIdenticalLosses, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

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
    // At d = 4 with each block's MLP recomputed (selective, --recompute-modules mlp): its params gathered again for it too.
    const mlp = ['--recompute-granularity', 'selective', '--recompute-modules', 'mlp'];
    const d4 = await run('optim_grads_params-d4', ['--nproc-per-node', '4', ...fsdp('optim_grads_params'), ...mlp]);
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
