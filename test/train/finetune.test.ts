/**
 * `webtron train --load DIR --finetune`, `--no-load-optim` and `--no-save-optim`, Megatron's flags
 * for starting anew from a checkpoint and for checkpoints without the optimizer's state, at d = 2
 * with the distributed optimizer (each rank skips its own moment shards). The references: a run that starts from the same params through --init-from (an ONNX export of the
 * checkpoint), and Adam's own algebra after one step from fresh moments.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { withDefaultLoad, type TrainConfig } from '../../src/train/config.js';
import { BIN, dir, expectIdenticalLosses, losses, metricsOf as metrics, TINY, train } from '../helpers/train.js';

const D2 = ['--nproc-per-node', '2', '--use-distributed-optimizer', '--global-batch-size', '4'];
const DROPOUT = ['--hidden-dropout', '0.1', '--attention-dropout', '0.1'];

/** The F32 tensors of a safetensors file, read from the format's spec: an 8-byte little-endian header length, the JSON header, the data. */
function readF32Tensors(file: string): Map<string, Float32Array> {
  const bytes = readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, Float32Array>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    expect(t.dtype, name).toBe('F32');
    const [start, end] = t.data_offsets;
    const data = bytes.subarray(8 + headerLength + start, 8 + headerLength + end);
    tensors.set(name, new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)));
  }
  return tensors;
}

/** A checkpoint's newest iteration folder, its iteration and Adam's step from index.json. */
function newest(save: string): { folder: string; iteration: number; step: number } {
  const iteration = Number(readFileSync(join(save, 'latest_checkpointed_iteration.txt'), 'utf8').trim());
  const folder = join(save, `iter_${String(iteration).padStart(7, '0')}`);
  const index = JSON.parse(readFileSync(join(folder, 'index.json'), 'utf8')) as { step: number };
  return { folder, iteration, step: index.step };
}

