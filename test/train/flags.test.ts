import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TRACKER } from '../../src/checkpoint/dir.js';
import { type TrainConfig, withDefaultLoad } from '../../src/train/config.js';
import { describe, expect, it } from 'vitest';
import { FlagError, nearestFlags, parseFlags, type FlagSpec } from '../../src/cli/flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from '../../src/cli/train-flags.js';

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
  it('without --load, --save when it holds a checkpoint; on a restart, --save even when --load names another', () => {
    const save = mkdtempSync(join(tmpdir(), 'webtron-default-load-'));
    const cfg = (load: string | null) => ({ load, save }) as TrainConfig;
    expect(withDefaultLoad(cfg(null)).load).toBeNull(); // nothing saved yet
    expect(withDefaultLoad(cfg(null), true).load).toBeNull();
    writeFileSync(join(save, TRACKER), '5\n');
    expect(withDefaultLoad(cfg(null)).load).toBe(save);
    expect(withDefaultLoad(cfg('/pretrained')).load).toBe('/pretrained');
    expect(withDefaultLoad(cfg('/pretrained'), true).load).toBe(save);
    expect(withDefaultLoad({ load: '/pretrained', save: null } as TrainConfig, true).load).toBe('/pretrained');
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
