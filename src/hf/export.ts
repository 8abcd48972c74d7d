/**
 * A checkpoint of `webtron train` (or a Megatron-LM one: any ExportSource, src/checkpoint/export-source.ts)
 * as a Hugging Face GPT-2 folder, or a Llama one for a model with
 * Llama's block (a Qwen2 one with biases on q, k and v; llama.ts), the files `transformers` reads:
 * model.safetensors, config.json, generation_config.json and the tokenizer's files (tokenizer.ts).
 *
 * The weights go from the checkpoint's files to model.safetensors one checked chunk at a time
 * (openModelTensors), converted on the way, so any size exports in a few chunks of memory and
 * without a GPU. Names are the `gpt2` folder's (`wte.weight`, `h.N.…`, `ln_f.…`) for a tied head;
 * an untied one is written as GPT2LMHeadModel's own state dict (`transformer.…` and `lm_head.weight`),
 * the form every `transformers` version loads an untied head from. A Llama folder's tensors are
 * rearranged from whole params (one at a time in memory: transposed, q, k and v split). Every file
 * is written under a temporary name, fsynced and renamed.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SAFETENSORS_DTYPE } from '../checkpoint/checkpoint.js';
import { checkpointSource, type ExportSource, sinkAs } from '../checkpoint/export-source.js';
import { CheckpointError } from '../checkpoint/errors.js';
import { encodeHeader } from '../checkpoint/safetensors.js';
import { loadTokenizer, type TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import { fsyncDir, writeFileAtomic } from '../files.js';
import type { GptConfig } from '../nn/gpt.js';
import { gptParams, isNormWeight } from '../nn/gpt-spec.js';
import { NO_PROGRESS, type ProgressDisplay } from '../progress.js';
import { generationConfigJson, gpt2ConfigJson, HF_DTYPES, type HfDtype, hfName, unlikeGpt2 } from './gpt2.js';
import { llamaConfigJson, llamaTensors, unlikeLlama } from './llama.js';
import { tokenizerFiles } from './tokenizer.js';

/** One tensor of model.safetensors: its name and shape, and how its bytes are written in the folder's dtype. */
interface WeightOut {
  hfName: string;
  shape: readonly number[];
  write: (sink: (chunk: Uint8Array) => void) => Promise<void>;
}

/**
 * GPT-2's tensors: webtron's params as they are, in the model's order (wte first), as transformers
 * saves them; zero-centered norm weights (--apply-layernorm-1p) with their 1 added, as GPT-2's norms
 * have none.
 */
function gpt2Weights(model: ExportSource, config: GptConfig, to: ParamDtype): WeightOut[] {
  const prefixed = config.tiedHead === false;
  return gptParams(config).map((spec) => ({
    hfName: hfName(spec.name, prefixed),
    shape: spec.shape,
    write:
      config.applyLayernorm1p && isNormWeight(spec.name)
        ? async (sink) => sinkAs(plusOne(await model.values(spec.name)), to, sink)
        : (sink) => model.stream(spec.name, to, sink),
  }));
}

/** A zero-centered norm weight's gamma: each value plus 1, in fp32. */
const plusOne = (values: Float32Array): Float32Array => values.map((v) => v + 1);

/**
 * Llama's tensors (llama.ts): each taken from its param's fp32 values, whole, in turn (q, k and v
 * from one read of the fused qkv), and converted to the folder's dtype.
 */
function llamaWeights(model: ExportSource, config: GptConfig, to: ParamDtype): WeightOut[] {
  let last: { name: string; values: Float32Array } | null = null;
  const valuesOf = async (name: string): Promise<Float32Array> => {
    if (last?.name === name) return last.values;
    const values = await model.values(name);
    // Llama's norms have no zero-centered form: gamma is the param plus 1 (--apply-layernorm-1p).
    last = { name, values: config.applyLayernorm1p && isNormWeight(name) ? plusOne(values) : values };
    return last.values;
  };
  return llamaTensors(config).map((t) => ({
    hfName: t.name,
    shape: t.shape,
    write: async (sink) => sinkAs(t.take(await valuesOf(t.from)), to, sink),
  }));
}

