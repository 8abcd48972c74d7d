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
import { Graph } from '../src/nn/graph.js';
import { matmulInto, type Operand } from '../src/nn/matmul.js';
import { LocalParams } from '../src/nn/params.js';
import type { Bench } from './bench.js';
import { GPT_CONFIGS } from './nn.js';
import { progress, type Row } from './report.js';
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

/** A product's weight: [k, n] read along n, or stored [n, k] and read along k (a tied head's layout). */
const PRODUCT_SHAPES: { name: string; k: number; n: number; alongK: boolean }[] = [
  { name: 'fc, 384 -> 1536', k: 384, n: 1536, alongK: false },
  { name: 'proj, 1536 -> 384', k: 1536, n: 384, alongK: false },
  { name: 'qkv, 192 -> 576', k: 192, n: 576, alongK: false },
  { name: 'tied head, 384 -> 1536', k: 384, n: 1536, alongK: true },
];

/**
 * `npm run bench -- decode-products`: products of 1, 2, 4 and 8 rows by GPT weights on the few-rows
 * kernel (src/nn/matmul-rows.ts) beside the adapter's block kernel, the same product in the same
 * run: wall milliseconds per product, --products of them recorded in one graph and submitted
 * together (on a CPU driver the block kernel's texture copies of the weight included, as a graph
 * makes them). How many rows the few-rows kernel takes on an adapter (rowsLimit) comes from here.
 */
export const decodeProductsBench: Bench = {
  name: 'decode-products',
  summary: 'products of 1-8 rows by GPT weights: the few-rows kernel beside the block kernel',
  columns: ['bench', 'shape', 'rows', 'rows_kernel_ms', 'block_kernel_ms', 'speedup'],
  flags: {
    products: { kind: 'int', default: 40, help: 'products per timed graph' },
  },
  async run(env, flags) {
    const count = flags.products as number;
    if (!(Number.isInteger(count) && count >= 1)) throw new FlagError(`--products: ${count} is not a count of products; give 1 or more`);
    const ctx = await env.gpu();
    const rows: Row[] = [];
    for (const shape of PRODUCT_SHAPES) {
      const params = new LocalParams(ctx, [{ name: 'w', shape: [shape.k * shape.n], dtype: 'float32', gradDtype: 'float32' }]);
      params.set(new Map([['w', Float32Array.from({ length: shape.k * shape.n }, (_, i) => ((i * 7919) % 1000) / 1e5)]]));
      const weight: Operand = shape.alongK ? { t: params.get('w'), rs: 1, cs: shape.k } : { t: params.get('w'), rs: shape.n, cs: 1 };
      for (const m of [1, 2, 4, 8]) {
        // Milliseconds per product of `reps` in one graph, on the few-rows kernel or not.
        const time = async (fewRows: boolean, reps: number) => {
          ctx.fewRowsMatmul = fewRows;
          const g = new Graph(ctx, { training: false });
          try {
            const a = g.input(new Float32Array(m * shape.k).fill(1), [m * shape.k]);
            const c = g.tensor([m * shape.n], 'c');
            const t0 = performance.now();
            for (let i = 0; i < reps; i++)
              matmulInto(g, { m, n: shape.n, k: shape.k }, { t: a, rs: shape.k, cs: 1 }, weight, { t: c, rs: shape.n, cs: 1 });
            await g.read(c);
            return (performance.now() - t0) / reps;
          } finally {
            g.release();
            ctx.fewRowsMatmul = true;
          }
        };
        await time(true, 4);
        await time(false, 4);
        const [fewRows, block]: [number[], number[]] = [[], []];
        for (let run = 0; run < 3; run++) {
          fewRows.push(await time(true, count));
          block.push(await time(false, count));
        }
        const [r, b] = [median(fewRows), median(block)];
        rows.push({
          bench: 'decode-products',
          shape: shape.name,
          rows: m,
          rows_kernel_ms: Number(r.toFixed(3)),
          block_kernel_ms: Number(b.toFixed(3)),
          speedup: Number((b / r).toFixed(2)),
        });
        progress(`decode-products: ${shape.name}, ${m} rows`);
      }
      params.destroy();
    }
    return rows;
  },
};
