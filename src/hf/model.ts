/**
 * A Hugging Face folder as a webtron GPT for inference (`webtron sample --load DIR`): the model its
 * config.json describes (GPT-2's block, or Llama's, with Qwen2's q, k and v biases), its weights
 * read as `--init-from` reads them, and its tokenizer.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { TokenizerState } from '../data/tokenizer.js';
import { ConfigError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { Gpt, type GptConfig } from '../nn/gpt.js';
import { LocalParams } from '../nn/params.js';
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
export async function loadHfFolderModel(
  ctx: GpuContext,
  dir: string,
): Promise<{ config: GptConfig; tokenizer: TokenizerState; params: LocalParams; gpt: Gpt }> {
  const config = hfGptConfig(dir);
  const tokenizer = await readFolderTokenizer(dir);
  if (!tokenizer)
    throw new ConfigError(
      `${dir} has no tokenizer files (vocab.json and merges.txt, or tokenizer.json); copy the model's tokenizer into it`,
    );
  const weights = openFolderWeights(dir, config);
  const specs = Gpt.specs(config);
  const params = new LocalParams(ctx, specs);
  try {
    // One tensor in host memory at a time.
    for (const s of specs) params.set(new Map([[s.name, weights.read(s.name)]]));
  } catch (error) {
    params.destroy();
    throw error;
  } finally {
    weights.close();
  }
  return { config, tokenizer, params, gpt: new Gpt(config, params.tensors) };
}
