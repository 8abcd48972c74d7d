/**
 * A checkpoint of `webtron train`, or a Hugging Face folder (an ExportSource), as Megatron-LM's own
 * (`--ckpt-format torch`, one model-parallel rank), the inverse of megatron.ts:
 *
 *   OUTPUT/latest_checkpointed_iteration.txt   "release"
 *   OUTPUT/release/mp_rank_00/model_optim_rng.pt
 *
 * The .pt is what torch.save writes of Megatron's save_checkpoint dict: `args` (an argparse
 * namespace with the model's flags under Megatron's names), `checkpoint_version` 3.0, `iteration`
 * and `model`, Megatron-core's state dict under the local spec's names or Transformer Engine's.
 * A `release` checkpoint is how Megatron takes weights from elsewhere: `--load OUTPUT` starts at
 * iteration 0 and reads no optimizer or RNG state. The weights stream one tensor at a time.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { float32ToWords } from '../collectives/reduce.js';
import type { TokenizerState } from '../data/tokenizer.js';
import type { ParamDtype } from '../ddp/layout.js';
import { writeFileAtomic } from '../files.js';
import type { GptConfig } from '../nn/gpt.js';
import { ffnWidth, headDim, linearBias, queryGroups } from '../nn/gpt-spec.js';
import { NO_PROGRESS, type ProgressDisplay } from '../progress.js';
import { TRACKER } from './dir.js';
import { checkpointSource, type ExportSource, type RunArgs } from './export-source.js';
import { megatronTensors, type TransformerImpl } from './megatron.js';
import { type PickleValue, PyCall, PyFloat, PyGlobal, PyObject, PyPersistent, PyTuple, pickle } from './pickle.js';
import { type ArchiveRecord, STORAGE_CLASS, writeTorchArchive } from './torch-archive.js';

const float = (v: number) => new PyFloat(v);

/**
 * The args Megatron would have had to train this model, under its names: what its checks on load
 * compare, what its GPTModel is built from, and the activation that is webtron's tanh GELU
 * (bias_gelu_fusion with linear biases; openai_gelu without).
 */
export function megatronArgs(
  config: GptConfig,
  args: RunArgs,
  tokenizer: TokenizerState,
  impl: TransformerImpl,
  dtype: ParamDtype,
  iteration: number,
): Map<string, PickleValue> {
  const rope = config.positionEmbeddingType === 'rope';
  const groups = queryGroups(config);
  const biases = linearBias(config);
  const gelu = !config.swiglu && !config.squaredRelu;
  const fields: [string, PickleValue][] = [
    ['num_layers', config.numLayers],
    ['hidden_size', config.hiddenSize],
    ['ffn_hidden_size', ffnWidth(config)],
    ['num_attention_heads', config.numAttentionHeads],
    ['group_query_attention', groups !== config.numAttentionHeads],
    ['num_query_groups', groups],
    ['kv_channels', headDim(config)],
    ['max_position_embeddings', config.maxPositionEmbeddings ?? config.seqLength],
    ['seq_length', args.seqLength ?? config.seqLength],
    ['position_embedding_type', config.positionEmbeddingType ?? 'learned_absolute'],
    // Megatron's default, whatever the positions: its load compares it, and --position-embedding-type decides.
    ['add_position_embedding', true],
    ['rotary_base', rope ? (config.rotaryBase ?? 10000) : 10000],
    ['rotary_percent', float(config.rotaryPercent ?? 1)],
    ['rotary_interleaved', Boolean(config.rotaryInterleaved)],
    ['use_rope_scaling', rope && config.ropeScalingFactor !== undefined],
    ['rope_scaling_factor', float(config.ropeScalingFactor ?? 8)],
    ['normalization', config.normalization ?? 'LayerNorm'],
    ['norm_epsilon', float(config.normEpsilon ?? 1e-5)],
    ['apply_layernorm_1p', Boolean(config.applyLayernorm1p)],
    ['swiglu', Boolean(config.swiglu)],
    ['squared_relu', Boolean(config.squaredRelu)],
    ['openai_gelu', gelu && !biases],
    ['bias_gelu_fusion', gelu && biases],
    ['bias_swiglu_fusion', Boolean(config.swiglu)],
    ['add_bias_linear', biases],
    ['add_qkv_bias', biases || Boolean(config.addQkvBias)],
    ['qk_layernorm', Boolean(config.qkLayernorm)],
    ['untie_embeddings_and_output_weights', config.tiedHead === false],
    ['make_vocab_size_divisible_by', args.makeVocabSizeDivisibleBy ?? 128],
    ['padded_vocab_size', config.vocabSize],
    ['tokenizer_type', tokenizer.type],
    ['vocab_size', tokenizer.type === 'NullTokenizer' ? tokenizer.vocabSize : null],
    ['vocab_file', args.vocabFile ?? null],
    ['merge_file', args.mergeFile ?? null],
    ['tokenizer_model', args.tokenizerModel ?? null],
    ['hidden_dropout', float(args.hiddenDropout ?? 0.1)],
    ['attention_dropout', float(args.attentionDropout ?? 0.1)],
    ['transformer_impl', impl],
    ['tensor_model_parallel_size', 1],
    ['pipeline_model_parallel_size', 1],
    ['num_experts', null],
    ['fp16', dtype === 'float16'],
    ['bf16', dtype === 'bfloat16'],
    // webtron's dtype names are torch's (torch.float32, torch.bfloat16, …).
    ['params_dtype', new PyGlobal('torch', dtype)],
    ['ckpt_format', 'torch'],
    ['iteration', iteration],
    ['micro_batch_size', args.microBatchSize ?? null],
    ['global_batch_size', args.globalBatchSize ?? null],
  ];
  return new Map(fields);
}

