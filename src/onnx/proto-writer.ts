import { OnnxError } from './initializers.js';
/**
 * A minimal protobuf writer for ONNX models: varints, length-delimited fields and nested messages,
 * enough to build ModelProto/GraphProto/NodeProto by field number (onnx.proto) without a runtime
 * dependency. `matmulModel` builds the one-node MatMul model the benchmarks hand to onnxruntime.
 */

/** A message under construction: fields appended in order. */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.byteLength;
    return this;
  }

  private varint(value: number): this {
    const out: number[] = [];
    let v = value;
    while (v >= 0x80) {
      out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    out.push(v);
    return this.push(Uint8Array.from(out));
  }

  /** Varint field (wire type 0). */
  int(field: number, value: number): this {
    if (!Number.isInteger(value) || value < 0) throw new OnnxError(`protobuf int field ${field}: ${value} is not a non-negative integer`);
    return this.varint(field * 8).varint(value);
  }

  /** Length-delimited field (wire type 2): bytes, a string, or a nested message. */
  bytes(field: number, value: Uint8Array | string | ProtoWriter): this {
    const data = typeof value === 'string' ? new TextEncoder().encode(value) : value instanceof ProtoWriter ? value.finish() : value;
    return this.varint(field * 8 + 2)
      .varint(data.byteLength)
      .push(data);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}

const FLOAT = 1; // TensorProto.DataType.FLOAT

function tensorValue(name: string, dims: number[]): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of dims) shape.bytes(1, new ProtoWriter().int(1, d));
  const tensorType = new ProtoWriter().int(1, FLOAT).bytes(2, shape);
  return new ProtoWriter().bytes(1, name).bytes(2, new ProtoWriter().bytes(1, tensorType));
}

/**
 * An ONNX model (opset 13) computing c = a @ b for a [m, k] and b [k, n], fp32; with `chain` > 1
 * (square b only) it multiplies by b that many times: c = ((a @ b) @ b) ..., so that timing two
 * chain lengths separates the per-MatMul time from the per-run input and output transfers.
 */
export function matmulModel(m: number, k: number, n: number, chain = 1): Uint8Array {
  if (chain > 1 && k !== n) throw new OnnxError(`matmulModel: a chain of ${chain} needs a square b, got ${k}x${n}`);
  const graph = new ProtoWriter();
  for (let i = 0; i < chain; i++) {
    const input = i === 0 ? 'a' : `c${i}`;
    const output = i === chain - 1 ? 'c' : `c${i + 1}`;
    graph.bytes(1, new ProtoWriter().bytes(1, input).bytes(1, 'b').bytes(2, output).bytes(3, `matmul${i}`).bytes(4, 'MatMul'));
  }
  graph
    .bytes(2, 'matmul')
    .bytes(11, tensorValue('a', [m, k]))
    .bytes(11, tensorValue('b', [k, n]))
    .bytes(12, tensorValue('c', [m, n]));
  return new ProtoWriter()
    .int(1, 8) // ir_version
    .bytes(2, 'webtron')
    .bytes(7, graph)
    .bytes(8, new ProtoWriter().bytes(1, '').int(2, 13))
    .finish();
}
