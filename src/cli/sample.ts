/**
 * `webtron sample --load DIR --prompt TEXT --tokens N`: text from a checkpoint of `webtron train`,
 * on the GPU, one process. The model and its tokenizer come from the checkpoint, from a Hugging
 * Face folder (src/hf/model.ts), or from a Megatron-LM checkpoint (./megatron-model.ts). The prompt
 * fills the key/value cache in one prefill, then each new token runs one position against it (src/nn/decode.ts); the cache is sized for what the run fills
 * within a window of --inference-max-seq-length positions (and the model's), and once the window is
 * full it is rebuilt from the newest half. Sampling: temperature, top-k or top-p, a seeded generator,
 * so the same seed gives the same text.
 *
 * `--onnx MODEL` instead runs a model `webtron export` wrote through onnxruntime-node (CPU), the
 * whole window each token, with the same context policy and sampling: when the logits agree, the
 * same seed gives the same text through both paths.
 */
import { splitmix32 } from '../data/samples.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { positionLimit } from '../nn/decode.js';
import type { Command } from './command.js';
import { FlagError, GPU_FLAGS, type FlagSpec, type FlagValues } from './flags.js';
import { generate, openSampledModel } from './generate.js';

export const SAMPLE_FLAGS: Record<string, FlagSpec> = {
  load: {
    kind: 'string',
    help: 'a checkpoint of webtron train (its --save folder, the newest, or one iter_NNNNNNN folder), a Hugging Face GPT-2, Llama, Qwen2 or Mistral folder, or a Megatron-LM checkpoint (torch_dist or torch)',
  },
  onnx: { kind: 'string', help: 'instead of --load: a model webtron export wrote, run by onnxruntime-node' },
  prompt: { kind: 'string', default: '', help: "text to continue (in the checkpoint's vocabulary)" },
  tokens: { kind: 'int', default: 200, help: 'tokens to generate' },
  temperature: { kind: 'number', default: 1.0, help: 'divide the logits by this (0: always the most likely token)' },
  'top-k': { kind: 'int', default: 0, help: 'sample among the k most likely tokens (0: all)' },
  'top-p': {
    kind: 'number',
    default: 0,
    help: 'sample among the fewest most likely tokens whose probabilities reach p (nucleus sampling; 0: all)',
  },
  seed: { kind: 'int', default: 1234, help: 'seed of the sampling' },
  'inference-max-seq-length': {
    kind: 'int',
    default: 2560,
    help: "the most positions the context holds, prompt and new tokens (and at most the model's --max-position-embeddings); past it the context keeps its newest half",
  },
};

export async function sampleCommand(
  values: FlagValues,
  gpu: { backend?: string | undefined; adapter?: string | undefined },
): Promise<void> {
  const path = values.load as string | undefined;
  const onnxPath = values.onnx as string | undefined;
  const tokens = values.tokens as number;
  if (!Number.isInteger(tokens) || tokens < 0) throw new FlagError(`--tokens must be a non-negative integer, got ${tokens}`);
  const temperature = values.temperature as number;
  if (!(temperature >= 0)) throw new FlagError(`--temperature must be >= 0, got ${temperature}`);
  const topK = values['top-k'] as number;
  if (!Number.isInteger(topK) || topK < 0) throw new FlagError(`--top-k must be a non-negative integer, got ${topK}`);
  const topP = values['top-p'] as number;
  if (!(topP >= 0 && topP <= 1)) throw new FlagError(`--top-p must be in [0, 1], got ${topP}`);
  if (topP > 0 && topK > 0) throw new FlagError('--top-k and --top-p exclude each other (as in Megatron): give one');
  const maxSeq = values['inference-max-seq-length'] as number;
  if (!Number.isInteger(maxSeq) || maxSeq < 1)
    throw new FlagError(`--inference-max-seq-length must be a positive integer (positions of context), got ${maxSeq}`);
  const model = await openSampledModel(path, onnxPath, gpu);
  const tokenizer = await loadTokenizer(model.tokenizer);
  if (tokenizer.vocabSize > model.config.vocabSize)
    throw new FlagError(
      `${path ?? onnxPath}: its tokenizer has ${tokenizer.vocabSize} tokens, more than the model's vocabulary of ${model.config.vocabSize}; give a model and tokenizer that belong together`,
    );
  const prompt = tokenizer.encode(values.prompt as string);
  const random = splitmix32(values.seed as number);
  // Without a prompt, a tokenizer with an end-of-document token starts from it (as GPT-2 samples do).
  const context: number[] = prompt.length === 0 && tokenizer.eod !== null ? [tokenizer.eod] : [...prompt];
  // The window: the model's positions, at most --inference-max-seq-length, and no more than this run fills.
  const window = Math.min(positionLimit(model.config), maxSeq);
  const decoder = model.decoder(Math.max(1, Math.min(window, context.length + tokens)));
  process.stdout.write(values.prompt as string);
  const logits = context.length > 0 ? await decoder.append(context.slice(-decoder.capacity)) : null;
  // Tokens not printed yet: a byte-level token can end inside a character, printed once the character is whole.
  let pending: number[] = [];
  // NullTokenizer's text is ids separated by spaces: a piece after text goes on after a space.
  let written = (values.prompt as string).length > 0;
  const separator = () => (tokenizer.type === 'NullTokenizer' && written ? ' ' : '');
  let n = 0;
  await generate(decoder, context, logits, {
    tokens,
    temperature,
    topK,
    topP,
    random,
    vocab: tokenizer.vocabSize,
    onToken: (next) => {
      pending.push(next);
      const text = tokenizer.decode(pending);
      const last = ++n === tokens;
      if (!text.endsWith('\uFFFD') || pending.length >= 4 || last) {
        process.stdout.write(separator() + text);
        written = true;
        pending = [];
      }
      return false;
    },
  });
  process.stdout.write('\n');
  decoder.destroy();
  model.release();
}

export const sample: Command = {
  summary:
    'generate text from a checkpoint of webtron train, a Hugging Face folder or a Megatron-LM checkpoint: webtron sample --load DIR --prompt TEXT --tokens N',
  flags: { ...GPU_FLAGS, ...SAMPLE_FLAGS },
  run: (values) => sampleCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};