export interface HfExport {
  /** The checkpoint folder read. */
  dir: string;
  iteration: number;
  /** The params' dtype in the checkpoint. */
  checkpointDtype: ParamDtype;
  params: number;
  /** Bytes of model.safetensors. */
  bytes: number;
  /** Every file written, by name. */
  files: string[];
  /** The class that loads it (config.json's architectures): GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM. */
  architecture: string;
  config: GptConfig;
  tokenizer: TokenizerState;
}

/**
 * Write the checkpoint at `load` (or another source: a Megatron-LM checkpoint) as a Hugging Face
 * folder `output` (made if missing) with weights in `dtype`.
 */
export async function exportHfFolder(
  load: string | ExportSource,
  output: string,
  dtype: HfDtype,
  progress: ProgressDisplay = NO_PROGRESS,
): Promise<HfExport> {
  const model = typeof load === 'string' ? checkpointSource(load) : load;
  try {
    const { config } = model;
    const notGpt2 = unlikeGpt2(config);
    const notLlama = notGpt2 && unlikeLlama(config);
    if (notGpt2 && notLlama)
      throw new CheckpointError(
        `${model.dir}: the model has ${notGpt2} and ${notLlama}: none of Hugging Face's GPT-2, Llama, Qwen2 and Qwen3 holds it; export it with --format onnx`,
      );
    const tokenizer = await loadTokenizer(model.tokenizer);
    const to = HF_DTYPES[dtype];
    const tensors = notGpt2 ? llamaWeights(model, config, to) : gpt2Weights(model, config, to);
    mkdirSync(output, { recursive: true });

    const weights = join(output, 'model.safetensors');
    const header = encodeHeader(
      tensors.map((t) => ({ name: t.hfName, dtype: SAFETENSORS_DTYPE[to], shape: t.shape })),
      { format: 'pt' },
    );
    const total = tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
    const tmp = `${weights}.tmp-${process.pid}`;
    let bytes = header.bytes.byteLength;
    try {
      const fd = openSync(tmp, 'w');
      try {
        const write = (chunk: Uint8Array) => {
          for (let at = 0; at < chunk.byteLength; ) at += writeSync(fd, chunk, at, chunk.byteLength - at);
          bytes += chunk.byteLength;
        };
        write(header.bytes);
        let done = 0;
        for (const t of tensors) {
          await t.write(write);
          done += t.shape.reduce((a, b) => a * b, 1);
          progress.update(Math.round((done / total) * 100), t.hfName);
        }
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, weights);
      fsyncDir(dirname(weights));
    } catch (error) {
      rmSync(tmp, { force: true });
      throw error;
    } finally {
      progress.finish();
    }
    const positions = config.maxPositionEmbeddings ?? config.seqLength;
    const configJson = (notGpt2 ? llamaConfigJson : gpt2ConfigJson)(config, { dtype, eod: tokenizer.eod });
    const files = new Map<string, string>([
      ['config.json', `${JSON.stringify(configJson, null, 2)}\n`],
      ['generation_config.json', `${JSON.stringify(generationConfigJson(tokenizer.eod), null, 2)}\n`],
      ...(await tokenizerFiles(model.tokenizer, positions)),
    ]);
    for (const [name, text] of files) writeFileAtomic(join(output, name), text);
    return {
      dir: model.dir,
      iteration: model.iteration,
      checkpointDtype: model.dtype,
      params: total,
      bytes,
      files: ['model.safetensors', ...files.keys()],
      architecture: (configJson.architectures as string[])[0]!,
      config,
      tokenizer: model.tokenizer,
    };
  } finally {
    await model.close();
  }
}
