/**
 * Megatron's schedules beyond warmup-then-decay: inverse-square-root and WSD decay, warmup as a
 * fraction, schedules in samples (--train-samples), weight decay that grows, global batches that
 * grow (--rampup-batch-size, --step-batch-size-schedule), the embedding's and output layer's own
 * rate (--decoupled-lr), and the schedule's check on a resume. The
 * references are values worked out by hand from the formulas of Megatron's OptimizerParamScheduler
 * and its batch-size calculators, the same schedule given in iterations and in samples, runs without
 * the feature, and runs resumed with each batch size by hand.
 */
import { join } from 'node:path';
import { openModelTensors } from '../../src/checkpoint/checkpoint.js';
import { describe, expect, it } from 'vitest';
import { FlagError, parseFlags } from '../../src/cli/flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from '../../src/cli/train-flags.js';
import { learningRate, lrScheduleOf, weightDecay, type LrSchedule } from '../../src/train/schedule.js';
import { globalBatchAt } from '../../src/train/config.js';
import { dir, expectIdenticalLosses, losses, metricsOf as metrics, TINY, train } from '../helpers/train.js';

describe('learning rate and weight decay, by the formulas', () => {
  it('inverse-square-root: lr · √warmup / √n after the warmup, never below minLr, minLr after the decay', () => {
    const s: LrSchedule = { lr: 1e-3, minLr: 1e-5, decayStyle: 'inverse-square-root', warmupSteps: 100, decaySteps: 10_000 };
    expect(learningRate(s, 50)).toBeCloseTo(5e-4, 15); // warmup
    expect(learningRate(s, 100)).toBe(1e-3);
    expect(learningRate(s, 400)).toBeCloseTo(5e-4, 15);
    expect(learningRate(s, 10_000)).toBeCloseTo(1e-4, 15);
    expect(learningRate({ ...s, minLr: 2e-4 }, 10_000)).toBe(2e-4);
    expect(learningRate(s, 10_001)).toBe(1e-5);
    expect(learningRate({ ...s, warmupSteps: 0 }, 0)).toBe(1e-3);
  });

  it('WSD: warmup, stable at lr, then the final decay in each of its four shapes', () => {
    const s: LrSchedule = { lr: 1e-3, minLr: 0, decayStyle: 'WSD', warmupSteps: 10, decaySteps: 110, wsdDecaySteps: 20 };
    expect(learningRate(s, 5)).toBeCloseTo(5e-4, 15);
    for (const n of [10, 50, 90]) expect(learningRate(s, n)).toBe(1e-3);
    // Half-way through the final decay (step 100 of 90..110), by hand.
    const half: Record<string, number> = { exponential: Math.SQRT2 - 1, linear: 0.5, cosine: 0.5, minus_sqrt: 1 - Math.SQRT1_2 };
    for (const [style, coeff] of Object.entries(half))
      expect(learningRate({ ...s, wsdDecayStyle: style as LrSchedule['wsdDecayStyle'] }, 100), style).toBeCloseTo(coeff * 1e-3, 15);
    expect(learningRate(s, 110)).toBeCloseTo(0, 15); // exponential, Megatron's default, ends at 2 · 0.5 - 1
    expect(learningRate({ ...s, minLr: 1e-5 }, 111)).toBe(1e-5);
  });

  it('a schedule in samples counts samples; warmup as a fraction of the decay', () => {
    const flags = resolve([
      '--train-samples',
      '96',
      '--global-batch-size',
      '8',
      '--lr',
      '1',
      '--lr-warmup-samples',
      '12',
      '--lr-decay-samples',
      '80',
    ]);
    const s = lrScheduleOf(flags);
    expect(s.unit).toBe('samples');
    expect(learningRate(s, 8)).toBeCloseTo(8 / 12, 15);
    expect(learningRate(s, 16)).toBeCloseTo(1 - 4 / 68, 15);
    expect(learningRate(s, 80)).toBe(0); // 80 samples: the end of the decay
    const fraction = lrScheduleOf(resolve(['--train-iters', '50', '--lr', '1', '--lr-warmup-fraction', '0.1']));
    expect(fraction).toMatchObject({ warmupSteps: 5, decaySteps: 50, unit: 'iterations' });
    expect(learningRate(fraction, 2)).toBeCloseTo(0.4, 15);
  });

  it('weight decay from start to end over the run: constant, linear, cosine', () => {
    const s = { start: 0, end: 0.1, style: 'linear' as const, incrSteps: 10 };
    expect([0, 5, 10, 11].map((n) => weightDecay(s, n))).toEqual([0, 0.05, 0.1, 0.1]);
    expect(weightDecay({ ...s, style: 'cosine' }, 5)).toBeCloseTo(0.05, 15);
    expect(weightDecay({ ...s, style: 'cosine' }, 2)).toBeCloseTo(0.1 * 0.5 * (1 - Math.cos(0.2 * Math.PI)), 15);
    expect(weightDecay({ start: 0.1, end: 0.1, style: 'constant', incrSteps: 10 }, 3)).toBe(0.1);
  });
});

