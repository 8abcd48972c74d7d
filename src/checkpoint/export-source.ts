/**
 * What `webtron export` reads: a model's config and tokenizer, and its params by webtron's names,
 * streamed in a dtype or whole as fp32. A checkpoint of webtron train is one (checkpointSource); a
 * Megatron-LM checkpoint (src/cli/megatron-model.ts) and a Hugging Face folder (src/hf/model.ts)
 * are others. Every writer (ONNX aside, which runs the model) takes any of them.
 */
import { float32ToWords } from '../collectives/reduce.js';
import type { TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import type { GpuContext } from '../gpu/context.js';
import { Gpt, type GptConfig } from '../nn/gpt.js';
import { gptParams } from '../nn/gpt-spec.js';
import { LocalParams } from '../nn/params.js';
import { openModelTensors } from './checkpoint.js';
import { CheckpointError } from './errors.js';

/** What of the run's flags (index.json's `args`, TrainConfig's names) a Megatron export writes into Megatron's args. */
export interface RunArgs {
  seqLength?: number;
  makeVocabSizeDivisibleBy?: number;
  vocabFile?: string | null;
  mergeFile?: string | null;
  tokenizerModel?: string | null;
  hiddenDropout?: number;
  attentionDropout?: number;
  microBatchSize?: number;
  globalBatchSize?: number;
}

/** A model to export (see the file's comment). */
export interface ExportSource {
  /** The checkpoint read. */
  dir: string;
  iteration: number;
  /** The params' dtype in the checkpoint. */
  dtype: ParamDtype;
  config: GptConfig;
  tokenizer: TokenizerState;
  /** The flags of the run that trained it, where it has them. */
  runArgs?: RunArgs;
  /** Param `name`'s bytes as `dtype` (rounded to nearest even when narrower), in order to `sink`. */
  stream(name: string, dtype: ParamDtype, sink: (bytes: Uint8Array) => void): Promise<void>;
  /** Param `name`'s values as fp32, whole. */
  values(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** The checkpoint of webtron train at `load` as an export's source, read from its files without a GPU (openModelTensors). */
export function checkpointSource(load: string): ExportSource {
  const model = openModelTensors(load);
  const extra = model.index.extra as { model?: GptConfig; tokenizer?: TokenizerState; args?: RunArgs };
  const fail = (message: string) => {
    void model.close();
    return new CheckpointError(`${model.dir}: ${message}`);
  };
  if (!extra.model || !extra.tokenizer) throw fail('not a checkpoint of webtron train (index.json has no model or tokenizer)');
  const byName = new Map(model.params.map((p) => [p.name, p]));
  for (const spec of gptParams(extra.model))
    if (!byName.has(spec.name)) throw fail(`index.json has no param '${spec.name}' of the model it describes`);
  return {
    dir: model.dir,
    iteration: model.index.iteration,
    dtype: (model.params[0]?.dtype ?? 'float32') as ParamDtype,
    config: { ...extra.model },
    tokenizer: extra.tokenizer,
    ...(extra.args ? { runArgs: extra.args } : {}),
    stream: (name, dtype, sink) => model.stream(name, dtype, sink),
    values: (name) => model.values(name),
    close: () => model.close(),
  };
}

/** `values` to `sink` in the folder's dtype (16-bit: rounded to nearest even). */
export function sinkAs(values: Float32Array, to: ParamDtype, sink: (chunk: Uint8Array) => void): void {
  if (to === 'float32') sink(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  else {
    const words = new Uint16Array(values.length);
    float32ToWords(values, to, words);
    sink(new Uint8Array(words.buffer));
  }
}

/** A source's model on the GPU for inference (`webtron sample`, the ONNX export): its params fp32 on `ctx`, one tensor in host memory at a time; the source is closed. */
export async function loadSourceModel(
  ctx: GpuContext,
  source: ExportSource,
): Promise<{
  dir: string;
  iteration: number;
  dtype: ParamDtype;
  config: GptConfig;
  tokenizer: TokenizerState;
  params: LocalParams;
  gpt: Gpt;
}> {
  const specs = Gpt.specs(source.config);
  const params = new LocalParams(ctx, specs);
  try {
    for (const s of specs) params.set(new Map([[s.name, await source.values(s.name)]]));
  } catch (error) {
    params.destroy();
    throw error;
  } finally {
    await source.close();
  }
  const { dir, iteration, dtype, config, tokenizer } = source;
  return { dir, iteration, dtype, config, tokenizer, params, gpt: new Gpt(config, params.tensors) };
}
