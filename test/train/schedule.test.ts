/**
 * Megatron's schedules beyond warmup-then-decay: inverse-square-root and WSD decay, warmup as a
 * fraction, schedules in samples (--train-samples), and weight decay that grows. The references
 * are values worked out by hand from the formulas of Megatron's OptimizerParamScheduler, the same
 * schedule given in iterations and in samples, and a run without the feature.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FlagError, parseFlags } from '../../src/cli/flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from '../../src/cli/train-flags.js';
import { learningRate, lrScheduleOf, weightDecay, type LrSchedule } from '../../src/train/schedule.js';
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

  it('a schedule in samples counts a global batch per step; warmup as a fraction of the decay', () => {
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
    const s = lrScheduleOf(flags, 8);
    expect(learningRate(s, 1)).toBeCloseTo(8 / 12, 15);
    expect(learningRate(s, 2)).toBeCloseTo(1 - 4 / 68, 15);
    expect(learningRate(s, 10)).toBe(0); // 80 samples: the end of the decay
    const fraction = lrScheduleOf(resolve(['--train-iters', '50', '--lr', '1', '--lr-warmup-fraction', '0.1']), 8);
    expect(fraction).toMatchObject({ warmupSteps: 5, decaySteps: 50, perStep: 1 });
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
  ])('%j is a one-line FlagError', (extra, message) => {
    expect(() => resolve(['--lr', '1e-3', ...extra])).toThrow(FlagError);
    expect(() => resolve(['--lr', '1e-3', ...extra])).toThrow(message);
  });
});

describe('webtron train with these schedules', () => {
  // TINY without its --lr-warmup-iters 2: each run gives its own warmup.
  const warmupAt = TINY.indexOf('--lr-warmup-iters');
  const tiny = [...TINY.slice(0, warmupAt), ...TINY.slice(warmupAt + 2), '--hidden-dropout', '0', '--attention-dropout', '0'];

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
