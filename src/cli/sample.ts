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
import { wordsToFloat32 } from '../collectives/reduce.js';
import { loadTokenizer, type TokenizerState } from '../data/tokenizer.js';
import { GpuContext } from '../gpu/context.js';
import { GptDecoder, positionLimit } from '../nn/decode.js';
import type { GptConfig } from '../nn/gpt.js';
import { loadSourceModel } from '../checkpoint/export-source.js';
import { megatronCheckpointPath } from '../checkpoint/megatron.js';
import { asLoadFlag, isHfFolder, loadHfFolderModel } from '../hf/model.js';
import { loadCheckpointModel } from '../train/checkpoint-model.js';
import type { Command } from './command.js';
import { FlagError, GPU_FLAGS, type FlagSpec, type FlagValues } from './flags.js';

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

/**
 * Pick the next token from `logits` (only the first `vocab` are real tokens), after `temperature`:
 * among the `topK` most likely, or the fewest most likely whose probabilities reach `topP` (the one
 * that crosses it included, as Megatron's top-p filter keeps it). Pure but for `random`.
 */
export function pickToken(logits: Float32Array, vocab: number, temperature: number, topK: number, random: () => number, topP = 0): number {
  const ids = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  if (temperature === 0) return ids[0]!;
  let kept = topK > 0 ? ids.slice(0, topK) : ids;
  const top = logits[kept[0]!]!;
  let weights = kept.map((i) => Math.exp((logits[i]! - top) / temperature));
  let total = weights.reduce((a, b) => a + b, 0);
  if (topP > 0 && topP < 1) {
    // The kept tokens' weights, added in the order the sum above added them: their total.
    let [n, mass] = [0, 0];
    for (; n < kept.length && mass < topP * total; n++) mass += weights[n]!;
    [kept, weights, total] = [kept.slice(0, n), weights.slice(0, n), mass];
  }
  let u = (random() / 2 ** 32) * total;
  for (let j = 0; j < kept.length; j++) {
    u -= weights[j]!;
    if (u < 0) return kept[j]!;
  }
  return kept.at(-1)!;
}

/** What the sampling loop needs of a model: the logits after each token, within a window of `capacity`. */
interface Decoder {
  readonly capacity: number;
  readonly position: number;
  reset(): void;
  /** Append tokens at the next positions; the logits after the last. */
  append(tokens: readonly number[]): Promise<Float32Array>;
  destroy(): void;
}

/** A model to sample from: its decoder for a window of `capacity` positions, its shape and tokenizer. */
interface SampledModel {
  decoder: (capacity: number) => Decoder;
  config: GptConfig;
  tokenizer: TokenizerState;
}

/** A model `webtron export` wrote, run by onnxruntime-node over the whole window each step. */
class OnnxDecoder implements Decoder {
  private window: number[] = [];

  private constructor(
    private readonly ort: typeof import('onnxruntime-node'),
    private readonly session: import('onnxruntime-node').InferenceSession,
    readonly capacity: number,
    private readonly vocab: number,
  ) {}

