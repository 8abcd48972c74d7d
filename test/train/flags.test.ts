import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TRACKER } from '../../src/checkpoint/dir.js';
import { ConfigError } from '../../src/errors.js';
import { type TrainConfig, withDefaultLoad } from '../../src/train/config.js';
import { describe, expect, it } from 'vitest';
import { FlagError, nearestFlags, parseFlags, type FlagSpec } from '../../src/cli/flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from '../../src/cli/train-flags.js';
import { REFUSED, WITHOUT_EFFECT } from '../../src/cli/megatron-flags.js';
import { launchCommand } from '../../src/cli/launch.js';

const specs: Record<string, FlagSpec> = {
  backend: { kind: 'string', env: 'WEBTRON_BACKEND', help: 'backend' },
  steps: { kind: 'int', default: 10, help: 'steps' },
  lr: { kind: 'number', help: 'learning rate' },
  json: { kind: 'boolean', help: 'json' },
  sizes: { kind: 'list', help: 'sizes' },
};

describe('parseFlags', () => {
  it('reads --name value, --name=value, booleans, lists and positionals', () => {
    const { values, positional } = parseFlags(['adam', '--steps', '5', '--lr=3e-4', '--json', '--sizes', '1K, 2M', 'x'], specs, {});
    expect(values).toEqual({ steps: 5, lr: 3e-4, json: true, sizes: ['1K', '2M'] });
    expect(positional).toEqual(['adam', 'x']);
  });
  it('falls back to the environment, then to the default', () => {
    expect(parseFlags([], specs, { WEBTRON_BACKEND: 'vulkan' }).values).toEqual({ backend: 'vulkan', steps: 10 });
    expect(parseFlags(['--backend', 'metal'], specs, { WEBTRON_BACKEND: 'vulkan' }).values.backend).toBe('metal');
  });
  it('gives one-line errors that name the flag', () => {
    expect(() => parseFlags(['--stepz', '1'], specs, {})).toThrow(
      new FlagError("unknown flag --stepz; did you mean --steps? --help lists this command's flags"),
    );
    expect(() => parseFlags(['--xyzzy'], specs, {})).toThrow(new FlagError("unknown flag --xyzzy; --help lists this command's flags"));
    expect(() => parseFlags(['--steps', 'ten'], specs, {})).toThrow(new FlagError("--steps: expected an integer, got 'ten'"));
    expect(() => parseFlags(['--lr'], specs, {})).toThrow(/--lr needs a value/);
    expect(() => parseFlags(['--json=maybe'], specs, {})).toThrow(/^--json is a switch: give it without a value$/);
    expect(parseFlags(['--lr', '-1e-3', '--', '--json'], specs, {})).toMatchObject({ values: { lr: -1e-3 }, positional: ['--json'] });
    expect(() => parseFlags(['--lr', '--json'], specs, {})).toThrow(/^--lr needs a value/);
    expect(() => parseFlags([], { n: { kind: 'int', env: 'N', help: '' } }, { N: '1.5' })).toThrow(/^N \(for --n\): expected an integer/);
  });
});

describe("torchrun's flags spelled with underscores", () => {
  const launcher: Record<string, FlagSpec> = {
    'nproc-per-node': { kind: 'int', default: 1, help: 'workers', underscored: true },
    'master-addr': { kind: 'string', help: 'address', underscored: true },
    'micro-batch-size': { kind: 'int', help: 'samples' },
    tail: { kind: 'strings', help: 'words' },
  };
  it('read as the dashed flag, --a_b value and --a_b=value; other flags and what follows -- are left as they are', () => {
    const dashed = parseFlags(['--nproc-per-node', '4', '--master-addr=10.0.0.2'], launcher, {}).values;
    expect(parseFlags(['--nproc_per_node', '4', '--master_addr=10.0.0.2'], launcher, {}).values).toEqual(dashed);
    expect(() => parseFlags(['--micro_batch_size', '2'], launcher, {})).toThrow(
      /^unknown flag --micro_batch_size; did you mean --micro-batch-size\?/,
    );
    expect(parseFlags(['--', '--nproc_per_node'], launcher, {}).positional).toEqual(['--nproc_per_node']);
    expect(parseFlags(['--tail', 'a_b', 'x'], launcher, {}).values.tail).toEqual(['a_b', 'x']);
  });
  it("webtron train and webtron launch take them for torchrun's five", () => {
    for (const name of ['nproc-per-node', 'node-rank', 'master-addr', 'master-port', 'max-restarts']) {
      expect(TRAIN_FLAGS[name]!.underscored, name).toBe(true);
      expect(launchCommand.flags[name]!.underscored, name).toBe(true);
    }
  });
});

