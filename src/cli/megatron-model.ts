/**
 * A Megatron-LM checkpoint as a webtron GPT for inference (`webtron sample --load SAVE`) and for
 * `webtron export --load SAVE`: the model its saved args describe, read as `webtron train --init-from`
 * reads them (./megatron-init.ts), its weights as the run's would be, and the tokenizer its args name.
 */
import { type MegatronCheckpoint, megatronCheckpointPath, megatronWeights, openMegatronCheckpoint } from '../checkpoint/megatron.js';
import { loadTokenizer, readTokenizerFiles, type TokenizerState } from '../data/tokenizer.js';
import { type ExportSource, sinkAs } from '../checkpoint/export-source.js';
import { ConfigError } from '../errors.js';
import type { GptConfig } from '../nn/gpt.js';
import type { TrainConfig } from '../train/config.js';
import { gptConfig } from '../train/setup.js';
import { withMegatronArgs } from './megatron-init.js';
import { parseFlags } from './flags.js';
import { resolveTrainConfig, TRAIN_FLAGS } from './train-flags.js';

/** The tokenizer the checkpoint's args name, as `webtron train --init-from` would build it. */
function tokenizerState(cfg: TrainConfig, path: string): TokenizerState {
  switch (cfg.tokenizerType) {
    case 'CharTokenizer':
      throw new ConfigError(
        `load ${path}: its args name CharTokenizer, whose characters come from the training text and are not in the checkpoint`,
        'load',
      );
    case 'ByteTokenizer':
      return { type: 'ByteTokenizer' };
    case 'NullTokenizer':
      return { type: 'NullTokenizer', vocabSize: cfg.tokenizerVocabSize! };
    default:
      return readTokenizerFiles(cfg.tokenizerType, cfg);
  }
}

/** The model `checkpoint`'s args describe (dropout off, its context its positions), and its tokenizer. */
async function megatronModel(checkpoint: MegatronCheckpoint, path: string): Promise<{ config: GptConfig; tokenizer: TokenizerState }> {
  // The flags a run from the checkpoint would have, with Megatron's defaults for the rest.
  const { values } = parseFlags(
    ['--init-from', path, '--micro-batch-size', '1', '--train-iters', '1', '--lr', '0', '--mock-data'],
    TRAIN_FLAGS,
  );
  const megatron = withMegatronArgs(checkpoint, values, []);
  // withMegatronInit takes the saved tokenizer_model only where it is on this machine.
  if (megatron.values['tokenizer-type'] === 'HuggingFaceTokenizer' && megatron.values['tokenizer-model'] === undefined)
    throw new ConfigError(
      `load ${path}: its args name HuggingFaceTokenizer, whose tokenizer_model is not on this machine at the path the args give; put the tokenizer there`,
      'load',
    );
  const cfg = { ...resolveTrainConfig(megatron.values, 1), vocabSize: megatron.vocabSize };
  const tokenizer = tokenizerState(cfg, path);
  const trained = gptConfig(cfg, await loadTokenizer(tokenizer));
  return { config: { ...trained, seqLength: cfg.maxPositionEmbeddings, hiddenDropout: 0, attentionDropout: 0 }, tokenizer };
}

/** The Megatron checkpoint `path` as what `webtron export` reads: its params by webtron's names, one at a time. */
export async function megatronExportSource(path: string): Promise<ExportSource> {
  // Opened once: its args give the model, its tensors the weights.
  const checkpoint = openMegatronCheckpoint(megatronCheckpointPath(path)!);
  let model: { config: GptConfig; tokenizer: TokenizerState };
  try {
    model = await megatronModel(checkpoint, path);
  } catch (error) {
    checkpoint.close();
    throw error;
  }
  const { config, tokenizer } = model;
  const weights = megatronWeights(checkpoint, config);
  const { args } = checkpoint;
  const text = (v: unknown) => (typeof v === 'string' ? v : null);
  const count = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return {
    dir: checkpoint.path,
    // What a Megatron export writes back into the args, as the run had it.
    runArgs: {
      seqLength: count(args.seq_length),
      makeVocabSizeDivisibleBy: count(args.make_vocab_size_divisible_by),
      vocabFile: text(args.vocab_file),
      mergeFile: text(args.merge_file),
      tokenizerModel: text(args.tokenizer_model),
      hiddenDropout: count(args.hidden_dropout),
      attentionDropout: count(args.attention_dropout),
      microBatchSize: count(args.micro_batch_size),
      globalBatchSize: count(args.global_batch_size),
    },
    iteration: checkpoint.iteration ?? 0,
    // Megatron keeps the params in its params_dtype: bf16 or fp16 with those flags.
    dtype: args.bf16 ? 'bfloat16' : args.fp16 ? 'float16' : 'float32',
    config,
    tokenizer,
    stream: async (name, dtype, sink) => sinkAs(weights.read(name), dtype, sink),
    values: async (name) => weights.read(name),
    close: async () => weights.close(),
  };
}