/** `webtron train`'s flags for a one-rank tiny run plus `extra`, resolved. */
function resolve(extra: string[]) {
  const argv = [...'--num-layers 1 --hidden-size 8 --num-attention-heads 1 --seq-length 8 --micro-batch-size 1'.split(' '), ...extra];
  return resolveTrainConfig(parseFlags(argv, TRAIN_FLAGS, {}).values, 1);
}

describe('schedule flags, checked as Megatron checks them', () => {
  it('--train-samples sets the iterations, and the sample-based flags their defaults', () => {
    expect(resolve(['--lr', '1e-3', '--train-samples', '100', '--global-batch-size', '8'])).toMatchObject({
      trainIters: 12,
      trainSamples: 100,
      lrDecaySamples: 100,
      lrDecayIters: null,
    });
    expect(resolve(['--lr', '1e-3', '--train-iters', '7'])).toMatchObject({
      trainIters: 7,
      trainSamples: null,
      lrDecayIters: 7,
      lrDecaySamples: null,
    });
  });

  it.each([
    [['--train-iters', '5', '--train-samples', '40'], /^--train-iters and --train-samples exclude each other/],
    [
      ['--train-samples', '40', '--lr-decay-iters', '3'],
      /^--lr-decay-iters goes with --train-iters; this run gives --train-samples: use --lr-decay-samples$/,
    ],
    [
      ['--train-iters', '5', '--lr-warmup-samples', '4'],
      /^--lr-warmup-samples goes with --train-samples; this run gives --train-iters: use --lr-warmup-iters$/,
    ],
    [['--train-samples', '3', '--global-batch-size', '4'], /^--train-samples 3 is less than one global batch \(4 samples\)$/],
    [
      ['--train-iters', '5', '--lr-warmup-fraction', '0.1', '--lr-warmup-iters', '2'],
      /^--lr-warmup-fraction and --lr-warmup-iters exclude each other/,
    ],
    [['--train-iters', '5', '--lr-warmup-fraction', '1'], /^--lr-warmup-fraction must be in \[0, 1\), got 1$/],
    [['--train-iters', '5', '--lr-decay-style', 'WSD'], /^--lr-decay-style WSD needs --lr-wsd-decay-iters/],
    [
      ['--train-iters', '5', '--lr-decay-style', 'WSD', '--lr-wsd-decay-iters', '6'],
      /^--lr-wsd-decay-iters 6 must not exceed --lr-decay-iters 5$/,
    ],
    [
      ['--train-iters', '5', '--lr-wsd-decay-style', 'steep'],
      /^--lr-wsd-decay-style must be exponential, linear, cosine or minus_sqrt, got 'steep'$/,
    ],
    [['--train-iters', '5', '--start-weight-decay', '0.1'], /^--start-weight-decay needs --weight-decay-incr-style linear or cosine/],
    [['--train-iters', '5', '--weight-decay-incr-style', 'linear', '--end-weight-decay', '0.1'], /^--start-weight-decay is required/],
    [
      ['--train-iters', '5', '--weight-decay-incr-style', 'cosine', '--start-weight-decay', '0.2', '--end-weight-decay', '0.1'],
      /^--end-weight-decay 0.1 must be at least --start-weight-decay 0.2$/,
    ],
    [
      ['--train-iters', '5', '--weight-decay-incr-style', 'exponential'],
      /^--weight-decay-incr-style must be constant, linear or cosine, got 'exponential'$/,
    ],
    [['--train-iters', '5', '--decoupled-min-lr', '1e-5'], /^--decoupled-min-lr needs --decoupled-lr: /],
    [
      ['--train-iters', '5', '--min-lr', '1e-4', '--decoupled-lr', '5e-5'],
      /^--min-lr 0.0001 must not exceed --decoupled-lr 0.00005: .*; give --decoupled-min-lr$/,
    ],
    [
      ['--train-iters', '5', '--decoupled-lr', '1e-3', '--decoupled-min-lr', '2e-3'],
      /^--decoupled-min-lr 0.002 must not exceed --decoupled-lr 0.001: /,
    ],
    [['--train-iters', '5', '--decoupled-lr', '-1'], /^--decoupled-lr must be a number >= 0, got -1$/],
  ])('%j is a one-line FlagError', (extra, message) => {
    expect(() => resolve(['--lr', '1e-3', ...extra])).toThrow(FlagError);
    expect(() => resolve(['--lr', '1e-3', ...extra])).toThrow(message);
  });
});

