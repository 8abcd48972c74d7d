/**
 * `npm run bench -- decode`: `webtron sample`'s decoder (src/nn/decode.ts) on a GPT config, in one
 * run: a prompt of --prompt tokens as one prefill (GptDecoder.append) beside the same prompt a token
 * at a time (as a decoder without prefill runs it), then --tokens single-token steps. Each side
 * starts from host token ids and ends with the logits on the host, wall clock. `max_abs_diff` is the
 * largest difference between the two sides' logits after the prompt: they compute the same function.
 * The single steps run twice: on the few-rows matmul (src/nn/matmul-rows.ts, what a decoder uses)
 * and on the adapter's kernel for many rows (`step_tokens_per_s_block_kernel`), whose logits differ
 * by at most `step_max_abs_diff`.
 */
import { FlagError } from '../src/cli/flags.js';
import { GptDecoder } from '../src/nn/decode.js';
import { Gpt } from '../src/nn/gpt.js';
import { LocalParams } from '../src/nn/params.js';
import type { Bench } from './bench.js';
import { GPT_CONFIGS } from './nn.js';
import { progress } from './report.js';
import { median } from './timing.js';

export const decodeBench: Bench = {
  name: 'decode',
  summary: "webtron sample's decoder: a prompt's prefill beside the same prompt a token at a time, and single-token steps",
  columns: [
    'bench',
    'config',
    'prompt',
    'prefill_ms',
    'stepwise_ms',
    'prefill_speedup',
    'step_tokens_per_s',
    'step_tokens_per_s_block_kernel',
    'step_speedup',
    'max_abs_diff',
    'step_max_abs_diff',
  ],
  flags: {
    config: { kind: 'string', default: 'char-4x128', help: `GPT config: ${Object.keys(GPT_CONFIGS).join(', ')}` },
    prompt: { kind: 'int', help: "prompt tokens (default: half the config's sequence length)" },
    tokens: { kind: 'int', default: 16, help: 'single-token steps timed after the prompt' },
    runs: { kind: 'int', default: 3, help: 'timed runs (median reported)' },
    warmup: { kind: 'int', default: 1, help: 'untimed runs first' },
  },
  async run(env, flags) {
    const name = flags.config as string;
    const config = GPT_CONFIGS[name];
    if (!config) throw new FlagError(`--config: unknown GPT config '${name}'; known: ${Object.keys(GPT_CONFIGS).join(', ')}`);
    const prompt = (flags.prompt as number | undefined) ?? config.seqLength >> 1;
    const tokens = flags.tokens as number;
    if (!(Number.isInteger(prompt) && prompt >= 1 && Number.isInteger(tokens) && tokens >= 0 && prompt + tokens <= config.seqLength))
      throw new FlagError(
        `--prompt and --tokens: need prompt >= 1, tokens >= 0 and prompt + tokens <= ${config.seqLength} (${name}'s positions)`,
      );
    const ctx = await env.gpu();
    const params = new LocalParams(ctx, Gpt.specs(config));
    params.set(Gpt.init(config, 1234));
    const decoder = new GptDecoder(ctx, new Gpt(config, params.tensors), prompt + tokens);
    const ids = Array.from({ length: prompt + tokens }, (_, i) => (i * 7919 + 13) % config.vocabSize);
    const [warmup, runs] = [flags.warmup as number, flags.runs as number];
    const ms = { prefill: [] as number[], stepwise: [] as number[], steps: [] as number[], blockSteps: [] as number[] };
    let maxAbsDiff = 0;
    let stepMaxAbsDiff = 0;
    // The steps after the prompt, on the few-rows kernel or the adapter's block kernel: their logits and wall time.
    const steps = async (fewRows: boolean): Promise<[Float32Array[], number]> => {
      ctx.fewRowsMatmul = fewRows;
      decoder.reset();
      await decoder.append(ids.slice(0, prompt));
      const logits: Float32Array[] = [];
      const t0 = performance.now();
      for (const id of ids.slice(prompt)) logits.push(await decoder.step(id));
      return [logits, performance.now() - t0];
    };
    for (let run = 0; run < warmup + runs; run++) {
      const timed = run >= warmup;
      decoder.reset();
      let t0 = performance.now();
      const prefilled = await decoder.append(ids.slice(0, prompt));
      if (timed) ms.prefill.push(performance.now() - t0);
      decoder.reset();
      t0 = performance.now();
      let stepped: Float32Array = new Float32Array(0);
      for (const id of ids.slice(0, prompt)) stepped = await decoder.step(id);
      if (timed) ms.stepwise.push(performance.now() - t0);
      maxAbsDiff = Math.max(maxAbsDiff, ...prefilled.map((v, i) => Math.abs(v - stepped[i]!)));
      const [rowsLogits, rowsMs] = await steps(true);
      const [blockLogits, blockMs] = await steps(false);
      ctx.fewRowsMatmul = true;
      if (timed && tokens > 0) {
        ms.steps.push(rowsMs);
        ms.blockSteps.push(blockMs);
      }
      rowsLogits.forEach((l, i) => {
        stepMaxAbsDiff = Math.max(stepMaxAbsDiff, ...l.map((v, j) => Math.abs(v - blockLogits[i]![j]!)));
      });
      progress(`decode: run ${run + 1}/${warmup + runs}`);
    }
    decoder.destroy();
    params.destroy();
    const [prefill, stepwise] = [median(ms.prefill), median(ms.stepwise)];
    const perSecond = (list: number[]) => (tokens > 0 ? Number((tokens / (median(list) / 1000)).toFixed(1)) : null);
    return [
      {
        bench: 'decode',
        config: name,
        prompt,
        tokens,
        prefill_ms: Number(prefill.toFixed(1)),
        stepwise_ms: Number(stepwise.toFixed(1)),
        prefill_speedup: Number((stepwise / prefill).toFixed(2)),
        step_tokens_per_s: perSecond(ms.steps),
        step_tokens_per_s_block_kernel: perSecond(ms.blockSteps),
        step_speedup: tokens > 0 ? Number((median(ms.blockSteps) / median(ms.steps)).toFixed(2)) : null,
        max_abs_diff: Number(maxAbsDiff.toPrecision(3)),
        step_max_abs_diff: Number(stepMaxAbsDiff.toPrecision(3)),
      },
    ];
  },
};
