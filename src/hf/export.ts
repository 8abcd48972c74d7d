/**
 * A checkpoint of `webtron train` as a Hugging Face GPT-2 folder, the files `transformers` reads:
 * model.safetensors, config.json, generation_config.json and the tokenizer's files (tokenizer.ts).
 *
 * The weights go from the checkpoint's files to model.safetensors one checked chunk at a time
 * (openModelTensors), converted on the way, so any size exports in a few chunks of memory and
 * without a GPU. Names are the `gpt2` folder's (`wte.weight`, `h.N.…`, `ln_f.…`) for a tied head;
 * an untied one is written as GPT2LMHeadModel's own state dict (`transformer.…` and `lm_head.weight`),
 * the form every `transformers` version loads an untied head from. Every file is written under a
 * temporary name, fsynced and renamed.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { openModelTensors, SAFETENSORS_DTYPE } from '../checkpoint/checkpoint.js';
import { CheckpointError } from '../checkpoint/errors.js';
import { encodeHeader } from '../checkpoint/safetensors.js';
import { loadTokenizer, type TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import { fsyncDir, writeFileAtomic } from '../files.js';
import type { GptConfig } from '../nn/gpt.js';
import { gptParams } from '../nn/gpt-spec.js';
import { NO_PROGRESS, type ProgressDisplay } from '../progress.js';
import { generationConfigJson, gpt2ConfigJson, HF_DTYPES, type HfDtype, hfName, unlikeGpt2 } from './gpt2.js';
import { tokenizerFiles } from './tokenizer.js';

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
  config: GptConfig;
  tokenizer: TokenizerState;
}

/** Write the checkpoint at `load` as a Hugging Face GPT-2 folder `output` (made if missing) with weights in `dtype`. */
export async function exportHfFolder(
  load: string,
  output: string,
  dtype: HfDtype,
  progress: ProgressDisplay = NO_PROGRESS,
): Promise<HfExport> {
  const model = openModelTensors(load);
  try {
    const extra = model.index.extra as { model?: GptConfig; tokenizer?: TokenizerState };
    if (!extra.model || !extra.tokenizer)
      throw new CheckpointError(`${model.dir}: not a checkpoint of webtron train (index.json has no model or tokenizer)`);
    const config: GptConfig = { ...extra.model };
    const unlike = unlikeGpt2(config);
    if (unlike)
      throw new CheckpointError(
        `${model.dir}: the model has ${unlike}, which Hugging Face's GPT-2 cannot hold; export it with --format onnx`,
      );
    const tokenizer = await loadTokenizer(extra.tokenizer);
    const to = HF_DTYPES[dtype];
    const prefixed = config.tiedHead === false;
    // In the model's order (wte first), as transformers saves them.
    const byName = new Map(model.params.map((p) => [p.name, p]));
    const tensors = gptParams(config).map((spec) => {
      const p = byName.get(spec.name);
      if (!p) throw new CheckpointError(`${model.dir}: index.json has no param '${spec.name}' of the model it describes`);
      return { ...p, hfName: hfName(p.name, prefixed) };
    });
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
          await model.stream(t.name, to, write);
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
    const files = new Map<string, string>([
      ['config.json', `${JSON.stringify(gpt2ConfigJson(config, { dtype, eod: tokenizer.eod }), null, 2)}\n`],
      ['generation_config.json', `${JSON.stringify(generationConfigJson(tokenizer.eod), null, 2)}\n`],
      ...(await tokenizerFiles(extra.tokenizer, positions)),
    ]);
    for (const [name, text] of files) writeFileAtomic(join(output, name), text);
    return {
      dir: model.dir,
      iteration: model.index.iteration,
      checkpointDtype: (model.params[0]?.dtype ?? 'float32') as ParamDtype,
      params: total,
      bytes,
      files: ['model.safetensors', ...files.keys()],
      config,
      tokenizer: extra.tokenizer,
    };
  } finally {
    await model.close();
  }
}