// TINY without its --lr-warmup-iters 2: each run gives its own warmup.
const warmupAt = TINY.indexOf('--lr-warmup-iters');
const tiny = [...TINY.slice(0, warmupAt), ...TINY.slice(warmupAt + 2), '--hidden-dropout', '0', '--attention-dropout', '0'];

describe('webtron train with these schedules', () => {
  it('--train-samples repeats the same schedule given in iterations, loss for loss; WSD and a growing weight decay reach the optimizer', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([...tiny, '--global-batch-size', '4', '--lr-decay-style', 'cosine', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return join(base, name);
    };
    const iters = await run('iters', ['--train-iters', '6', '--lr-warmup-iters', '2', '--lr-decay-iters', '5']);
    const samples = await run('samples', ['--train-samples', '24', '--lr-warmup-samples', '8', '--lr-decay-samples', '20']);
    expectIdenticalLosses(losses(iters), losses(samples));
    expect(metrics(samples).map((m) => m.lr)).toEqual(metrics(iters).map((m) => m.lr));
    // The log's lr is the rate after the iteration's scheduler step, as Megatron logs it: 4 of 8 warmup samples done.
    expect(metrics(samples)[0]!.lr).toBeCloseTo(1.5e-3, 15);

    // WSD, linear, over the last 2 of 6 iterations: the rate after each step.
    const wsd = ['--train-iters', '6', '--lr-decay-style', 'WSD', '--lr-wsd-decay-iters', '2', '--lr-wsd-decay-style', 'linear'];
    const growing = await run('wd-growing', [
      ...wsd,
      '--weight-decay',
      '0.3', // not used: the decay goes from start to end
      '--weight-decay-incr-style',
      'linear',
      '--start-weight-decay',
      '0',
      '--end-weight-decay',
      '0.5',
    ]);
    const none = await run('wd-none', [...wsd, '--weight-decay', '0']);
    const rates = metrics(growing).map((m) => m.lr);
    for (const [i, lr] of [3e-3, 3e-3, 3e-3, 3e-3, 1.5e-3, 0].entries()) expect(rates[i], `iteration ${i + 1}`).toBeCloseTo(lr, 15);
    // The first step (at lr 3e-3) decays by the start's 0, as the run without decay; the second by 0.5 / 6.
    const [a, b] = [losses(growing), losses(none)];
    expect(a.get(2)).toBe(b.get(2));
    expect(a.get(3)).not.toBe(b.get(3));
  });
});

