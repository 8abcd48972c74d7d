/**
 * `webtron export`: a checkpoint of `webtron train` as an ONNX model (src/onnx/gpt.ts), or with
 * `--format hf` as a Hugging Face GPT-2 or Llama folder (src/hf/export.ts), or with `--format megatron`
 * as Megatron-LM's checkpoint (src/checkpoint/megatron-export.ts). A Hugging Face folder exports
 * too (src/hf/model.ts), and a Megatron-LM checkpoint as ONNX or a Hugging Face folder
 * (./megatron-model.ts): each is an ExportSource (src/checkpoint/export-source.ts).
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeChunksAtomic, writeFileAtomic } from '../files.js';
import { GpuContext } from '../gpu/context.js';
import { formatBytes } from '../gpu/memory.js';
import { gptParams } from '../nn/gpt-spec.js';
import { checkpointSource, type ExportSource, loadSourceModel } from '../checkpoint/export-source.js';
import { megatronCheckpointPath } from '../checkpoint/megatron.js';
import { asLoadFlag, hfExportSource, isHfFolder } from '../hf/model.js';
import { exportMegatron } from '../checkpoint/megatron-export.js';
import { exportHfFolder } from '../hf/export.js';
import { HF_DTYPES, type HfDtype } from '../hf/gpt2.js';
import { loadCheckpointModel } from '../train/checkpoint-model.js';
import type { Command } from './command.js';
import { FlagError, GPU_FLAGS, type FlagSpec, type FlagValues } from './flags.js';
import { ProgressBar } from './progress.js';

export const EXPORT_FLAGS: Record<string, FlagSpec> = {
  load: {
    kind: 'string',
    help: 'a checkpoint of webtron train (its --save folder, the newest, or one iter_NNNNNNN folder), a Hugging Face folder, or a Megatron-LM checkpoint (torch_dist or torch)',
  },
  output: { kind: 'string', help: 'the .onnx file to write, or with --format hf or megatron the folder' },
  format: {
    kind: 'string',
    default: 'onnx',
    help: "onnx; hf: a Hugging Face GPT-2 (or, for Llama-block models, Llama) folder (model.safetensors, config.json, the tokenizer's files) for transformers; megatron: Megatron-LM's --ckpt-format torch checkpoint (release/mp_rank_00/model_optim_rng.pt) for its --load",
  },
  dtype: {
    kind: 'string',
    default: 'fp32',
    help: 'the weights as fp32, fp16 or bf16 (hf and megatron only); fp16 in ONNX computes in half precision too',
  },
  'transformer-impl': {
    kind: 'string',
    default: 'transformer_engine',
    help: "--format megatron: the names of the Megatron-core spec that loads it, transformer_engine (Megatron's default: norms fused into linear_qkv and linear_fc1) or local",
  },
  'external-data': {
    kind: 'boolean',
    help: "weights in OUTPUT.data beside the model (ONNX external data); automatic past protobuf's 2 GiB",
  },
};

/** --dtype's words: Megatron's (fp32) and torch's (float32). */
const DTYPE_WORDS: Record<string, HfDtype> = {
  fp32: 'fp32',
  float32: 'fp32',
  fp16: 'fp16',
  float16: 'fp16',
  bf16: 'bf16',
  bfloat16: 'bf16',
};

/** Room for the graph and metadata beside the weights within protobuf's 2 GiB. */
const GRAPH_MARGIN = 64 << 20;