describe('webtron train --finetune and --no-load-optim', () => {
  it('--finetune repeats a run from the same params by --init-from, loss for loss; --no-load-optim resumes the data with fresh Adam moments', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([...TINY, ...D2, ...DROPOUT, '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return r;
    };
    await run('pretrain', ['--train-iters', '4', '--save', join(base, 'pretrained')]);
    const onnx = join(base, 'pretrained.onnx');
    const exported = spawnSync(process.execPath, [BIN, 'export', '--load', join(base, 'pretrained'), '--output', onnx], {
      encoding: 'utf8',
    });
    expect(exported.status, exported.stderr).toBe(0);

    // Fine-tuning at another lr: iterations 1..3 from the checkpoint's params, fresh optimizer, data from its start.
    const tune = ['--train-iters', '3', '--lr', '1e-3'];
    const finetuned = await run('finetune', [...tune, '--load', join(base, 'pretrained'), '--finetune', '--save', join(base, 'finetuned')]);
    expect(finetuned.stdout).toMatch(/to finetune: iteration 0, a fresh optimizer/);
    await run('init-from', [...tune, '--init-from', onnx]);
    const [a, b] = [losses(join(base, 'finetune')), losses(join(base, 'init-from'))];
    expect([...a.keys()]).toEqual([1, 2, 3]);
    expectIdenticalLosses(b, a);
    expect(metrics(join(base, 'finetune'))[0]!.consumed_samples).toBe(4);
    expect(newest(join(base, 'finetuned'))).toMatchObject({ iteration: 3, step: 3 });

    // --pretrained-checkpoint: the same command twice, stopped after 2 iterations the first time
    // (nothing under --save: it fine-tunes) and resumed the second (from --save), is the run above.
    const again = [
      ...tune,
      '--pretrained-checkpoint',
      join(base, 'pretrained'),
      '--save',
      join(base, 'tuned-twice'),
      '--exit-interval',
      '2',
    ];
    const first = await run('pretrained-a', again);
    expect(first.stdout).toMatch(/to finetune: iteration 0, a fresh optimizer/);
    const second = await run('pretrained-b', again);
    expect(second.stdout).toMatch(/tuned-twice\/iter_0000002: iteration 2, 8 samples consumed\n/);
    const twice = new Map([...losses(join(base, 'pretrained-a')), ...losses(join(base, 'pretrained-b'))]);
    expect([...losses(join(base, 'pretrained-b')).keys()]).toEqual([3]);
    expectIdenticalLosses(a, twice);

    // --no-load-optim: iteration 5 follows the checkpoint's 4 (and its 16 samples), Adam starts at step 0.
    const pretrain = metrics(join(base, 'pretrain'));
    const resumed = await run('no-load-optim', [
      '--train-iters',
      '5',
      '--load',
      join(base, 'pretrained'),
      '--no-load-optim',
      '--save',
      join(base, 'no-optim'),
    ]);
    expect(resumed.stdout).toMatch(/iteration 4, 16 samples consumed; the optimizer starts afresh \(--no-load-optim\)/);
    const [fifth] = metrics(join(base, 'no-load-optim'));
    expect(fifth).toMatchObject({ iteration: 5, consumed_samples: 20 });
    expect(fifth!.lr).toBe(pretrain[0]!.lr); // the schedule counts Adam's steps: its first again
    expect(pretrain[3]!.lr).not.toBe(pretrain[0]!.lr);
    const saved = newest(join(base, 'no-optim'));
    expect(saved).toMatchObject({ iteration: 5, step: 1 });
    // After one step from zero moments, m = (1 - β1) g and v = (1 - β2) g² for every element (clipped
    // or not), so m² (1 - β2) = v (1 - β1)²; moments carried over from the checkpoint break it.
    const state = new Map<string, Float32Array>();
    for (const f of readdirSync(saved.folder).filter((f) => f.startsWith('optim-')))
      for (const [name, t] of readF32Tensors(join(saved.folder, f))) state.set(name, t);
    const [beta1, beta2] = [0.9, 0.999];
    let checked = 0;
    for (const [name, m] of state) {
      if (!name.startsWith('exp_avg/')) continue;
      const v = state.get(name.replace(/^exp_avg\//, 'exp_avg_sq/'))!;
      expect(v, name).toBeDefined();
      for (let i = 0; i < m.length; i++) {
        const [lhs, rhs] = [m[i]! * m[i]! * (1 - beta2), v[i]! * (1 - beta1) ** 2];
        if (rhs < 1e-30) continue;
        expect(Math.abs(lhs - rhs) / rhs, `${name}[${i}]`).toBeLessThan(1e-4);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(1000);

    // --no-save-optim: the same training saves the same model files and no optimizer state; a plain
    // --load of it is refused in one line, and the same command run again resumes it as --no-load-optim did.
    const lean = join(base, 'lean');
    await run('lean-a', ['--train-iters', '4', '--save', lean, '--no-save-optim']);
    const [full, bare] = [newest(join(base, 'pretrained')).folder, newest(lean).folder];
    const files = (folder: string) => readdirSync(folder).filter((f) => f.endsWith('.safetensors'));
    expect(files(bare)).toEqual(files(full).filter((f) => f.startsWith('model-')));
    for (const f of files(bare)) expect(readFileSync(join(bare, f)).equals(readFileSync(join(full, f))), f).toBe(true);
    expect(newest(lean)).toMatchObject({ iteration: 4, step: 0 });
    const refused = await train([...TINY, ...D2, ...DROPOUT, '--train-iters', '5', '--load', lean, '--run-dir', join(base, 'refused')]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(
      /^webtron train: \S+iter_0000004\/index.json: saved without the optimizer's state \(--no-save-optim\); give --no-load-optim \(or --finetune\) to load its params$/,
    );
    await run('lean-b', ['--train-iters', '5', '--save', lean, '--no-save-optim']);
    expectIdenticalLosses(losses(join(base, 'no-load-optim')), losses(join(base, 'lean-b')));
  });

  it('--finetune with bf16 params: the fp32 main params start from the loaded params, as from --init-from', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([...TINY, ...D2, '--bf16', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
    };
    await run('pretrain', ['--train-iters', '3', '--save', join(base, 'pretrained')]);
    const onnx = join(base, 'pretrained.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(base, 'pretrained'), '--output', onnx]).status).toBe(0);
    await run('finetune', ['--train-iters', '3', '--load', join(base, 'pretrained'), '--finetune']);
    await run('init-from', ['--train-iters', '3', '--init-from', onnx]);
    const [a, b] = [losses(join(base, 'finetune')), losses(join(base, 'init-from'))];
    expect([...a.keys()]).toEqual([1, 2, 3]);
    expectIdenticalLosses(b, a);
    // Not the pretraining run's first losses: the params are the checkpoint's.
    expect(a.get(1)).not.toBe(losses(join(base, 'pretrain')).get(1));
  });

  it('a worker restarted by --max-restarts resumes the run whole from its own --save, not the --load it fine-tunes from; --pretrained-checkpoint only when nothing else loads', () => {
    const base = dir();
    mkdirSync(join(base, 'saved'));
    writeFileSync(join(base, 'saved', 'latest_checkpointed_iteration.txt'), '2\n');
    const cfg = {
      load: join(base, 'pretrained'),
      save: join(base, 'saved'),
      finetune: true,
      noLoadOptim: true,
      noSaveOptim: false,
      pretrainedCheckpoint: null,
    } as TrainConfig;
    expect(withDefaultLoad(cfg, true)).toMatchObject({ load: join(base, 'saved'), finetune: false, noLoadOptim: false });
    // A run that saves no optimizer state resumes its own --save without it.
    expect(withDefaultLoad({ ...cfg, noSaveOptim: true }, true)).toMatchObject({ load: join(base, 'saved'), noLoadOptim: true });
    // Not restarted, the command's own --load and flags hold.
    expect(withDefaultLoad(cfg, false)).toEqual(cfg);
    // Before --save holds a checkpoint, it fine-tunes from --load again.
    const fresh = { ...cfg, save: join(base, 'nothing-saved') };
    expect(withDefaultLoad(fresh, true)).toEqual(fresh);
    // --pretrained-checkpoint: fine-tunes from it while nothing else is loaded, then resumes --save.
    const pretrained = { ...fresh, load: null, finetune: false, noLoadOptim: false, pretrainedCheckpoint: join(base, 'pretrained') };
    expect(withDefaultLoad(pretrained)).toMatchObject({ load: join(base, 'pretrained'), finetune: true });
    expect(withDefaultLoad({ ...pretrained, save: join(base, 'saved') })).toMatchObject({ load: join(base, 'saved'), finetune: false });
    expect(withDefaultLoad({ ...pretrained, load: 'elsewhere' })).toMatchObject({ load: 'elsewhere', finetune: false });
  });
});
