/**
 * A Hugging Face folder as a webtron GPT for inference (`webtron sample --load DIR`): the model its
 * config.json describes (GPT-2's block, or Llama's, with Qwen2's q, k and v biases), its weights
 * read as `--init-from` reads them, and its tokenizer.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ExportSource, loadSourceModel, sinkAs } from '../checkpoint/export-source.js';
import type { TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import { ConfigError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import type { GptConfig } from '../nn/gpt.js';
import { readHfConfig } from './llama.js';
import { readFolderTokenizer } from './tokenizer.js';
import { openFolderWeights } from './weights.js';

/** Whether `dir` is a Hugging Face folder rather than a checkpoint of webtron train: a config.json, and no index.json or latest_checkpointed_iteration.txt. */
export function isHfFolder(dir: string): boolean {
  return (
    existsSync(join(dir, 'config.json')) &&
    !existsSync(join(dir, 'index.json')) &&
    !existsSync(join(dir, 'latest_checkpointed_iteration.txt'))
  );
}

/** The GPT of the folder `dir`'s config.json (checked as --init-from checks it), dropout off, its context its positions. */
export function hfGptConfig(dir: string): GptConfig {
  const folder = readHfConfig(dir);
  const c = folder.config;
  const common = {
    numLayers: c.numLayers,
    hiddenSize: c.hiddenSize,
    numAttentionHeads: c.numAttentionHeads,
    vocabSize: c.vocabSize,
    seqLength: c.maxPositionEmbeddings,
    maxPositionEmbeddings: c.maxPositionEmbeddings,
    ffnHiddenSize: c.ffnHiddenSize,
    tiedHead: c.tiedHead,
    normEpsilon: c.normEpsilon,
    hiddenDropout: 0,
    attentionDropout: 0,
  };
  if (folder.kind === 'gpt2') return common;
  const l = folder.config;
  return {
    ...common,
    positionEmbeddingType: 'rope',
    rotaryBase: l.rotaryBase,
    ...(l.ropeScalingFactor === null ? {} : { ropeScalingFactor: l.ropeScalingFactor }),
    normalization: 'RMSNorm',
    swiglu: true,
    addBiasLinear: false,
    addQkvBias: l.addQkvBias,
    numQueryGroups: l.numQueryGroups,
    ...(l.kvChannels === null ? {} : { kvChannels: l.kvChannels }),
    ...(l.qkLayernorm ? { qkLayernorm: true } : {}),
  };
}

/** The model and tokenizer of the Hugging Face folder `dir`, its params fp32 on `ctx`; a folder webtron cannot read is one ConfigError. */
export async function loadHfFolderModel(ctx: GpuContext, dir: string): ReturnType<typeof loadSourceModel> {
  return loadSourceModel(ctx, await hfExportSource(dir));
}

/** `load` of a Hugging Face folder for a command's --load (sample, export): its errors name --load, not --init-from. */
export async function asLoadFlag<T>(load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`--load ${error.message.replace(/^initFrom: /, '')}`);
    throw error;
  }
}

/** The folder's tokenizer, one ConfigError where it has none. */
async function folderTokenizer(dir: string): Promise<TokenizerState> {
  const tokenizer = await readFolderTokenizer(dir);
  if (!tokenizer)
    throw new ConfigError(
      `${dir} has no tokenizer files (vocab.json and merges.txt, or tokenizer.json); copy the model's tokenizer into it`,
    );
  return tokenizer;
}

/**
 * The Hugging Face folder `dir` as what `webtron export` reads (to Megatron-LM's checkpoint or ONNX):
 * the model of its config.json, its weights one tensor at a time as `--init-from` reads them.
 */
export async function hfExportSource(dir: string): Promise<ExportSource> {
  const config = hfGptConfig(dir);
  const tokenizer = await folderTokenizer(dir);
  const weights = openFolderWeights(dir, config);
  // config.json's dtype (transformers' torch_dtype, or dtype since 4.56): the weights' own.
  const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { torch_dtype?: string; dtype?: string };
  const named = json.dtype ?? json.torch_dtype;
  const dtype: ParamDtype = named === 'bfloat16' || named === 'float16' ? named : 'float32';
  return {
    dir,
    iteration: 0,
    dtype,
    config,
    tokenizer,
    stream: async (name, to, sink) => sinkAs(weights.read(name), to, sink),
    values: async (name) => weights.read(name),
    close: async () => weights.close(),
  };
}
