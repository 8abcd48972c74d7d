/**
 * The safetensors file format (8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then the data), float32 tensors only, pure I/O.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export interface Tensor {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

export function encodeSafetensors(tensors: Tensor[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.byteLength + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.byteLength), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.byteLength;
  for (const t of tensors) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    at += t.data.byteLength;
  }
  return out;
}

/** Parse a safetensors file's bytes; every problem names the file and what is wrong. */
export function decodeSafetensors(bytes: Buffer, file: string): Map<string, Tensor> {
  if (bytes.byteLength < 8) throw new CheckpointError(`${file}: not a safetensors file (${bytes.byteLength} B)`);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  if (8 + headerLength > bytes.byteLength) throw new CheckpointError(`${file}: header length ${headerLength} runs past the end of the file`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as typeof header;
  } catch {
    throw new CheckpointError(`${file}: header is not JSON`);
  }
  const base = 8 + headerLength;
  const tensors = new Map<string, Tensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (entry.dtype !== 'F32') throw new CheckpointError(`${file}: tensor '${name}' has dtype ${entry.dtype}; webtron reads F32`);
    const [begin, end] = entry.data_offsets;
    const numel = entry.shape.reduce((a, b) => a * b, 1);
    if (end - begin !== numel * 4 || base + end > bytes.byteLength) {
      throw new CheckpointError(`${file}: tensor '${name}' data_offsets [${begin}, ${end}] do not fit shape [${entry.shape.join(', ')}] or the file`);
    }
    const data = new Float32Array(numel);
    new Uint8Array(data.buffer).set(bytes.subarray(base + begin, base + end));
    tensors.set(name, { name, shape: entry.shape, data });
  }
  return tensors;
}

export function writeSafetensors(path: string, tensors: Tensor[], metadata?: Record<string, string>): Buffer {
  const bytes = encodeSafetensors(tensors, metadata);
  writeFileSync(path, bytes);
  return bytes;
}

export function readSafetensors(path: string): Map<string, Tensor> {
  return decodeSafetensors(readFileSync(path), path);
}