describe('nearestFlags: what a mistyped flag most likely meant', () => {
  const known = Object.keys(TRAIN_FLAGS);
  it.each([
    ['train-iter', ['train-iters']],
    ['micro_batch_size', ['micro-batch-size']],
    ['hiden-size', ['hidden-size']],
    ['num-layesr', ['num-layers']],
    ['warmup', ['lr-warmup-iters', 'lr-warmup-samples', 'lr-warmup-fraction']],
    ['geglu', []],
    ['x', []],
    ['lrr', ['lr']],
  ])('--%s: %j', (typed, want) => {
    const got = nearestFlags(typed, known);
    // The closest by edits come first, sorted by name; those containing it follow in the known order.
    expect(got.slice().sort()).toEqual(want.slice().sort());
  });
});

describe('withDefaultLoad: which checkpoint a run, a re-run and a restarted worker load', () => {
  it('without --load, --save when it holds a checkpoint; on a restart, --save even when --load names another; --load of an empty --save, nothing', () => {
    const save = mkdtempSync(join(tmpdir(), 'webtron-default-load-'));
    const cfg = (load: string | null) => ({ load, save }) as TrainConfig;
    expect(withDefaultLoad(cfg(null)).load).toBeNull(); // nothing saved yet
    expect(withDefaultLoad(cfg(null), true).load).toBeNull();
    // Megatron's --save DIR --load DIR before the first save: nothing to load yet.
    expect(withDefaultLoad(cfg(`${save}/`)).load).toBeNull();
    expect(withDefaultLoad(cfg('/elsewhere')).load).toBe('/elsewhere');
    writeFileSync(join(save, TRACKER), '5\n');
    expect(withDefaultLoad(cfg(null)).load).toBe(save);
    expect(withDefaultLoad(cfg('/pretrained')).load).toBe('/pretrained');
    expect(withDefaultLoad(cfg('/pretrained'), true).load).toBe(save);
    expect(withDefaultLoad({ load: '/pretrained', save: null } as TrainConfig, true).load).toBe('/pretrained');
  });

  it('--exit-on-missing-checkpoint: --load of an empty --save stops the run instead of starting it from a random init', () => {
    const save = mkdtempSync(join(tmpdir(), 'webtron-default-load-'));
    const cfg = { load: save, save, exitOnMissingCheckpoint: true } as TrainConfig;
    expect(() => withDefaultLoad(cfg)).toThrow(
      new ConfigError(
        `exitOnMissingCheckpoint: the load folder ${save} holds no checkpoint (no ${TRACKER}); give a folder a run saved to, or leave the flag out to start from a random init`,
        'exitOnMissingCheckpoint',
      ),
    );
    writeFileSync(join(save, TRACKER), '5\n');
    expect(withDefaultLoad(cfg).load).toBe(save);
  });
});

describe("Megatron's model-parallel sizes", () => {
  const resolve = (extra: string[]) =>
    resolveTrainConfig(
      parseFlags(
        [
          ...'--num-layers 1 --hidden-size 8 --num-attention-heads 1 --seq-length 8 --micro-batch-size 1 --train-iters 2 --lr 1e-3'.split(
            ' ',
          ),
          ...extra,
        ],
        TRAIN_FLAGS,
        {},
      ).values,
      2,
    );
  it('are taken at 1, as Megatron scripts give them, and refused above with the data-parallel size named', () => {
    expect(
      resolve(['--tensor-model-parallel-size', '1', '--pipeline-model-parallel-size', '1', '--context-parallel-size', '1']),
    ).toMatchObject({
      dataParallelSize: 2,
    });
    expect(() => resolve(['--pipeline-model-parallel-size', '4'])).toThrow(
      new FlagError(
        '--pipeline-model-parallel-size 4: webtron trains data-parallel only, every rank holding the whole model; give 1 (the data-parallel size is the world size: 2 here)',
      ),
    );
  });
});