  static async open(path: string): Promise<SampledModel> {
    const { OnnxError, readOnnxModel } = await import('../onnx/proto.js');
    const model = readOnnxModel(path);
    const meta = Object.fromEntries((model.metadataProps ?? []).map((p) => [p.key, p.value]));
    if (!meta['webtron.config'] || !meta['webtron.tokenizer'])
      throw new OnnxError(`${path}: not a model of webtron export (no webtron.config and webtron.tokenizer in its metadata)`);
    const config = JSON.parse(meta['webtron.config']) as GptConfig;
    const tokenizer = JSON.parse(meta['webtron.tokenizer']) as TokenizerState;
    let ort: typeof import('onnxruntime-node');
    try {
      ort = (await import('onnxruntime-node')).default as unknown as typeof import('onnxruntime-node');
    } catch {
      throw new OnnxError('webtron sample --onnx runs models with onnxruntime-node, which is not installed: npm install onnxruntime-node');
    }
    let session: import('onnxruntime-node').InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, { executionProviders: ['cpu'] });
    } catch (error) {
      throw new OnnxError(`${path}: onnxruntime cannot load it: ${(error as Error).message.split('\n')[0]}`);
    }
    return { decoder: (capacity) => new OnnxDecoder(ort, session, capacity, config.vocabSize), config, tokenizer };
  }

  get position(): number {
    return this.window.length;
  }

  reset(): void {
    this.window = [];
  }

  async append(tokens: readonly number[]): Promise<Float32Array> {
    this.window.push(...tokens);
    const n = this.window.length;
    const ids = new this.ort.Tensor('int64', BigInt64Array.from(this.window, BigInt), [1, n]);
    const logits = (await this.session.run({ input_ids: ids })).logits!;
    const data = logits.data as Float32Array | Uint16Array;
    const last = data.subarray((n - 1) * this.vocab, n * this.vocab);
    return last instanceof Float32Array ? Float32Array.from(last) : wordsToFloat32(last, 'float16');
  }

  destroy(): void {
    void this.session.release();
  }
}

export async function sampleCommand(
  values: FlagValues,
  gpu: { backend?: string | undefined; adapter?: string | undefined },
): Promise<void> {
  const path = values.load as string | undefined;
  const onnxPath = values.onnx as string | undefined;
  if (!path === !onnxPath)
    throw new FlagError(
      'give one of --load (a --save folder of webtron train) or --onnx (a model webtron export wrote): what to sample from',
    );
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
  let model: SampledModel;
  let release = () => {};
  if (onnxPath) model = await OnnxDecoder.open(onnxPath);
  else {
    const ctx = await GpuContext.create(gpu);
    const loaded = isHfFolder(path!)
      ? await asLoadFlag(() => loadHfFolderModel(ctx, path!))
      : megatronCheckpointPath(path!) !== null
        ? await loadSourceModel(ctx, await (await import('./megatron-model.js')).megatronExportSource(path!))
        : await loadCheckpointModel(ctx, path!);
    model = { decoder: (capacity) => new GptDecoder(ctx, loaded.gpt, capacity), config: loaded.gpt.config, tokenizer: loaded.tokenizer };
    release = () => loaded.params.destroy();
  }
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
  // The newest tokens, re-run into an empty cache (one prefill) when it is full.
  const refill = (keep: number): Promise<Float32Array> => {
    decoder.reset();
    return decoder.append(context.slice(-keep));
  };
  let logits = context.length > 0 ? await refill(Math.min(context.length, decoder.capacity)) : null;
  // Tokens not printed yet: a byte-level token can end inside a character, printed once the character is whole.
  let pending: number[] = [];
  // NullTokenizer's text is ids separated by spaces: a piece after text goes on after a space.
  let written = (values.prompt as string).length > 0;
  const separator = () => (tokenizer.type === 'NullTokenizer' && written ? ' ' : '');
  for (let n = 0; n < tokens; n++) {
    // Without a prompt or an end-of-document token the first token is drawn uniformly.
    const next = logits ? pickToken(logits, tokenizer.vocabSize, temperature, topK, random, topP) : random() % tokenizer.vocabSize;
    context.push(next);
    pending.push(next);
    const text = tokenizer.decode(pending);
    if (!text.endsWith('\uFFFD') || pending.length >= 4 || n === tokens - 1) {
      process.stdout.write(separator() + text);
      written = true;
      pending = [];
    }
    logits =
      decoder.position < decoder.capacity ? await decoder.append([next]) : await refill(Math.max(1, Math.floor(decoder.capacity / 2)));
  }
  process.stdout.write('\n');
  decoder.destroy();
  release();
}

export const sample: Command = {
  summary:
    'generate text from a checkpoint of webtron train, a Hugging Face folder or a Megatron-LM checkpoint: webtron sample --load DIR --prompt TEXT --tokens N',
  flags: { ...GPU_FLAGS, ...SAMPLE_FLAGS },
  run: (values) => sampleCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};
