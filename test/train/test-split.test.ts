/**
 * The test split (--split's third part): evaluated once after training, as Megatron's pretrain
 * evaluates "on test set". The reference is the validation split: a corpus whose validation and test
 * documents are the same text must give the same loss to the last bit, and another test text another.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IndexedDatasetBuilder } from '../../src/data/indexed.js';
import { dir, expectIdenticalLosses, losses, TINY, train } from '../helpers/train.js';

/** Ten paragraphs: eight to train on, then `valid` and `test`. */
function paragraphs(valid: string, test: string): string[] {
  const train = Array.from({ length: 8 }, (_, i) =>
    `Paragraph ${i} of the voyage: the whale ${i % 3} swam east and the ship ${(i * 5) % 7} sailed west; call me Ishmael.`.repeat(3),
  );
  return [...train, valid, test];
}
const V = 'The sea was calm that night, and the watch saw no whale at all until the morning came.'.repeat(3);
const W = 'Queequeg sharpened his harpoon in silence while the wind rose over the quarter deck.'.repeat(3);

interface Summary {
  iterations: number;
  final_val_loss: number;
  final_test_loss: number | null;
}

/** A tiny run of 3 iterations, global batch 4, 2 evaluation batches, into `runDir`: its log, losses and summary. */
async function trainRun(runDir: string, extra: string[]) {
  const r = await train([...TINY, '--global-batch-size', '4', '--train-iters', '3', '--eval-iters', '2', '--run-dir', runDir, ...extra]);
  expect(r.code, `${runDir}: ${r.stderr}`).toBe(0);
  return { stdout: r.stdout, losses: losses(runDir), summary: JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as Summary };
}

describe('the test split', () => {
  it('is evaluated after the last iteration: the same documents as the validation split give its loss bit for bit, text or indexed, at d = 2; --skip-train repeats both from the checkpoint, with --use-checkpoint-args too', async () => {
    const base = dir();
    const run = (name: string, extra: string[]) =>
      trainRun(join(base, name), ['--nproc-per-node', '2', '--use-distributed-optimizer', '--split', '8,1,1', ...extra]);
    writeFileSync(join(base, 'same.txt'), paragraphs(V, V).join('\n\n'));
    writeFileSync(join(base, 'other.txt'), paragraphs(V, W).join('\n\n'));
    const same = await run('same', ['--data-path', join(base, 'same.txt'), '--save', join(base, 'ck')]);
    expect(same.stdout).toMatch(/validation tokens, \d+ test tokens;/);
    expect(same.stdout).toMatch(/\n validation loss at iteration 3 on test set \| lm loss value: \d\.\d{6}E[+-]\d\d \| lm loss PPL: /);
    expect(same.summary.final_test_loss).toBe(same.summary.final_val_loss);
    // --skip-train with the checkpoint: no iteration, the same two losses, nothing saved.
    const skipped = await run('skip', ['--data-path', join(base, 'same.txt'), '--load', join(base, 'ck'), '--skip-train']);
    expect(skipped.stdout).toMatch(/skipping training \(--skip-train is on\)/);
    expect(skipped.summary).toMatchObject({
      iterations: 3,
      final_val_loss: same.summary.final_val_loss,
      final_test_loss: same.summary.final_test_loss,
    });
    expect(readdirSync(join(base, 'ck')).sort()).toEqual(['iter_0000003', 'latest_checkpointed_iteration.txt']);
    // --use-checkpoint-args: the same evaluation without the model's flags; one that disagrees is one line.
    const bare = [
      ...['--use-checkpoint-args', '--load', join(base, 'ck'), '--skip-train', '--data-path', join(base, 'same.txt'), '--split', '8,1,1'],
      ...['--nproc-per-node', '2', '--use-distributed-optimizer', '--micro-batch-size', '2', '--global-batch-size', '4'],
      ...['--train-iters', '3', '--eval-iters', '2', '--lr', '3e-3', '--hidden-dropout', '0', '--attention-dropout', '0'],
    ];
    const fromCheckpoint = await train([...bare, '--run-dir', join(base, 'bare')]);
    expect(fromCheckpoint.code, fromCheckpoint.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(base, 'bare', 'summary.json'), 'utf8'))).toMatchObject({
      final_val_loss: same.summary.final_val_loss,
      final_test_loss: same.summary.final_test_loss,
    });
    const contradicted = await train([...bare, '--num-layers', '3', '--run-dir', join(base, 'wrong')]);
    expect(contradicted.code).toBe(2);
    expect(contradicted.stderr).toMatch(/--num-layers 3 contradicts .*iter_0000003\/index\.json: it was saved with 2; leave the flag out/);
    const other = await run('other', ['--data-path', join(base, 'other.txt')]);
    expect(other.summary.final_test_loss).toBeGreaterThan(0);
    expect(other.summary.final_test_loss).not.toBe(other.summary.final_val_loss);

    // The same corpus as an indexed dataset of bytes: ten documents, the last two alike.
    const builder = new IndexedDatasetBuilder(join(base, 'bytes'), 'uint16');
    for (const doc of paragraphs(V, V)) builder.addDocument([[...Buffer.from(doc)]]);
    builder.finish();
    const indexed = await run('indexed', ['--data-path', join(base, 'bytes'), '--tokenizer-type', 'ByteTokenizer']);
    expect(indexed.summary.final_test_loss).toBe(indexed.summary.final_val_loss);
    // A split without test documents has no test loss.
    const none = await run('none', ['--data-path', join(base, 'same.txt'), '--split', '9,1,0']);
    expect(none.summary.final_test_loss).toBeNull();
    expect(none.stdout).not.toMatch(/on test set/);
  });

  it('--train-data-path, --valid-data-path and --test-data-path repeat a --data-path whose --split puts the same documents in each split', async () => {
    const base = dir();
    const dataset = (name: string, docs: string[]) => {
      const builder = new IndexedDatasetBuilder(join(base, name), 'uint16');
      for (const doc of docs) builder.addDocument([[...Buffer.from(doc)]]);
      builder.finish();
      return join(base, name);
    };
    const docs = paragraphs(V, W);
    const [all, trainSet, validSet, testSet] = [
      dataset('all', docs),
      dataset('train', docs.slice(0, 8)),
      dataset('valid', [V]),
      dataset('test', [W]),
    ];
    const run = (name: string, extra: string[]) => trainRun(join(base, name), ['--tokenizer-type', 'ByteTokenizer', ...extra]);
    const split = await run('split', ['--data-path', all, '--split', '8,1,1']);
    const own = await run('own', ['--train-data-path', trainSet, '--valid-data-path', validSet, '--test-data-path', testSet]);
    expectIdenticalLosses(split.losses, own.losses);
    expect(own.summary).toMatchObject({ final_val_loss: split.summary.final_val_loss, final_test_loss: split.summary.final_test_loss });
    expect(own.summary.final_test_loss).not.toBe(own.summary.final_val_loss);
  });
});
