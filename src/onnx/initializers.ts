/**
 * The initializers (names and shapes) of an ONNX model, read straight from its protobuf: ModelProto
 * field 7 is the graph, GraphProto field 5 its initializers, TensorProto field 1 the dims and field 8
 * the name. Enough for the memory calculator's parameter count; no ONNX runtime needed.
 */
import { WebtronError } from '../errors.js';
import { existsSync, readFileSync } from 'node:fs';

export class OnnxError extends WebtronError {
  override name = 'OnnxError';
  override readonly code: string = 'ERR_ONNX';
}

interface Field {
  number: number;
  wire: number;
  /** Varint value (wire 0). */
  value?: number;
  /** Bytes (wire 2). */
  bytes?: Uint8Array;
}

function* fields(buf: Uint8Array, file: string): Generator<Field> {
  let at = 0;
  const varint = (): number => {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (at >= buf.byteLength) throw new OnnxError(`${file}: truncated protobuf (varint runs past the end)`);
      const byte = buf[at++]!;
      result += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return result;
      scale *= 128;
    }
    throw new OnnxError(`${file}: malformed protobuf (varint longer than 10 bytes)`);
  };
  while (at < buf.byteLength) {
    const key = varint();
    const number = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) yield { number, wire, value: varint() };
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const length = varint();
      if (at + length > buf.byteLength) throw new OnnxError(`${file}: truncated protobuf (field ${number} runs past the end)`);
      yield { number, wire, bytes: buf.subarray(at, at + length) };
      at += length;
    } else throw new OnnxError(`${file}: not an ONNX model (protobuf wire type ${wire} at byte ${at})`);
    if (at > buf.byteLength) throw new OnnxError(`${file}: truncated protobuf`);
  }
}

/** Names and shapes of every initializer of the model at `path`. */
export function readOnnxInitializers(path: string): { name: string; shape: number[] }[] {
  if (!existsSync(path)) throw new OnnxError(`${path}: no such file; give the path of an .onnx model`);
  const bytes = readFileSync(path);
  const graph = [...fields(bytes, path)].find((f) => f.number === 7 && f.bytes)?.bytes;
  if (!graph) throw new OnnxError(`${path}: no graph (ModelProto field 7): not an ONNX model?`);
  const out: { name: string; shape: number[] }[] = [];
  for (const f of fields(graph, path)) {
    if (f.number !== 5 || !f.bytes) continue;
    let name = `initializer_${out.length}`;
    const shape: number[] = [];
    for (const t of fields(f.bytes, path)) {
      if (t.number === 8 && t.bytes) name = Buffer.from(t.bytes).toString('utf8');
      if (t.number === 1 && t.value !== undefined) shape.push(t.value);
      if (t.number === 1 && t.bytes) for (const dim of fields(packedAsVarints(t.bytes), path)) shape.push(dim.value!);
    }
    out.push({ name, shape: shape.length > 0 ? shape : [1] });
  }
  if (out.length === 0) throw new OnnxError(`${path}: the graph has no initializers, so no parameters to count`);
  return out;
}

/** A packed repeated varint field, re-encoded as field-1 varints so `fields` can walk it. */
function packedAsVarints(packed: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < packed.byteLength; ) {
    out.push(0x08); // field 1, wire 0
    let byte: number;
    do {
      byte = packed[i++]!;
      out.push(byte);
    } while (byte & 0x80 && i < packed.byteLength);
  }
  return Uint8Array.from(out);
}
