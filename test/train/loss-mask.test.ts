/**
 * `--eod-mask-loss`, `--calculate-per-token-loss`, `--reset-position-ids` and `--reset-attention-mask` as a user runs them, on an indexed dataset of
 * short documents (many ends of documents in every sample, a different number in every micro-batch)
 * made by `webtron preprocess-data --append-eod` with a small GPT-2 BPE vocabulary.
 *
 * The reference is the one micro-batch: with the whole global batch in one micro-batch at d = 1, the
 * mean over its unmasked tokens is the per-token mean by definition. Per-token loss at d = 2 with two
 * micro-batches a rank must give its losses, grad norms and validation loss; the mean of the
 * micro-batches' means gives the same loss at the first iteration (the same params, and the reported
 * loss is over the tokens either way) but other grads, since its micro-batches weigh their tokens
 * differently.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { seeded } from '../helpers/seed.js';
import { BIN, dir, expectSameLosses, losses, metricsOf, TINY, train } from '../helpers/train.js';

/** A byte-level BPE vocabulary of the letters a to h, the space (Ġ) and GPT-2's end of text, without merges. */
function tinyBpe(base: string): string[] {
  const vocab = Object.fromEntries([...'abcdefgh', 'Ġ', '<|endoftext|>'].map((token, id) => [token, id]));
  writeFileSync(join(base, 'vocab.json'), JSON.stringify(vocab));
  writeFileSync(join(base, 'merges.txt'), '#version: 0.2\n');
  return ['--tokenizer-type', 'GPT2BPETokenizer', '--vocab-file', join(base, 'vocab.json'), '--merge-file', join(base, 'merges.txt')];
}

/**
 * 600 documents, each of 1 or 2 letters or of 20 to 39 letters and spaces (so that micro-batches hold
 * very different numbers of document ends), preprocessed with an end-of-document token each; returns
 * the prefix. `lengthOf` draws other lengths (after the first letter).
 */
function shortDocuments(
  base: string,
  tokenizer: string[],
  lengthOf = (random: () => number) => (random() < 0.5 ? Math.floor(random() * 2) : 20 + Math.floor(random() * 20)),
): string {
  const { random } = seeded('loss-mask documents');
  const letters = 'abcdefgh ';
  const lines = Array.from({ length: 600 }, () => {
    const length = lengthOf(random);
    const text = Array.from({ length }, () => letters[Math.floor(random() * letters.length)]).join('');
    return JSON.stringify({ text: `a${text}` }); // never only spaces
  });
  writeFileSync(join(base, 'docs.jsonl'), lines.join('\n'));
  execFileSync(
    'node',
    [BIN, 'preprocess-data', '--input', join(base, 'docs.jsonl'), '--output-prefix', join(base, 'docs'), ...tokenizer, '--append-eod'],
    {
      stdio: 'ignore',
    },
  );
  return join(base, 'docs_text_document');
}

