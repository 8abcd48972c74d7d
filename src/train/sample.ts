/**
 * `webtron sample --load DIR --prompt TEXT --tokens N`: text from a checkpoint of `webtron train`,
 * on the GPU, one process. The model and its tokenizer come from the checkpoint; each new token runs
 * one position against the key/value cache (src/nn/decode.ts); once the context is full, the cache
 * is rebuilt from the newest half of it. Sampling: temperature, top-k, a seeded generator, so the
 * same seed gives the same text.
 */
import { splitmix32 } from '../data/samples.js';
import { tokenizerFrom } from '../data/tokenizer.js';
import { GpuContext } from '../gpu/context.js';
import { GptDecoder } from '../nn/decode.js';
import { loadCheckpointModel } from './checkpoint-model.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

export const SAMPLE_FLAGS: Record<string, FlagSpec> = {
  load: { kind: 'string', help: 'a checkpoint of webtron train: its --save folder (the newest) or one iter_NNNNNNN folder' },
  prompt: { kind: 'string', default: '', help: "text to continue (in the checkpoint's vocabulary)" },
  tokens: { kind: 'int', default: 200, help: 'tokens to generate' },
  temperature: { kind: 'number', default: 1.0, help: 'divide the logits by this (0: always the most likely token)' },
  'top-k': { kind: 'int', default: 0, help: 'sample among the k most likely tokens (0: all)' },
  seed: { kind: 'int', default: 1234, help: 'seed of the sampling' },
};

/** Pick the next token from `logits` (only the first `vocab` are real tokens). Pure but for `random`. */
export function pickToken(logits: Float32Array, vocab: number, temperature: number, topK: number, random: () => number): number {
  const ids = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  if (temperature === 0) return ids[0]!;
  const kept = topK > 0 ? ids.slice(0, topK) : ids;
  const top = logits[kept[0]!]!;
  const weights = kept.map((i) => Math.exp((logits[i]! - top) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  let u = (random() / 2 ** 32) * total;
  for (let j = 0; j < kept.length; j++) {
    u -= weights[j]!;
    if (u < 0) return kept[j]!;
  }
  return kept.at(-1)!;
}

export async function sampleCommand(
  values: FlagValues,
  gpu: { backend?: string | undefined; adapter?: string | undefined },
): Promise<void> {
  const path = values.load as string | undefined;
  if (!path) throw new FlagError('--load is required: the checkpoint to sample from (a --save folder of webtron train)');
  const tokens = values.tokens as number;
  if (!Number.isInteger(tokens) || tokens < 0) throw new FlagError(`--tokens must be a non-negative integer, got ${tokens}`);
  const temperature = values.temperature as number;
  if (!(temperature >= 0)) throw new FlagError(`--temperature must be >= 0, got ${temperature}`);
  const topK = values['top-k'] as number;
  if (!Number.isInteger(topK) || topK < 0) throw new FlagError(`--top-k must be a non-negative integer, got ${topK}`);
  const ctx = await GpuContext.create(gpu);
  const { config: model, tokenizer: tokenizerState, gpt, params } = await loadCheckpointModel(ctx, path);
  const tokenizer = tokenizerFrom(tokenizerState);
  const prompt = tokenizer.encode(values.prompt as string);
  const decoder = new GptDecoder(ctx, gpt);
  const random = splitmix32(values.seed as number);
  const context: number[] = [...prompt];
  process.stdout.write(values.prompt as string);
  // The newest tokens, re-run into an empty cache when it is full.
  const refill = async (keep: number): Promise<Float32Array> => {
    decoder.reset();
    let logits: Float32Array = new Float32Array(model.vocabSize);
    for (const t of context.slice(-keep)) logits = await decoder.step(t);
    return logits;
  };
  let logits = context.length > 0 ? await refill(Math.min(context.length, decoder.capacity)) : null;
  for (let n = 0; n < tokens; n++) {
    // Without a prompt the first token is drawn uniformly: there is no beginning-of-text token.
    const next = logits ? pickToken(logits, tokenizer.vocabSize, temperature, topK, random) : random() % tokenizer.vocabSize;
    context.push(next);
    process.stdout.write(tokenizer.decode([next]));
    logits = decoder.position < decoder.capacity ? await decoder.step(next) : await refill(Math.max(1, Math.floor(decoder.capacity / 2)));
  }
  process.stdout.write('\n');
  decoder.destroy();
  params.destroy();
}
