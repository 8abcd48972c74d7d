/** A GPT and its tokenizer from a checkpoint of `webtron train`, for inference (`webtron sample`, `webtron export`). */
import { loadModelParams, readCheckpointIndex } from '../checkpoint/checkpoint.js';
import { CheckpointError } from '../checkpoint/errors.js';
import type { TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import type { GpuContext } from '../gpu/context.js';
import { Gpt, type GptConfig } from '../nn/gpt.js';
import { LocalParams } from '../nn/params.js';

export interface CheckpointModel {
  /** The checkpoint folder read. */
  dir: string;
  iteration: number;
  /** The model's config, dropout off. */
  config: GptConfig;
  tokenizer: TokenizerState;
  /** The params' dtype in the checkpoint. */
  dtype: ParamDtype;
  params: LocalParams;
  gpt: Gpt;
}

/** The checkpoint at `path` (a --save folder or one iter_NNNNNNN folder), its params on `ctx`. */
export async function loadCheckpointModel(ctx: GpuContext, path: string): Promise<CheckpointModel> {
  const { dir, index } = readCheckpointIndex(path);
  const extra = index.extra as { model?: GptConfig; tokenizer?: TokenizerState };
  if (!extra.model || !extra.tokenizer)
    throw new CheckpointError(`${dir}: not a checkpoint of webtron train (index.json has no model or tokenizer)`);
  const config: GptConfig = { ...extra.model, hiddenDropout: 0, attentionDropout: 0 };
  const dtype = (index.params[0]?.dtype ?? 'float32') as ParamDtype;
  const params = new LocalParams(ctx, Gpt.specs(config, dtype));
  await loadModelParams(dir, params.buffers);
  return { dir, iteration: index.iteration, config, tokenizer: extra.tokenizer, dtype, params, gpt: new Gpt(config, params.tensors) };
}