describe('Megatron flags a script carries', () => {
  const base = '--num-layers 2 --hidden-size 8 --num-attention-heads 1 --seq-length 8 --micro-batch-size 1 --train-iters 2 --lr 1e-3'.split(
    ' ',
  );
  const resolve = (extra: string[]) => resolveTrainConfig(parseFlags([...base, ...extra], TRAIN_FLAGS, {}).values, 1);
  const sampleValue = (spec: FlagSpec) => (spec.kind === 'boolean' ? [] : spec.kind === 'int' ? ['2'] : ['x']);
  // --ckpt-format is without effect as torch_dist only: Megatron's default, which webtron's own format stands for.
  const withoutEffectValue = (name: string, spec: FlagSpec) => (name === 'ckpt-format' ? ['torch_dist'] : sampleValue(spec));

  it('without effect: the config of the same flags without them, and each named with why', () => {
    const given = Object.entries(WITHOUT_EFFECT).flatMap(([name, spec]) => [`--${name}`, ...withoutEffectValue(name, spec)]);
    const { flagsWithoutEffect, ...rest } = resolve(given);
    const { flagsWithoutEffect: none, ...plain } = resolve([]);
    expect(rest).toEqual(plain);
    expect(none).toEqual([]);
    expect(flagsWithoutEffect.map((f) => f.flag)).toEqual(Object.keys(WITHOUT_EFFECT).map((name) => `--${name}`));
    for (const f of flagsWithoutEffect) expect(f.why, f.flag).toBe(WITHOUT_EFFECT[f.flag.slice(2)]!.help);
  });

  it("--dataloader-type single is Megatron's default for pretraining, webtron's order: the config without it; cyclic and external are refused", () => {
    expect(resolve(['--dataloader-type', 'single'])).toEqual(resolve([]));
    for (const other of ['cyclic', 'external']) expect(() => resolve(['--dataloader-type', other])).toThrow(/are not built: give single/);
  });

  it('--ckpt-format other than torch_dist is refused in one line: webtron writes one format', () => {
    for (const format of ['torch', 'torch_dcp', 'fsdp_dtensor'])
      expect(() => resolve(['--ckpt-format', format])).toThrow(
        new FlagError(
          `--ckpt-format ${format}: webtron writes one format, its own files in Megatron's folder layout (docs/checkpoints.md); give torch_dist, Megatron's default, which it stands for, or leave the flag out`,
        ),
      );
  });

  it.each(Object.entries(REFUSED))('--%s is refused in one line that says why', (name, spec) => {
    expect(() => resolve([`--${name}`, ...sampleValue(spec)])).toThrow(new FlagError(`--${name}: ${spec.refused}`));
  });

  it("result validation takes Megatron's flags, defaults and choices, and refuses others in one line", () => {
    expect(resolve([])).toMatchObject({
      rerunMode: 'validate_results',
      errorInjectionRate: 0,
      errorInjectionType: 'transient_error',
      checkForSpikyLoss: false,
      checkForLargeGrads: false,
      resultRejectedTrackerFilename: null,
      iterationsToSkip: [],
    });
    expect(
      resolve([
        '--rerun-mode',
        'report_stats',
        '--error-injection-rate',
        '5',
        '--error-injection-type',
        'correct_result',
        '--iterations-to-skip',
        '9',
        '3',
        '9',
      ]),
    ).toMatchObject({ rerunMode: 'report_stats', errorInjectionRate: 5, errorInjectionType: 'correct_result', iterationsToSkip: [3, 9] });
    expect(() => resolve(['--rerun-mode', 'report_determinism_stats'])).toThrow(
      new FlagError("--rerun-mode must be disabled, validate_results or report_stats, got 'report_determinism_stats'"),
    );
    expect(() => resolve(['--error-injection-type', 'flaky'])).toThrow(
      new FlagError("--error-injection-type must be correct_result, transient_error or persistent_error, got 'flaky'"),
    );
    expect(() => resolve(['--error-injection-rate', '-1'])).toThrow(/^--error-injection-rate must be an integer of at least 0, got -1$/);
    expect(() => resolve(['--iterations-to-skip', '0'])).toThrow(
      new FlagError("--iterations-to-skip: '0' is not an iteration; give whole numbers from 1"),
    );
    const folder = mkdtempSync(join(tmpdir(), 'webtron-tracker-'));
    expect(() => resolve(['--result-rejected-tracker-filename', folder])).toThrow(
      new FlagError(`--result-rejected-tracker-filename: ${folder} is a folder; give a file to append to`),
    );
  });

  it('--data-args-path and --per-split-data-args-path read the data paths from a file: the config of the same words given as flags', () => {
    const folder = mkdtempSync(join(tmpdir(), 'webtron-data-args-'));
    const file = (name: string, text: string) => {
      writeFileSync(join(folder, name), text);
      return join(folder, name);
    };
    const blend = ['0.7', '/data/a_text_document', '0.3', '/data/b_text_document'];
    const plain = resolve(['--data-path', ...blend]);
    expect(resolve(['--data-args-path', file('blend.txt', `${blend.slice(0, 2).join(' ')}\n${blend.slice(2).join('\t')}\n`)])).toEqual(
      plain,
    );
    const perSplit = resolve([
      '--train-data-path',
      ...blend,
      '--valid-data-path',
      '/data/v_text_document',
      '--test-data-path',
      '/data/t_text_document',
    ]);
    const json = { train: blend, valid: '/data/v_text_document', test: ['/data/t_text_document'] };
    expect(resolve(['--per-split-data-args-path', file('splits.json', JSON.stringify(json))])).toEqual(perSplit);
    expect(() => resolve(['--data-args-path', join(folder, 'missing.txt')])).toThrow(
      new FlagError(`--data-args-path ${join(folder, 'missing.txt')}: cannot read it (ENOENT); give the file that holds the data paths`),
    );
    expect(() => resolve(['--data-args-path', file('blend2.txt', 'x'), '--data-path', 'y'])).toThrow(
      new FlagError('--data-path and --data-args-path exclude each other: give the paths or the file that holds them'),
    );
    expect(() => resolve(['--per-split-data-args-path', file('bad.json', '{"train": ')])).toThrow(
      /^--per-split-data-args-path \S+bad\.json: not JSON \(/,
    );
    expect(() => resolve(['--per-split-data-args-path', file('nosplit.json', '{"valid": ["v"]}')])).toThrow(
      new FlagError(
        `--per-split-data-args-path ${join(folder, 'nosplit.json')}: no "train" key; give {"train": [...], "valid": [...], "test": [...]}`,
      ),
    );
  });

  it("--split as Megatron's scripts pass it, quotes and all, is the split without them", () => {
    expect(resolve(['--split', "'99,1,0'"]).split).toEqual(resolve(['--split', '99,1,0']).split);
    expect(resolve(['--split', '"98,2"']).split).toEqual([0.98, 0.02, 0]);
    expect(() => resolve(['--split', "'99,x'"])).toThrow(/^--split: expected one to three non-negative proportions/);
  });

  it("--use-flash-attn is --attention-backend flash, and contradicts the unfused kernel's names; selective recomputation's modules", () => {
    expect(resolve(['--use-flash-attn']).attentionBackend).toBe('flash');
    expect(resolve(['--use-flash-attn', '--attention-backend', 'fused']).attentionBackend).toBe('fused');
    expect(resolve([]).attentionBackend).toBe('auto');
    // Selective recomputation is the fused kernel's: it makes auto flash too.
    expect(resolve(['--recompute-activations']).attentionBackend).toBe('flash');
    expect(resolve(['--recompute-granularity', 'selective', '--attention-backend', 'fused']).attentionBackend).toBe('fused');
    // --recompute-modules: core_attn (the default) is the fused kernel's; mlp alone leaves the backend as it is.
    const mlp = resolve(['--recompute-granularity', 'selective', '--recompute-modules', 'mlp']);
    expect([mlp.attentionBackend, mlp.recompute]).toEqual(['auto', { method: 'mlp' }]);
    const both = resolve(['--recompute-activations', '--recompute-modules', 'core_attn', 'mlp']);
    expect([both.attentionBackend, both.recompute]).toEqual(['flash', { method: 'mlp' }]);
    for (const [flags, message] of [
      [
        ['--recompute-activations', '--recompute-modules', 'attn'],
        "--recompute-modules: 'attn' is not one of Megatron's modules; give core_attn and/or mlp",
      ],
      [['--recompute-modules', 'mlp'], '--recompute-modules needs --recompute-granularity selective (or --recompute-activations)'],
      [
        ['--recompute-granularity', 'full', '--recompute-method', 'uniform', '--recompute-modules', 'mlp'],
        '--recompute-modules is for --recompute-granularity selective; full recomputation runs whole blocks again',
      ],
      [
        ['--recompute-activations', '--recompute-modules', 'mlp', 'moe_act'],
        '--recompute-modules moe_act: webtron builds dense GPTs, without mixture-of-experts layers; give core_attn and/or mlp',
      ],
    ] as const)
      expect(() => resolve([...flags]), flags.join(' ')).toThrow(new FlagError(message));
    const unfused = resolve(['--recompute-activations', '--recompute-modules', 'mlp', '--attention-backend', 'unfused']);
    expect([unfused.attentionBackend, unfused.recompute, unfused.recomputeGranularity]).toEqual([
      'unfused',
      { method: 'mlp' },
      'selective',
    ]);
    expect(() => resolve(['--use-flash-attn', '--attention-backend', 'local'])).toThrow(
      new FlagError('--use-flash-attn is --attention-backend flash; it contradicts --attention-backend local: give one'),
    );
  });
});
