/**
 * What `webtron sample` and `webtron serve` share: a model opened from any of the places `--load`
 * names (a checkpoint of webtron train, a Hugging Face folder, a Megatron-LM checkpoint) or from an
 * ONNX model, its decoder, the choice of each next token, and the log-probabilities of tokens.
 */
import { wordsToFloat32 } from '../collectives/reduce.js';
import type { TokenizerState } from '../data/tokenizer.js';
import { GpuContext } from '../gpu/context.js';
import { GptDecoder } from '../nn/decode.js';
import type { GptConfig } from '../nn/gpt.js';
import { loadSourceModel } from '../checkpoint/export-source.js';
import { megatronCheckpointPath } from '../checkpoint/megatron.js';
import { asLoadFlag, isHfFolder, loadHfFolderModel } from '../hf/model.js';
import { loadCheckpointModel } from '../train/checkpoint-model.js';
import { FlagError } from './flags.js';

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

/**
 * The log-probability of `token` under `logits` (the first `vocab` of them, at temperature 1: the
 * model's own distribution, before any sampling filter), and the `top` most likely tokens with
 * theirs, most likely first (ties by id).
 */
export function logProbs(logits: Float32Array, vocab: number, token: number, top = 0): { logprob: number; top: [number, number][] } {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[i]! - max);
  const norm = max + Math.log(sum);
  const best: [number, number][] = [];
  if (top > 0) {
    const ids = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
    for (const id of ids.slice(0, top)) best.push([id, logits[id]! - norm]);
  }
  return { logprob: logits[token]! - norm, top: best };
}

/** What the sampling loop needs of a model: the logits after each token, within a window of `capacity`. */
export interface Decoder {
  readonly capacity: number;
  readonly position: number;
  reset(): void;
  /** Append tokens at the next positions; the logits after the last. */
  append(tokens: readonly number[]): Promise<Float32Array>;
  /** Append tokens at the next positions; the logits after each of them, one row of the model's vocabulary per token. */
  appendEvery(tokens: readonly number[]): Promise<Float32Array>;
  destroy(): void;
}

/** A model to sample from: its decoder for a window of `capacity` positions, its shape and tokenizer. */
export interface SampledModel {
  decoder: (capacity: number) => Decoder;
  config: GptConfig;
  tokenizer: TokenizerState;
  /** Free what the model holds on the GPU. */
  release: () => void;
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
      throw new OnnxError('--onnx runs models with onnxruntime-node, which is not installed: npm install onnxruntime-node');
    }
    let session: import('onnxruntime-node').InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, { executionProviders: ['cpu'] });
    } catch (error) {
      throw new OnnxError(`${path}: onnxruntime cannot load it: ${(error as Error).message.split('\n')[0]}`);
    }
    return {
      decoder: (capacity) => new OnnxDecoder(ort, session, capacity, config.vocabSize),
      config,
      tokenizer,
      release: () => void session.release(),
    };
  }

  get position(): number {
    return this.window.length;
  }

  reset(): void {
    this.window = [];
  }

  async append(tokens: readonly number[]): Promise<Float32Array> {
    return (await this.appendEvery(tokens)).subarray(-this.vocab);
  }

  async appendEvery(tokens: readonly number[]): Promise<Float32Array> {
    this.window.push(...tokens);
    const n = this.window.length;
    const ids = new this.ort.Tensor('int64', BigInt64Array.from(this.window, BigInt), [1, n]);
    const logits = (await this.session.run({ input_ids: ids })).logits!;
    const data = logits.data as Float32Array | Uint16Array;
    const rows = data.subarray((n - tokens.length) * this.vocab, n * this.vocab);
    return rows instanceof Float32Array ? Float32Array.from(rows) : wordsToFloat32(rows, 'float16');
  }

  /** The session is the model's: its release() frees it. */
  destroy(): void {}
}

/**
 * The model `--load` or `--onnx` names (exactly one of them): a checkpoint of webtron train, a
 * Hugging Face folder or a Megatron-LM checkpoint on the GPU, or an ONNX model webtron export wrote.
 */
export async function openSampledModel(
  load: string | undefined,
  onnx: string | undefined,
  gpu: { backend?: string | undefined; adapter?: string | undefined },
): Promise<SampledModel> {
  if (!load === !onnx)
    throw new FlagError(
      'give one of --load (a --save folder of webtron train) or --onnx (a model webtron export wrote): what to sample from',
    );
  if (onnx) return OnnxDecoder.open(onnx);
  const path = load!;
  const ctx = await GpuContext.create(gpu);
  const loaded = isHfFolder(path)
    ? await asLoadFlag(() => loadHfFolderModel(ctx, path))
    : megatronCheckpointPath(path) !== null
      ? await loadSourceModel(ctx, await (await import('./megatron-model.js')).megatronExportSource(path))
      : await loadCheckpointModel(ctx, path);
  return {
    decoder: (capacity) => new GptDecoder(ctx, loaded.gpt, capacity),
    config: loaded.gpt.config,
    tokenizer: loaded.tokenizer,
    release: () => loaded.params.destroy(),
  };
}

export interface GenerateOptions {
  /** Tokens to generate, at most. */
  tokens: number;
  temperature: number;
  topK: number;
  topP: number;
  random: () => number;
  /** Tokens the tokenizer has (the model's vocabulary may be padded past them). */
  vocab: number;
  /** Give each generated token's log-probability, and this many most likely tokens beside it (-1: no log-probabilities). */
  logprobs?: number;
  /** Called with each token as it is drawn; true stops the generation after it. */
  onToken?: (token: number) => boolean | undefined;
}

export interface Generated {
  tokens: number[];
  /** Each generated token's log-probability (with options.logprobs ≥ 0). */
  logprobs: number[];
  /** Beside each, the most likely tokens and theirs. */
  top: [number, number][][];
  /** Whether onToken stopped it before options.tokens. */
  stopped: boolean;
}

/**
 * Draw up to `options.tokens` tokens after `context` (which grows by each), from `logits`, the
 * decoder's logits after the context (null: the first token is drawn uniformly). Once the decoder's
 * window is full, its newest half is run again into an empty cache (one prefill) and generation goes on.
 */
export async function generate(
  decoder: Decoder,
  context: number[],
  logits: Float32Array | null,
  options: GenerateOptions,
): Promise<Generated> {
  const out: Generated = { tokens: [], logprobs: [], top: [], stopped: false };
  const want = options.logprobs ?? -1;
  for (let n = 0; n < options.tokens; n++) {
    const next = logits
      ? pickToken(logits, options.vocab, options.temperature, options.topK, options.random, options.topP)
      : options.random() % options.vocab;
    if (want >= 0 && logits) {
      const { logprob, top } = logProbs(logits, options.vocab, next, want);
      out.logprobs.push(logprob);
      out.top.push(top);
    }
    context.push(next);
    out.tokens.push(next);
    if (options.onToken?.(next) === true) {
      out.stopped = true;
      break;
    }
    if (n === options.tokens - 1) break;
    if (decoder.position < decoder.capacity) logits = await decoder.append([next]);
    else {
      decoder.reset();
      logits = await decoder.append(context.slice(-Math.max(1, Math.floor(decoder.capacity / 2))));
    }
  }
  return out;
}
