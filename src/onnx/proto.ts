/**
 * ONNX models through onnx-proto (ONNX's own onnx.proto compiled by protobufjs): building graphs
 * node by node, encoding a ModelProto, and reading one back. No field is numbered by hand here.
 */
import { existsSync, readFileSync } from 'node:fs';
import onnxProto from 'onnx-proto';
import { floatToHalf, wordsToFloat32 } from '../collectives/reduce.js';
import { WebtronError } from '../errors.js';
import { hfName } from '../hf/gpt2.js';

export const { onnx } = onnxProto;
type Onnx = typeof onnxProto.onnx;
export type TensorProto = InstanceType<Onnx['TensorProto']>;
export type NodeProto = InstanceType<Onnx['NodeProto']>;
export type ValueInfoProto = InstanceType<Onnx['ValueInfoProto']>;
export type ModelProto = InstanceType<Onnx['ModelProto']>;

export class OnnxError extends WebtronError {
  override name = 'OnnxError';
  override readonly code: string = 'ERR_ONNX';
}

/** The opset webtron writes: 17 has LayerNormalization, and onnxruntime and onnx 1.12's checker read it. */
export const OPSET = 17;
/** ONNX IR version 8 (ONNX 1.10 to 1.12): what opset 17 needs. */
export const IR_VERSION = 8;

const { DataType } = onnx.TensorProto;
const { AttributeType } = onnx.AttributeProto;

/** An input or output: element type and dims, a string dim being a named (dynamic) axis. */
export function valueInfo(name: string, elemType: number, dims: readonly (number | string)[]): ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  });
}

/** Attribute values by name: numbers are ints when integral and `float` is not asked for. */
export type Attributes = Record<string, number | number[] | string | { float: number }>;

/** One node: `opType` reading `inputs`, writing `outputs`. */
export function node(opType: string, inputs: string[], outputs: string[], name: string, attributes: Attributes = {}): NodeProto {
  return onnx.NodeProto.create({
    opType,
    input: inputs,
    output: outputs,
    name,
    attribute: Object.entries(attributes).map(([attr, v]) => {
      if (typeof v === 'string') return { name: attr, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
      if (Array.isArray(v)) return { name: attr, type: AttributeType.INTS, ints: v };
      if (typeof v === 'object') return { name: attr, type: AttributeType.FLOAT, f: v.float };
      return { name: attr, type: AttributeType.INT, i: v };
    }),
  });
}

/** A float32 (or, with `float16`, IEEE half) tensor from float32 values, stored as raw little-endian bytes. */
export function floatTensor(name: string, dims: readonly number[], values: Float32Array, float16 = false): TensorProto {
  if (float16) {
    const half = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) half[i] = floatToHalf(values[i]!);
    return onnx.TensorProto.create({ name, dims: [...dims], dataType: DataType.FLOAT16, rawData: littleEndian(half) });
  }
  return onnx.TensorProto.create({ name, dims: [...dims], dataType: DataType.FLOAT, rawData: littleEndian(values) });
}

/** An int64 tensor (shapes, indices, axes). */
export function int64Tensor(name: string, dims: readonly number[], values: readonly number[]): TensorProto {
  return onnx.TensorProto.create({
    name,
    dims: [...dims],
    dataType: DataType.INT64,
    rawData: littleEndian(BigInt64Array.from(values, BigInt)),
  });
}

