/** `webtron export`: a checkpoint of `webtron train` as an ONNX model (src/onnx/gpt.ts). */
import { basename, dirname, join } from 'node:path';
import { writeChunksAtomic, writeFileAtomic } from '../files.js';
import { GpuContext } from '../gpu/context.js';
import { formatBytes } from '../gpu/memory.js';
import { gptParams } from '../nn/gpt-spec.js';
import { gptToOnnx, gptToOnnxExternal, PROTOBUF_LIMIT } from '../onnx/gpt.js';
import { OPSET } from '../onnx/proto.js';
import { loadCheckpointModel } from '../train/checkpoint-model.js';
import type { Command } from './command.js';
import { FlagError, GPU_FLAGS, type FlagSpec, type FlagValues } from './flags.js';

export const EXPORT_FLAGS: Record<string, FlagSpec> = {
  load: { kind: 'string', help: 'a checkpoint of webtron train: its --save folder (the newest) or one iter_NNNNNNN folder' },
  output: { kind: 'string', help: 'the .onnx file to write' },
  dtype: { kind: 'string', default: 'float32', help: 'float32, or float16 for half-precision initializers and compute' },
  'external-data': {
    kind: 'boolean',
    help: "weights in OUTPUT.data beside the model (ONNX external data); automatic past protobuf's 2 GiB",
  },
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
  if (!output) throw new FlagError('--output is required: the .onnx file to write');
  const dtype = values.dtype as string;
  if (dtype !== 'float32' && dtype !== 'float16') throw new FlagError(`--dtype must be float32 or float16, got '${dtype}'`);
  const ctx = await GpuContext.create(gpu);
  const model = await loadCheckpointModel(ctx, path);
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

export const exportCmd: Command = {
  summary: 'write a checkpoint of webtron train as an ONNX model: webtron export --load DIR --output model.onnx',
  flags: { ...GPU_FLAGS, ...EXPORT_FLAGS },
  run: (values) => exportCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};
