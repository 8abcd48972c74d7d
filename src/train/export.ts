/** `webtron export`: a checkpoint of `webtron train` as an ONNX model (src/onnx/gpt.ts). */
import { writeFileAtomic } from '../files.js';
import { formatBytes } from '../gpu/memory.js';
import { GpuContext } from '../gpu/context.js';
import { gptParams } from '../nn/gpt-spec.js';
import { gptToOnnx } from '../onnx/gpt.js';
import { OnnxError, OPSET } from '../onnx/proto.js';
import { loadCheckpointModel } from './checkpoint-model.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

export const EXPORT_FLAGS: Record<string, FlagSpec> = {
  load: { kind: 'string', help: 'a checkpoint of webtron train: its --save folder (the newest) or one iter_NNNNNNN folder' },
  output: { kind: 'string', help: 'the .onnx file to write' },
  dtype: { kind: 'string', default: 'float32', help: 'float32, or float16 for half-precision initializers and compute' },
};

/** protobuf's limit on one message: past it a model needs ONNX's external data, which webtron does not write yet. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;

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
  const bytes = specs.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0) * (dtype === 'float16' ? 2 : 4);
  if (bytes > PROTOBUF_LIMIT) {
    throw new OnnxError(
      `${formatBytes(bytes)} of weights exceed protobuf's 2 GiB; ONNX external data is not written yet (export with --dtype float16, or a smaller model)`,
    );
  }
  const params = new Map<string, Float32Array>();
  for (const p of specs) params.set(p.name, await model.params.read(p.name));
  const onnxBytes = gptToOnnx(model.config, params, {
    float16: dtype === 'float16',
    metadata: {
      'webtron.config': JSON.stringify(model.config),
      'webtron.tokenizer': JSON.stringify(model.tokenizer),
      'webtron.checkpoint': JSON.stringify({ dir: model.dir, iteration: model.iteration, dtype: model.dtype }),
    },
  });
  writeFileAtomic(output, onnxBytes);
  model.params.destroy();
  const count = specs.reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
  console.log(
    `wrote ${output}: ${count.toLocaleString('en-US')} params (${model.dtype} checkpoint at iteration ${model.iteration}) as ${dtype}, opset ${OPSET}, ${formatBytes(onnxBytes.byteLength)}; input input_ids int64 [batch, sequence], output logits [batch, sequence, ${model.config.vocabSize}]`,
  );
}