/** A tensor of `numel` values in storage `key` of `dtype`, as torch pickles one (`_rebuild_tensor_v2`). */
function tensorRef(key: string, dtype: ParamDtype, shape: number[]): PyCall {
  const stride = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const numel = shape.reduce((a, b) => a * b, 1);
  const storage = new PyPersistent(new PyTuple(['storage', new PyGlobal('torch', STORAGE_CLASS[dtype]), key, 'cpu', numel]));
  return new PyCall(new PyGlobal('torch._utils', '_rebuild_tensor_v2'), [
    storage,
    0,
    new PyTuple(shape),
    new PyTuple(stride),
    false,
    new PyCall(new PyGlobal('collections', 'OrderedDict'), []),
  ]);
}

export interface MegatronExport {
  /** The checkpoint folder read. */
  dir: string;
  iteration: number;
  /** The model_optim_rng.pt written. */
  file: string;
  bytes: number;
  params: number;
  tensors: number;
}

/**
 * Write the checkpoint at `load` (or another source: a Hugging Face folder) as Megatron-LM's release
 * checkpoint in `output` (made if missing), weights in `dtype`.
 */
export async function exportMegatron(
  load: string | ExportSource,
  output: string,
  dtype: ParamDtype,
  impl: TransformerImpl,
  progress: ProgressDisplay = NO_PROGRESS,
): Promise<MegatronExport> {
  const model = typeof load === 'string' ? checkpointSource(load) : load;
  try {
    const { config, iteration } = model;
    const tensors = megatronTensors(config, impl);
    const state = new Map<PickleValue, PickleValue>([
      [
        'args',
        new PyObject(
          new PyGlobal('argparse', 'Namespace'),
          megatronArgs(config, model.runArgs ?? {}, model.tokenizer, impl, dtype, iteration),
        ),
      ],
      ['checkpoint_version', float(3)],
      ['iteration', iteration],
      ['model', new Map<PickleValue, PickleValue>(tensors.map((t, i) => [t.name, tensorRef(String(i), dtype, t.shape)]))],
    ]);
    const total = tensors.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
    const prefix = 'model_optim_rng/';
    let done = 0;
    const records: ArchiveRecord[] = [
      { name: `${prefix}data.pkl`, bytes: () => pickle(state) },
      { name: `${prefix}byteorder`, bytes: () => new TextEncoder().encode('little') },
      ...tensors.map((t, i) => ({
        name: `${prefix}data/${i}`,
        bytes: async () => {
          const values = t.values(await model.values(t.param));
          done += values.length;
          progress.update(Math.round((done / total) * 100), t.name);
          if (dtype === 'float32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
          const words = new Uint16Array(values.length);
          float32ToWords(values, dtype, words);
          return new Uint8Array(words.buffer);
        },
      })),
      { name: `${prefix}version`, bytes: () => new TextEncoder().encode('3\n') },
    ];
    const folder = join(output, 'release', 'mp_rank_00');
    mkdirSync(folder, { recursive: true });
    const file = join(folder, 'model_optim_rng.pt');
    let bytes: number;
    try {
      bytes = await writeTorchArchive(file, records);
    } finally {
      progress.finish();
    }
    writeFileAtomic(join(output, TRACKER), 'release');
    return { dir: model.dir, iteration, file, bytes, params: total, tensors: tensors.length };
  } finally {
    await model.close();
  }
}
