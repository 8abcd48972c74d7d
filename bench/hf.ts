/**
 * `npm run bench -- hf`: host memory of loading a Hugging Face GPT-2 folder of GPT-2 medium's or
 * large's shape (random fp32 weights, GPT-2's tokenizer) into DDP's buffers as `webtron train
 * --init-from` does (one tensor at a time), against random init (every param in host memory at
 * once), measured in the same run. Each load is its own process (bench/hf-worker.ts) whose peak
 * resident memory is read at the end. On a software driver the GPU's buffers live in that same
 * memory, so the host's own share is the peak less the GPU bytes allocated. Reported: that share
 * for both, over the model's fp32 bytes, and the load's seconds.
 */
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeHeader } from '../src/checkpoint/safetensors.js';
import { FlagError } from '../src/cli/flags.js';
import { gpt2ConfigJson, hfName } from '../src/hf/gpt2.js';
import { tokenizerFiles } from '../src/hf/tokenizer.js';
import { gptParams, type GptShape } from '../src/nn/gpt-spec.js';
import type { Bench } from './bench.js';
import { startRanks } from './ranks.js';
import { progress, type Row } from './report.js';

const WORKER = fileURLToPath(new URL('./hf-worker.js', import.meta.url));

/** GPT-2's published sizes. */
const MODELS: Record<string, GptShape> = {
  small: { numLayers: 12, hiddenSize: 768, numAttentionHeads: 12, seqLength: 1024, vocabSize: 50257 },
  medium: { numLayers: 24, hiddenSize: 1024, numAttentionHeads: 16, seqLength: 1024, vocabSize: 50257 },
  large: { numLayers: 36, hiddenSize: 1280, numAttentionHeads: 20, seqLength: 1024, vocabSize: 50257 },
};

/** A GPT-2 folder of `shape` with random fp32 weights, written a chunk at a time; its weights' bytes. */
async function writeRandomFolder(folder: string, shape: GptShape): Promise<number> {
  const specs = gptParams(shape);
  const header = encodeHeader(
    specs.map((s) => ({ name: hfName(s.name), dtype: 'F32' as const, shape: s.shape })),
    { format: 'pt' },
  );
  const fd = openSync(join(folder, 'model.safetensors'), 'w');
  const chunk = new Float32Array(1 << 22);
  let state = 0x9e3779b9;
  let bytes = header.bytes.byteLength;
  try {
    writeSync(fd, header.bytes);
    for (const s of specs) {
      let left = s.shape.reduce((a, b) => a * b, 1);
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        for (let i = 0; i < n; i++) {
          state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
          chunk[i] = (state / 2 ** 32 - 0.5) * 0.04;
        }
        const view = new Uint8Array(chunk.buffer, 0, n * 4);
        for (let at = 0; at < view.byteLength; ) at += writeSync(fd, view, at);
        bytes += view.byteLength;
        left -= n;
      }
    }
  } finally {
    closeSync(fd);
  }
  writeFileSync(join(folder, 'config.json'), JSON.stringify(gpt2ConfigJson(shape, { dtype: 'fp32', eod: 50256 })));
  for (const [name, text] of await tokenizerFiles({ type: 'GPT2BPETokenizer' }, shape.seqLength)) writeFileSync(join(folder, name), text);
  return bytes;
}

/** One load in its own process (bench/hf-worker.ts): seconds, peak resident bytes, GPU bytes. */
async function load(
  folder: string,
  mode: 'init-from' | 'random',
  model: GptShape,
): Promise<{ seconds: number; peak_rss: number; gpu_bytes: number }> {
  const [rank] = startRanks(WORKER, 1, { folder, mode, model: { ...model, tiedHead: true } });
  await rank!.done;
  return rank!.lines[0] as { seconds: number; peak_rss: number; gpu_bytes: number };
}

export const hfBench: Bench = {
  name: 'hf',
  summary: 'host memory of loading a GPT-2 medium/large folder as --init-from does vs random init, same run',
  columns: [
    'model',
    'params',
    'model_bytes',
    'gpu_bytes',
    'init_from_host_bytes',
    'random_init_host_bytes',
    'init_from_host_vs_model',
    'random_init_host_vs_model',
    'init_from_s',
  ],
  flags: {
    model: { kind: 'list', default: ['medium'], help: 'GPT-2 sizes: small, medium, large (one or a list)' },
  },
  async run(_env, flags) {
    const rows: Row[] = [];
    for (const name of flags.model as string[]) {
      const shape = MODELS[name];
      if (!shape) throw new FlagError(`--model: '${name}' is not one of ${Object.keys(MODELS).join(', ')}`);
      const dir = mkdtempSync(join(process.env.TMPDIR ?? '/tmp', 'webtron-bench-hf-'));
      try {
        const params = gptParams(shape).reduce((sum, s) => sum + s.shape.reduce((a, b) => a * b, 1), 0);
        progress(`hf: writing a random GPT-2 ${name} folder (${(params / 1e6).toFixed(0)}M params, fp32)`);
        const folder = join(dir, 'folder');
        mkdirSync(folder);
        await writeRandomFolder(folder, shape);
        progress('hf: loading it into DDP buffers (distributed optimizer), one tensor at a time, as --init-from does');
        const init = await load(folder, 'init-from', shape);
        progress('hf: the same buffers from random init');
        const random = await load(folder, 'random', shape);
        if (random.gpu_bytes !== init.gpu_bytes)
          throw new Error(`the two loads hold different GPU bytes: ${init.gpu_bytes} and ${random.gpu_bytes}`);
        const modelBytes = params * 4;
        rows.push({
          model: `gpt2-${name}`,
          params,
          model_bytes: modelBytes,
          gpu_bytes: init.gpu_bytes,
          init_from_peak_rss: init.peak_rss,
          random_init_peak_rss: random.peak_rss,
          init_from_host_bytes: init.peak_rss - init.gpu_bytes,
          random_init_host_bytes: random.peak_rss - random.gpu_bytes,
          init_from_host_vs_model: Number(((init.peak_rss - init.gpu_bytes) / modelBytes).toFixed(3)),
          random_init_host_vs_model: Number(((random.peak_rss - random.gpu_bytes) / modelBytes).toFixed(3)),
          init_from_s: Number(init.seconds.toFixed(1)),
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    return rows;
  },
};