function littleEndian(a: Float32Array | Uint16Array | BigInt64Array): Uint8Array {
  // Typed arrays are in the platform's byte order; every platform Node runs on is little-endian.
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The encoded model: a graph, opset 17, and `metadata` as metadata_props. */
export function encodeModel(
  graph: {
    name: string;
    nodes: NodeProto[];
    inputs: ValueInfoProto[];
    outputs: ValueInfoProto[];
    initializers: TensorProto[];
  },
  metadata: Record<string, string> = {},
): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    producerName: 'webtron',
    opsetImport: [{ domain: '', version: OPSET }],
    graph: {
      name: graph.name,
      node: graph.nodes,
      input: graph.inputs,
      output: graph.outputs,
      initializer: graph.initializers,
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The model at `path`, decoded; an OnnxError names the file when it is not one. */
export function readOnnxModel(path: string): ModelProto {
  if (!existsSync(path)) throw new OnnxError(`${path}: no such file; give the path of an .onnx model`);
  try {
    return onnx.ModelProto.decode(readFileSync(path));
  } catch (error) {
    throw new OnnxError(`${path}: not an ONNX model (${(error as Error).message})`);
  }
}

/** Names and shapes of every initializer of the model at `path` (what `webtron memory --onnx` counts). */
export function readOnnxInitializers(path: string): { name: string; shape: number[] }[] {
  const model = readOnnxModel(path);
  if (!model.graph) throw new OnnxError(`${path}: the model has no graph: not an ONNX model?`);
  const out = (model.graph.initializer ?? []).map((t, i) => {
    const dims = (t.dims ?? []).map((d) => Number(d));
    return { name: t.name || `initializer_${i}`, shape: dims.length > 0 ? dims : [1] };
  });
  if (out.length === 0) throw new OnnxError(`${path}: the graph has no initializers, so no parameters to count`);
  return out;
}

/**
 * The float values of the initializers `specs` name, from the model at `path`, checked against the
 * specs' shapes: float32 or float16 raw data, or float_data. A name missing or a shape that differs
 * is one OnnxError listing every such param.
 */
export function readOnnxParams(path: string, specs: readonly { name: string; shape: readonly number[] }[]): Map<string, Float32Array> {
  const model = readOnnxModel(path);
  const byName = new Map((model.graph?.initializer ?? []).map((t) => [t.name ?? '', t]));
  const problems: string[] = [];
  const out = new Map<string, Float32Array>();
  for (const spec of specs) {
    // Hugging Face's GPT-2 names (webtron export), or webtron's own (models exported before it used them).
    const t = byName.get(hfName(spec.name)) ?? byName.get(hfName(spec.name, true)) ?? byName.get(spec.name);
    const dims = (t?.dims ?? []).map((d) => Number(d));
    if (!t) problems.push(`'${hfName(spec.name)}' [${spec.shape.join(', ')}] is missing`);
    else if (dims.join(',') !== spec.shape.join(','))
      problems.push(`'${t.name}' is [${dims.join(', ')}], the model needs [${spec.shape.join(', ')}]`);
    else out.set(spec.name, tensorValues(path, t));
  }
  if (problems.length > 0) throw new OnnxError(`${path}: its initializers do not fit this model: ${problems.join('; ')}`);
  return out;
}

function tensorValues(path: string, t: onnxProto.onnx.ITensorProto): Float32Array {
  const raw = t.rawData && t.rawData.byteLength > 0 ? Uint8Array.from(t.rawData) : null; // a copy: aligned
  if (t.dataType === DataType.FLOAT) return raw ? new Float32Array(raw.buffer) : Float32Array.from(t.floatData ?? []);
  if (t.dataType === DataType.FLOAT16 && raw) return wordsToFloat32(new Uint16Array(raw.buffer), 'float16');
  throw new OnnxError(`${path}: initializer '${t.name}' is of ONNX data type ${t.dataType}; webtron reads float32 and float16`);
}

/**
 * An ONNX model computing c = a @ b for a [m, k] and b [k, n], fp32; with `chain` > 1 (square b
 * only) it multiplies by b that many times: c = ((a @ b) @ b) ..., so that timing two chain lengths
 * separates the per-MatMul time from the per-run input and output transfers (the benchmarks).
 */
export function matmulModel(m: number, k: number, n: number, chain = 1): Uint8Array {
  if (chain > 1 && k !== n) throw new OnnxError(`matmulModel: a chain of ${chain} needs a square b, got ${k}x${n}`);
  const nodes = Array.from({ length: chain }, (_, i) =>
    node('MatMul', [i === 0 ? 'a' : `c${i}`, 'b'], [i === chain - 1 ? 'c' : `c${i + 1}`], `matmul${i}`),
  );
  return encodeModel({
    name: 'matmul',
    nodes,
    inputs: [valueInfo('a', DataType.FLOAT, [m, k]), valueInfo('b', DataType.FLOAT, [k, n])],
    outputs: [valueInfo('c', DataType.FLOAT, [m, n])],
    initializers: [],
  });
}