export async function exportCommand(
  values: FlagValues,
  gpu: { backend?: string | undefined; adapter?: string | undefined },
): Promise<void> {
  const path = values.load as string | undefined;
  if (!path) throw new FlagError('--load is required: the checkpoint to export (a --save folder of webtron train)');
  const output = values.output as string | undefined;
  if (!output) throw new FlagError('--output is required: the .onnx file to write (or with --format hf or megatron, the folder)');
  const format = values.format as string;
  if (format !== 'onnx' && format !== 'hf' && format !== 'megatron')
    throw new FlagError(`--format must be onnx, hf or megatron, got '${format}'`);
  const dtypeWord = DTYPE_WORDS[values.dtype as string];
  if (!dtypeWord) throw new FlagError(`--dtype must be fp32, fp16 or bf16, got '${String(values.dtype)}'`);
  // A Megatron-LM checkpoint and a Hugging Face folder export too: their models as `webtron sample --load` reads them.
  const from = sourceKind(path);
  // A Megatron checkpoint to --format megatron: torch_dist at any parallel sizes as the torch format at 1.
  if (format === 'megatron')
    return exportMegatronCommand(values, from === 'webtron' ? path : await sourceOf(path, from), output, dtypeWord);
  if (values['transformer-impl'] !== 'transformer_engine')
    throw new FlagError('--transformer-impl is for --format megatron: the names of the Megatron-core spec that loads it');
  if (format === 'hf') {
    if (values['external-data'])
      throw new FlagError('--external-data is for --format onnx; a Hugging Face folder keeps its weights in model.safetensors');
    if (existsSync(output) && !statSync(output).isDirectory())
      throw new FlagError(`--output ${output} is a file; --format hf writes a folder (made if missing)`);
    const bar = new ProgressBar(100, process.stderr, process.stderr.isTTY === true);
    const done = await exportHfFolder(await sourceOf(path, from), output, dtypeWord, bar);
    console.log(
      `wrote ${output}: ${done.params.toLocaleString('en-US')} params (${done.checkpointDtype} checkpoint at iteration ${done.iteration}) as ${HF_DTYPES[dtypeWord]}, ${formatBytes(done.bytes)} of model.safetensors; ${done.files.slice(1).join(', ')}; load it with ${done.architecture}.from_pretrained and AutoTokenizer.from_pretrained`,
    );
    return;
  }
  if (dtypeWord === 'bf16') throw new FlagError('--dtype bf16 is for --format hf; ONNX exports fp32 or fp16');
  // The ONNX writer (protobufjs and onnx-proto) loads only for an ONNX export.
  const { gptToOnnx, gptToOnnxExternal, PROTOBUF_LIMIT } = await import('../onnx/gpt.js');
  const { OPSET } = await import('../onnx/proto.js');
  const dtype = dtypeWord === 'fp16' ? 'float16' : 'float32';
  const ctx = await GpuContext.create(gpu);
  const model = from === 'webtron' ? await loadCheckpointModel(ctx, path) : await loadSourceModel(ctx, await sourceOf(path, from));
  const specs = gptParams(model.config);
  const count = specs.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
  const external = values['external-data'] === true || count * (dtype === 'float16' ? 2 : 4) > PROTOBUF_LIMIT - GRAPH_MARGIN;
  const params = new Map<string, Float32Array>();
  for (const p of specs) params.set(p.name, await model.params.read(p.name));
  model.params.destroy();
  const options = {
    float16: dtype === 'float16',
    metadata: {
      'webtron.config': JSON.stringify(model.config),
      'webtron.tokenizer': JSON.stringify(model.tokenizer),
      'webtron.checkpoint': JSON.stringify({ dir: model.dir, iteration: model.iteration, dtype: model.dtype }),
    },
  };
  let onnxBytes: Uint8Array;
  let dataNote = '';
  if (external) {
    const location = `${basename(output)}.data`;
    const built = gptToOnnxExternal(model.config, params, location, options);
    // The data first: a model file never names data that is not there.
    writeChunksAtomic(join(dirname(output), location), built.data);
    onnxBytes = built.model;
    dataNote = ` + ${location} (${formatBytes(built.data.reduce((sum, c) => sum + c.byteLength, 0))} of external data)`;
  } else {
    onnxBytes = gptToOnnx(model.config, params, options);
  }
  writeFileAtomic(output, onnxBytes);
  console.log(
    `wrote ${output}: ${count.toLocaleString('en-US')} params (${model.dtype} checkpoint at iteration ${model.iteration}) as ${dtype}, opset ${OPSET}, ${formatBytes(onnxBytes.byteLength)}${dataNote}; input input_ids int64 [batch, sequence], output logits [batch, sequence, ${model.config.vocabSize}]`,
  );
}

/** What `--load` names: a checkpoint of webtron train, a Megatron-LM checkpoint or a Hugging Face folder. */
function sourceKind(path: string): 'webtron' | 'megatron' | 'hf' {
  if (megatronCheckpointPath(path) !== null) return 'megatron';
  return isHfFolder(path) ? 'hf' : 'webtron';
}

/** The export's source for `path` of `kind`; the Megatron module loads only for a Megatron checkpoint. */
async function sourceOf(path: string, kind: 'webtron' | 'megatron' | 'hf'): Promise<ExportSource> {
  if (kind === 'megatron') return (await import('./megatron-model.js')).megatronExportSource(path);
  return kind === 'hf' ? asLoadFlag(() => hfExportSource(path)) : checkpointSource(path);
}

/** `--format megatron`: Megatron-LM's release checkpoint in the folder `output`. */
async function exportMegatronCommand(values: FlagValues, load: string | ExportSource, output: string, dtype: HfDtype): Promise<void> {
  const impl = values['transformer-impl'] as string;
  if (impl !== 'transformer_engine' && impl !== 'local')
    throw new FlagError(`--transformer-impl must be transformer_engine or local, got '${impl}'`);
  if (values['external-data'])
    throw new FlagError('--external-data is for --format onnx; a Megatron checkpoint keeps its weights in model_optim_rng.pt');
  if (existsSync(output) && !statSync(output).isDirectory())
    throw new FlagError(`--output ${output} is a file; --format megatron writes a folder (made if missing)`);
  const bar = new ProgressBar(100, process.stderr, process.stderr.isTTY === true);
  const done = await exportMegatron(load, output, HF_DTYPES[dtype], impl, bar);
  console.log(
    `wrote ${done.file}: ${done.params.toLocaleString('en-US')} params in ${done.tensors} tensors (checkpoint at iteration ${done.iteration}) as ${HF_DTYPES[dtype]}, ${formatBytes(done.bytes)}, Megatron-core's ${impl} names; Megatron-LM loads it with --load ${output} --ckpt-format torch --transformer-impl ${impl}`,
  );
}

export const exportCmd: Command = {
  summary:
    'write a checkpoint of webtron train as an ONNX model, a Hugging Face GPT-2 or Llama folder, or a Megatron-LM checkpoint: webtron export --load DIR --output model.onnx | --format hf|megatron --output FOLDER',
  flags: { ...GPU_FLAGS, ...EXPORT_FLAGS },
  run: (values) => exportCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};