describe('loss masks', () => {
  it('--calculate-per-token-loss at d = 2 with 2 micro-batches a rank repeats the one micro-batch of the whole batch; without it the grads differ', async () => {
    const base = dir();
    const tokenizer = tinyBpe(base);
    const prefix = shortDocuments(base, tokenizer);
    const run = async (name: string, extra: string[]) => {
      const runDir = join(base, name);
      const r = await train([
        ...TINY,
        ...tokenizer,
        '--data-path',
        prefix,
        '--eod-mask-loss',
        '--train-iters',
        '4',
        '--global-batch-size',
        '8',
        '--eval-interval',
        '4',
        '--eval-iters',
        '2',
        '--hidden-dropout',
        '0',
        '--attention-dropout',
        '0',
        '--run-dir',
        runDir,
        ...extra,
      ]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/vocab 10 padded to 16.*micro-batches, no loss where the input is the end-of-document token 9/);
      const metrics = metricsOf(runDir);
      return {
        stdout: r.stdout,
        losses: losses(runDir),
        gradNorms: new Map(metrics.filter((m) => m.grad_norm != null).map((m) => [m.iteration, m.grad_norm!])),
        validation: metrics.find((m) => m.val_loss !== undefined)!.val_loss!,
      };
    };
    const whole = await run('whole', ['--micro-batch-size', '8']);
    const perToken = await run('per-token', ['--nproc-per-node', '2', '--micro-batch-size', '2', '--calculate-per-token-loss']);
    const means = await run('means', ['--nproc-per-node', '2', '--micro-batch-size', '2']);
    expect(perToken.stdout).toMatch(/, the loss a mean over the global batch's tokens;/);
    expectSameLosses(whole.losses, perToken.losses, 1e-5, 'per-token loss vs one micro-batch');
    expectSameLosses(whole.gradNorms, perToken.gradNorms, 1e-6, 'per-token grad norms vs one micro-batch');
    expect(Math.abs(perToken.validation - whole.validation) / whole.validation).toBeLessThan(1e-5);
    // The mean of means: the same reported loss at the first iteration, other grads.
    expect(Math.abs(means.losses.get(1)! - whole.losses.get(1)!) / whole.losses.get(1)!).toBeLessThan(1e-5);
    // Each of the 4 grad norms is a scalar that may land near the other's by chance; all 4 do not.
    const apart = (run: typeof whole) =>
      Math.max(...[...whole.gradNorms].map(([it, norm]) => Math.abs(run.gradNorms.get(it)! - norm) / norm));
    console.log(
      `grad norms apart from one micro-batch's, at most: per-token ${apart(perToken).toExponential(1)}, mean of means ${apart(means).toExponential(1)}`,
    );
    expect(apart(means)).toBeGreaterThan(1e-4);
  });

  it('--reset-position-ids and --reset-attention-mask train within documents: the memory line stays equal, and the losses are not those of attention across documents', async () => {
    const base = dir();
    const tokenizer = tinyBpe(base);
    // Documents of 2 to 9 letters: two or three ends of documents in every sample of 16 tokens.
    const prefix = shortDocuments(base, tokenizer, (random) => 1 + Math.floor(random() * 8));
    const run = async (name: string, extra: string[]) => {
      const runDir = join(base, name);
      const r = await train([
        ...TINY,
        ...tokenizer,
        '--data-path',
        prefix,
        '--train-iters',
        '3',
        '--global-batch-size',
        '4',
        '--eval-interval',
        '3',
        '--eval-iters',
        '1',
        '--hidden-dropout',
        '0',
        '--attention-dropout',
        '0',
        '--run-dir',
        runDir,
        ...extra,
      ]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return { stdout: r.stdout, losses: losses(runDir), validation: metricsOf(runDir).find((m) => m.val_loss !== undefined)?.val_loss };
    };
    // Params 10 times as large as by default: what a token sees and its position matter from the first step.
    const inside = await run('documents', ['--reset-position-ids', '--reset-attention-mask', '--init-method-std', '0.2']);
    expect(inside.stdout).toMatch(/micro-batches, positions and attention restarting after each end-of-document token 9;/);
    expect(inside.stdout).toMatch(/activations peak [^(]+\(predicted for one micro-batch [^)]+, equal\)/);
    expect(inside.validation).toBeGreaterThan(0);
    const across = await run('across', ['--init-method-std', '0.2']);
    // Each iteration's loss differs by a few % either way; that all three land within 0.2 % is no chance.
    const apart = [1, 2, 3].map((it) => Math.abs(inside.losses.get(it)! - across.losses.get(it)!) / across.losses.get(it)!);
    console.log(`losses within documents apart from across them: ${apart.map((x) => x.toExponential(1)).join(', ')}`);
    expect(Math.max(...apart)).toBeGreaterThan(2e-3);
  });

  it.each([
    [
      'on a text corpus (no end-of-document tokens)',
      'GPT2BPETokenizer',
      '--eod-mask-loss',
      /Moby-Dick.* is text, whose documents are joined without end-of-document tokens, so nothing would be masked; make an indexed dataset with webtron preprocess-data --append-eod/,
    ],
    [
      'with a tokenizer that has no end-of-document token',
      'ByteTokenizer',
      '--eod-mask-loss',
      /ByteTokenizer has no end-of-document token to mask; leave out --eod-mask-loss, or train with a tokenizer that has one/,
    ],
    [
      'on a text corpus (no end-of-document tokens)',
      'GPT2BPETokenizer',
      '--reset-attention-mask',
      /Moby-Dick.* is text, whose documents are joined without end-of-document tokens, so no attention would end; make an indexed dataset/,
    ],
    [
      'with a tokenizer that has no end-of-document token',
      'ByteTokenizer',
      '--reset-position-ids',
      /ByteTokenizer has no end-of-document token to restart positions at; leave out --reset-position-ids, or train with a tokenizer that has one/,
    ],
  ])('%s: %s with %s is one line', async (_what, tokenizer, flag, line) => {
    const r = await train([...TINY, '--tokenizer-type', tokenizer, flag, '--train-iters', '4', '--global-batch-size', '2']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(line)]);
  });
});
