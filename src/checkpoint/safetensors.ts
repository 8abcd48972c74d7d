/**
 * The safetensors format, as Hugging Face specifies it: an 8-byte little-endian header length N,
 * N bytes of JSON naming each tensor's dtype, shape and byte range [begin, end) in the data that
 * follows, optional string `__metadata__`. Headers are written for streaming (the tensors' bytes
 * follow in the order given), and read from a file with every field checked before anything is
 * allocated from it, so a crafted file costs no more than its own size.
 */
import { fstatSync, readSync } from 'node:fs';
import { CheckpointError } from './errors.js';

export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;
export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** The specification's bound on the header. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range within the data section (after the header). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  file: string;
  /** Bytes before the data: 8 + the JSON's length. */
  dataStart: number;
  entries: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

const numelOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The header bytes for `tensors` laid out back to back in this order, and their entries. */
export function encodeHeader(
  tensors: readonly TensorSpec[],
  metadata: Record<string, string> = {},
): { bytes: Buffer; entries: TensorEntry[] } {
  const json: Record<string, unknown> = Object.keys(metadata).length > 0 ? { __metadata__: metadata } : {};
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in json)
      throw new CheckpointError(`safetensors: tensor name '${t.name}' is reserved or repeated`);
    const bytes = numelOf(t.shape) * SAFETENSORS_DTYPES[t.dtype];
    entries.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + bytes });
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let text = JSON.stringify(json);
  text += ' '.repeat((8 - ((8 + Buffer.byteLength(text)) % 8)) % 8); // the data starts 8-byte aligned
  const body = Buffer.from(text, 'utf8');
  const out = Buffer.alloc(8 + body.byteLength);
  out.writeBigUInt64LE(BigInt(body.byteLength), 0);
  body.copy(out, 8);
  return { bytes: out, entries };
}

/** A whole file's bytes for small tensors held in memory (tests, fixtures). */
export function encodeSafetensors(tensors: (TensorSpec & { data: ArrayBufferView })[], metadata: Record<string, string> = {}): Buffer {
  const { bytes } = encodeHeader(tensors, metadata);
  return Buffer.concat([bytes, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
}

const isSafeCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Parse and check a header's JSON for a file whose data section holds `dataBytes` bytes. Every
 * problem is a CheckpointError naming the file and the tensor. Pure.
 */
export function parseHeaderJson(text: string, file: string, dataStart: number, dataBytes: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new CheckpointError(`${file}: the safetensors header is not JSON`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new CheckpointError(`${file}: the safetensors header is not a JSON object`);
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    const bad = (what: string) => new CheckpointError(`${file}: tensor '${name.slice(0, 200)}': ${what}`);
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new CheckpointError(`${file}: '__metadata__' must be an object of strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('entry is not an object');
    const { dtype, shape, data_offsets: offsets } = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPES))
      throw bad(`unknown dtype ${JSON.stringify(dtype)?.slice(0, 40)}; known: ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`);
    if (!Array.isArray(shape) || !shape.every(isSafeCount))
      throw bad(`shape ${JSON.stringify(shape)?.slice(0, 80)} is not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSafeCount))
      throw bad(`data_offsets ${JSON.stringify(offsets)?.slice(0, 80)} are not two non-negative integers`);
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataBytes) throw bad(`data_offsets [${begin}, ${end}] lie outside the file's ${dataBytes} data bytes`);
    // The product can overflow doubles for crafted shapes: compare without forming it past the range.
    const width = SAFETENSORS_DTYPES[dtype as SafetensorsDtype];
    let expected: number = width;
    for (const d of shape as number[]) {
      expected *= d;
      if (expected > end - begin) break;
    }
    if ((shape as number[]).includes(0)) expected = 0;
    if (expected !== end - begin)
      throw bad(
        `shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${expected > end - begin ? 'more than ' : ''}${expected} B but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    entries.set(name, { name, dtype: dtype as SafetensorsDtype, shape: shape as number[], begin, end });
  }
  return { file, dataStart, entries, metadata };
}

/** Read and check the header of an open file (no allocation beyond the header, which is bounded by the file). */
export function readHeader(fd: number, file: string): SafetensorsHeader {
  const size = fstatSync(fd).size;
  if (size < 8) throw new CheckpointError(`${file}: not a safetensors file (${size} B)`);
  const prefix = Buffer.alloc(8);
  readSync(fd, prefix, 0, 8, 0);
  const length = prefix.readBigUInt64LE(0);
  if (length > BigInt(Math.min(size - 8, MAX_HEADER_BYTES))) {
    throw new CheckpointError(
      `${file}: header length ${length} runs past the end of the file (${size} B) or the format's ${MAX_HEADER_BYTES} B limit`,
    );
  }
  const n = Number(length);
  const text = Buffer.alloc(n);
  for (let at = 0; at < n; ) at += readSync(fd, text, at, n - at, 8 + at);
  return parseHeaderJson(text.toString('utf8'), file, 8 + n, size - 8 - n);
}