/** A checkpoint's params, each as its bytes. */
async function savedParams(path: string): Promise<Map<string, Buffer>> {
  const tensors = openModelTensors(path);
  const out = new Map<string, Buffer>();
  for (const p of tensors.params) {
    const chunks: Uint8Array[] = [];
    await tensors.stream(p.name, p.dtype, (bytes) => chunks.push(Uint8Array.from(bytes)));
    out.set(p.name, Buffer.concat(chunks));
  }
  await tensors.close();
  return out;
}

describe('--decoupled-lr', () => {
  it('the embedding and the untied output layer take their own rate: at 0 they keep their init while the rest trains; at --lr the run is the run without it', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const args = [...tiny, '--untie-embeddings-and-output-weights', '--use-distributed-optimizer', '--global-batch-size', '4'];
      const r = await train([...args, '--train-iters', '3', '--run-dir', join(base, name), '--save', join(base, name, 'ck'), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return { losses: losses(join(base, name)), params: await savedParams(join(base, name, 'ck')) };
    };
    const init = await run('lr-0', ['--lr', '0']); // no param moves: the init, saved
    const own0 = await run('decoupled-0', ['--decoupled-lr', '0']);
    const moved = [...init.params.keys()].filter((name) => !init.params.get(name)!.equals(own0.params.get(name)!));
    // Every param but the two trained (the position table is not one of them).
    expect(moved.sort()).toEqual([...init.params.keys()].filter((name) => name !== 'wte.weight' && name !== 'lm_head.weight').sort());
    expect(moved).toContain('wpe.weight');

    const plain = await run('plain', []);
    const own = await run('decoupled-at-lr', ['--decoupled-lr', '3e-3', '--decoupled-min-lr', '0']);
    expectIdenticalLosses(plain.losses, own.losses);
    for (const [name, bytes] of plain.params) expect(own.params.get(name)!.equals(bytes), name).toBe(true);
    expect(own0.losses.get(3)).not.toBe(plain.losses.get(3));
  });
});

/** Megatron's batch under --rampup-batch-size START INCR SAMPLES, as its RampupBatchsizeNumMicroBatchesCalculator computes it. */
function megatronRampup(start: number, incr: number, samples: number, global: number, consumed: number): number {
  if (consumed > samples) return global;
  const perIncrement = samples / ((global - start) / incr);
  return start + Math.floor(consumed / perIncrement) * incr;
}

/** Megatron's update_train_iters with a rampup: the rampup's iterations, then whole global batches. */
function megatronRampupIters(start: number, incr: number, samples: number, global: number, trainSamples: number): number {
  let [n, consumed] = [0, 0];
  for (; consumed <= samples && consumed <= trainSamples; n++) consumed += megatronRampup(start, incr, samples, global, consumed);
  return n + (trainSamples > consumed ? Math.floor((trainSamples - consumed) / global) : 0);
}

