/**
 * `npm run bench -- onnx`: GPT forward tokens/s of webtron beside onnxruntime-node running the same
 * model exported by `gptToOnnx` (its CPU and WebGPU execution providers), in the same run, runs
 * interleaved. Each side starts from host token ids and ends with the logits on the host, wall
 * clock; tokens are batch × sequence per forward. `max_abs_diff` is the largest difference between
 * webtron's logits and onnxruntime CPU's for the same tokens: the two compute the same function.
 */
import { Gpt } from '../src/nn/gpt.js';
import { Graph } from '../src/nn/graph.js';
import { LocalParams } from '../src/nn/params.js';
import { gptToOnnx } from '../src/onnx/gpt.js';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { GPT_CONFIGS, loadOrt, ortSession } from './nn.js';
import { progress } from './report.js';
import { median } from './timing.js';

export const onnxBench: Bench = {
  name: 'onnx',
  summary: 'GPT forward tokens/s: webtron vs onnxruntime-node (CPU and WebGPU providers) on the same exported model',
  columns: ['bench', 'config', 'batch', 'seq', 'webtron_tokens_per_s', 'ort_cpu_tokens_per_s', 'ort_webgpu_tokens_per_s', 'max_abs_diff'],
  flags: {
    config: { kind: 'string', default: 'char-4x128', help: `GPT config: ${Object.keys(GPT_CONFIGS).join(', ')}` },
    batch: { kind: 'int', help: "sequences per forward (default: the config's batch)" },
    seq: { kind: 'int', help: "tokens per sequence (default: the config's sequence length)" },
    runs: { kind: 'int', default: 10, help: 'timed runs (median reported)' },
    warmup: { kind: 'int', default: 2, help: 'untimed runs first' },
  },
  async run(env, flags) {
    const name = flags.config as string;
    const config = GPT_CONFIGS[name];
    if (!config) throw new FlagError(`--config: unknown GPT config '${name}'; known: ${Object.keys(GPT_CONFIGS).join(', ')}`);
    const batch = (flags.batch as number | undefined) ?? config.batch;
    const seq = (flags.seq as number | undefined) ?? config.seqLength;
    if (!(batch >= 1 && seq >= 1 && seq <= config.seqLength))
      throw new FlagError(`--batch and --seq: need batch >= 1 and 1 <= seq <= ${config.seqLength}`);
    const ctx = await env.gpu();
    const values = Gpt.init(config, 1234);
    progress(`onnx: exporting ${name} (${config.numLayers} layers, hidden ${config.hiddenSize}), batch ${batch} × ${seq} tokens`);
    const model = gptToOnnx(config, values);
    const params = new LocalParams(ctx, Gpt.specs(config));
    params.set(values);
    const gpt = new Gpt(config, params.tensors);
    const ids = Uint32Array.from({ length: batch * seq }, (_, i) => (i * 7919 + 13) % config.vocabSize);
    const ort = await loadOrt();
    if (!ort) throw new Error('bench onnx: compares with onnxruntime-node, which is not installed: run npm install with devDependencies');
    const input = { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [batch, seq]) };
    const sessions = { cpu: await ortSession(ort, model, 'cpu'), webgpu: await ortSession(ort, model, 'webgpu') };
    const forward = async (): Promise<Float32Array> => {
      const g = new Graph(ctx, { training: false });
      const logits = await g.read(gpt.forward(g, g.input(ids, [batch, seq])).logits);
      g.release();
      return logits;
    };
    const [warmup, runs] = [flags.warmup as number, flags.runs as number];
    const ms: Record<string, number[]> = { webtron: [], cpu: [], webgpu: [] };
    let maxAbsDiff = Number.NaN;
    for (let run = 0; run < warmup + runs; run++) {
      const timed = run >= warmup;
      let t0 = performance.now();
      const ours = await forward();
      if (timed) ms.webtron!.push(performance.now() - t0);
      for (const ep of ['cpu', 'webgpu'] as const) {
        const session = sessions[ep];
        if (!session) continue;
        t0 = performance.now();
        const out = (await session.run(input)).logits!.data as Float32Array;
        if (timed) ms[ep]!.push(performance.now() - t0);
        if (ep === 'cpu' && run === 0) maxAbsDiff = ours.reduce((worst, v, i) => Math.max(worst, Math.abs(v - out[i]!)), 0);
      }
      progress(`onnx: run ${run + 1}/${warmup + runs}`);
    }
    params.destroy();
    const tokensPerS = (samples: number[]) => (samples.length > 0 ? Math.round((batch * seq) / (median(samples) / 1000)) : null);
    return [
      {
        bench: 'onnx',
        config: name,
        batch,
        seq,
        webtron_tokens_per_s: tokensPerS(ms.webtron!),
        ort_cpu_tokens_per_s: tokensPerS(ms.cpu!),
        ort_webgpu_tokens_per_s: tokensPerS(ms.webgpu!),
        max_abs_diff: Number(maxAbsDiff.toPrecision(3)),
      },
    ];
  },
};