describe('batch-size schedules: --rampup-batch-size and --step-batch-size-schedule', () => {
  const resolveAt = (d: number, extra: string[]) =>
    resolveTrainConfig(
      parseFlags(
        [...'--num-layers 1 --hidden-size 8 --num-attention-heads 1 --seq-length 8 --lr 1e-3'.split(' '), ...extra],
        TRAIN_FLAGS,
        {},
      ).values,
      d,
    );

  it("--rampup-batch-size gives Megatron's batch at every consumed count, and its iterations", () => {
    // [start, increment, samples, global batch, d]: ramps of one and many steps, SAMPLES not a multiple
    // of the increments (10 over 3: Megatron's float division falls short at 10), more increments than samples.
    for (const [start, incr, samples, global, d] of [
      [2, 2, 8, 6, 2],
      [4, 4, 10, 16, 1],
      [1, 1, 3, 8, 1],
      [8, 8, 1000, 64, 4],
      [6, 6, 29, 60, 3],
    ] as const) {
      for (const trainSamples of [global, samples, samples + 1, 3 * samples + 7]) {
        const cfg = resolveAt(d, [
          ...['--micro-batch-size', '1', '--global-batch-size', String(global), '--train-samples', String(trainSamples)],
          ...['--rampup-batch-size', String(start), String(incr), String(samples)],
        ]);
        for (let consumed = 0; consumed <= samples + 2; consumed++)
          expect(globalBatchAt(cfg, consumed), `${[start, incr, samples, global]} at ${consumed}`).toBe(
            megatronRampup(start, incr, samples, global, consumed),
          );
        expect(cfg.trainIters, `${[start, incr, samples, global]} for ${trainSamples}`).toBe(
          megatronRampupIters(start, incr, samples, global, trainSamples),
        );
        expect(cfg.gradAccumulation).toBe(global / d);
      }
    }
  });

  it('--step-batch-size-schedule: thresholds in tokens (K, M, B, T) made samples, and iterations until the samples are reached', () => {
    const cfg = resolveAt(2, ['--micro-batch-size', '2', '--train-samples', '100', '--step-batch-size-schedule', '1k:8, 0:4 2.5K:12']);
    expect(cfg.batchSizeSchedule).toEqual([
      [0, 4],
      [125, 8], // 1000 tokens of 8
      [312, 12], // 2500 tokens, rounded down
    ]);
    expect(cfg.globalBatchSize).toBe(12);
    expect(cfg.trainIters).toBe(25); // 100 samples at 4, not a partial batch fewer
    expect(resolveAt(2, ['--micro-batch-size', '2', '--train-samples', '130', '--step-batch-size-schedule', '0:4 1K:8']).trainIters).toBe(
      32 + 1, // 128 samples at 4 reach 125; one batch of 8 ends at 136 >= 130
    );
  });

  it.each([
    [
      ['--train-iters', '5', '--global-batch-size', '4', '--rampup-batch-size', '2', '2', '8'],
      /^--rampup-batch-size needs a run in samples/,
    ],
    [['--train-samples', '50', '--rampup-batch-size', '2', '2', '8'], /^--rampup-batch-size needs --global-batch-size/],
    [['--train-samples', '50', '--global-batch-size', '8', '--rampup-batch-size', '2', '2'], /^--rampup-batch-size takes three integers/],
    [
      ['--train-samples', '50', '--global-batch-size', '8', '--rampup-batch-size', '2', '4', '8'],
      /^--rampup-batch-size: INCREMENT 4 must be at least 1 and divide --global-batch-size 8 - START 2 = 6$/,
    ],
    [['--train-samples', '50', '--global-batch-size', '8', '--rampup-batch-size', '10', '2', '8'], /START 10 must be from 1 to/],
    [
      ['--train-samples', '50', '--global-batch-size', '8', '--rampup-batch-size', '3', '5', '8'],
      /^--rampup-batch-size: the global batch 3 \(from sample 0\) is not divisible by --micro-batch-size 1 × data-parallel size 2 = 2$/,
    ],
    [
      ['--train-samples', '50', '--global-batch-size', '8', '--step-batch-size-schedule', '0:2 1K:8'],
      /^--step-batch-size-schedule and --global-batch-size exclude each other/,
    ],
    [['--train-samples', '50', '--step-batch-size-schedule', '8:2 1K:8'], /^--step-batch-size-schedule must start at threshold 0/],
    [['--train-samples', '50', '--step-batch-size-schedule', '0:2 1K'], /^--step-batch-size-schedule: '1K' is not THRESHOLD:BATCH/],
    [['--train-samples', '50', '--step-batch-size-schedule', '0:2 3:4'], /two thresholds fall on sample 0/],
    [
      ['--train-samples', '50', '--step-batch-size-schedule', '0:2', '--rampup-batch-size', '2', '2', '8'],
      /^--step-batch-size-schedule and --rampup-batch-size exclude each other/,
    ],
  ])('%j is a one-line FlagError', (extra, message) => {
    expect(() => resolveAt(2, ['--micro-batch-size', '1', ...extra])).toThrow(message);
  });

  it('a run that ramps up its batch at d = 2 repeats, loss for loss, runs resumed with each batch by hand', async () => {
    const base = dir();
    const common = [
      ...tiny,
      ...['--nproc-per-node', '2', '--micro-batch-size', '1', '--hidden-dropout', '0.1'],
      ...['--lr-warmup-samples', '4', '--lr-decay-samples', '26', '--train-samples', '26'],
    ];
    const run = async (name: string, extra: string[]) => {
      const r = await train([...common, '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return r;
    };
    // From 2 to 6 in steps of 2 over 8 samples: batches 2, 2, 4, then 6 (consumed 0, 2, 4, 8, 14, 20).
    const ramp = await run('ramp', ['--rampup-batch-size', '2', '2', '8', '--global-batch-size', '6']);
    expect([...ramp.stdout.matchAll(/global batch size: +(\d+)/g)].map((m) => Number(m[1]))).toEqual([2, 2, 4, 6, 6, 6]);
    const ck = join(base, 'ck');
    await run('batch-2', ['--global-batch-size', '2', '--exit-interval', '2', '--save', ck]);
    await run('batch-4', ['--global-batch-size', '4', '--exit-interval', '3', '--save', ck]);
    // 38 samples: six iterations of 6 in all; the schedule, in samples, is the flags' (the same as the others').
    await run('batch-6', ['--global-batch-size', '6', '--train-samples', '38', '--save', ck, '--override-opt_param-scheduler']);
    const pieces = new Map([...losses(join(base, 'batch-2')), ...losses(join(base, 'batch-4')), ...losses(join(base, 'batch-6'))]);
    expectIdenticalLosses(losses(join(base, 'ramp')), pieces);
  });
});

describe('the schedule on a resume, as Megatron checks it', () => {
  it('flags that change it stop the run in one line; --use-checkpoint-opt_param-scheduler keeps the checkpoint’s, --override-opt_param-scheduler takes the flags’', async () => {
    const base = dir();
    const common = [...TINY, '--hidden-dropout', '0', '--attention-dropout', '0', '--lr-decay-style', 'cosine'];
    const run = (name: string, extra: string[]) => train([...common, '--run-dir', join(base, name), ...extra]);
    const ok = async (name: string, extra: string[]) => {
      const r = await run(name, extra);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return losses(join(base, name));
    };
    // Decay over 4 iterations, then the minimum; and decay over 6.
    const four = await ok('four', ['--train-iters', '6', '--lr-decay-iters', '4']);
    const six = await ok('six', ['--train-iters', '6']);
    // Saved at iteration 2 of 4; both schedules warm up over the same 2 iterations, so far the same.
    const ck = join(base, 'ck');
    await ok('first', ['--train-iters', '4', '--exit-interval', '2', '--save', ck]);
    const changed = await run('changed', ['--train-iters', '6', '--load', ck]);
    expect(changed.code).toBe(2);
    expect(changed.stderr.trim()).toMatch(
      /^webtron train: \S+iter_0000002\/index.json: the schedule's decay samples is 8 in the checkpoint but 12 by the flags \(and 1 more differ\); give --override-opt_param-scheduler to train with the flags' schedule, or --use-checkpoint-opt_param-scheduler to keep the checkpoint's$/,
    );
    const decoupled = await run('decoupled', ['--train-iters', '4', '--load', ck, '--decoupled-lr', '1e-3']);
    expect(decoupled.code).toBe(2);
    expect(decoupled.stderr.trim()).toMatch(
      /the schedule's decoupled learning rate is null in the checkpoint but 0.001 by the flags; give --override/,
    );
    // The checkpoint's schedule (decay over 4 iterations) to iteration 6: the run that decays over 4, loss for loss.
    const kept = await ok('kept', ['--train-iters', '6', '--load', ck, '--use-checkpoint-opt_param-scheduler']);
    for (const it of [3, 4, 5, 6]) expect(kept.get(it), `iteration ${it}`).toBe(four.get(it));
    // The flags' schedule: the run that decays over 6.
    const overridden = await ok('overridden', ['--train-iters', '6', '--load', ck, '--override-opt_param-scheduler']);
    for (const it of [3, 4, 5, 6]) expect(overridden.get(it), `iteration ${it}`).toBe(six.get(it));
    expect(overridden.get(5)).not.toBe(kept.get(5));
  });
});
