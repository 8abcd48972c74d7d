/**
 * Megatron's indexed dataset (`PREFIX.bin` / `PREFIX.idx`, the "MMIDIDX" format that its
 * tools/preprocess_data.py writes). The index holds, in order:
 *
 *   magic "MMIDIDX\0\0" (9 bytes) · version u64 = 1 · token dtype code u8 · sequence count u64 ·
 *   document count u64 (one more than the documents: it starts with 0) · sequence lengths i32[] ·
 *   sequence byte offsets into .bin i64[] · document boundaries (sequence indices) i64[]
 *
 * all little-endian; .bin holds the tokens of every sequence back to back. A document is one or
 * more consecutive sequences. Reading checks every count, offset and boundary against the files, and
 * reads tokens from .bin a sequence at a time (never the whole file); writing goes to temporary
 * names, fsynced, renamed .bin first and .idx last, so a partial output never replaces a complete one.
 */
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, readFileSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { WebtronError } from '../errors.js';
import { fsyncDir } from '../files.js';

export class DataError extends WebtronError {
  override name = 'DataError';
  override readonly code: string = 'ERR_DATA';
}

export const INDEX_MAGIC = Uint8Array.from([0x4d, 0x4d, 0x49, 0x44, 0x49, 0x44, 0x58, 0x00, 0x00]); // "MMIDIDX\0\0"
const HEADER_BYTES = 9 + 8 + 1 + 8 + 8;

/** Megatron's dtype codes of token types webtron reads and writes. */
const TOKEN_DTYPES = {
  1: { name: 'uint8', bytes: 1, read: (v: DataView, at: number) => v.getUint8(at) },
  3: { name: 'int16', bytes: 2, read: (v: DataView, at: number) => v.getInt16(at, true) },
  4: { name: 'int32', bytes: 4, read: (v: DataView, at: number) => v.getInt32(at, true) },
  5: { name: 'int64', bytes: 8, read: (v: DataView, at: number) => Number(v.getBigInt64(at, true)) },
  8: { name: 'uint16', bytes: 2, read: (v: DataView, at: number) => v.getUint16(at, true) },
} as const;
type DtypeCode = keyof typeof TOKEN_DTYPES;

/** Token arrays end to end. */
export function concatTokens(parts: readonly Uint32Array[]): Uint32Array {
  const out = new Uint32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** What Megatron picks: uint16 when every token id fits, else int32. */
export function tokenDtypeFor(vocabSize: number): 'uint16' | 'int32' {
  return vocabSize <= 65536 ? 'uint16' : 'int32';
}

export class IndexedDataset {
  private constructor(
    readonly prefix: string,
    private readonly fd: number,
    readonly dtype: string,
    private readonly itemBytes: number,
    /** One token from .bin bytes, as this file's dtype stores it. */
    private readonly readToken: (view: DataView, at: number) => number,
    /** Tokens per sequence. */
    readonly sizes: Int32Array,
    /** Byte offset of each sequence in .bin. */
    readonly pointers: BigInt64Array,
    /** Document d is sequences documentIndex[d] .. documentIndex[d + 1] - 1. */
    readonly documentIndex: BigInt64Array,
  ) {}

  /** Open PREFIX.idx and PREFIX.bin; every inconsistency is a DataError naming the file and what is wrong. */
  static open(prefix: string): IndexedDataset {
    const idxPath = `${prefix}.idx`;
    const binPath = `${prefix}.bin`;
    for (const p of [idxPath, binPath]) {
      if (!existsSync(p))
        throw new DataError(`${p}: no such file; give the prefix of a Megatron indexed dataset (PREFIX.bin and PREFIX.idx)`);
    }
    const idx = readFileSync(idxPath);
    const fail = (what: string): never => {
      throw new DataError(
        `${idxPath}: ${what}; not a Megatron indexed dataset index, or a damaged one (make it again with webtron preprocess-data)`,
      );
    };
    if (idx.byteLength < HEADER_BYTES) fail(`${idx.byteLength} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    if (!INDEX_MAGIC.every((b, i) => idx[i] === b)) fail('bad magic (expected "MMIDIDX")');
    const view = new DataView(idx.buffer, idx.byteOffset, idx.byteLength);
    const version = view.getBigUint64(9, true);
    if (version !== 1n) fail(`version ${version} (webtron reads version 1)`);
    const code = view.getUint8(17) as DtypeCode;
    const dtype = TOKEN_DTYPES[code];
    if (!dtype) fail(`token dtype code ${code} is not an integer type (1 uint8, 3 int16, 4 int32, 5 int64, 8 uint16)`);
    const sequences = Number(view.getBigUint64(18, true));
    const documents = Number(view.getBigUint64(26, true));
    const need = HEADER_BYTES + 4 * sequences + 8 * sequences + 8 * documents;
    if (!Number.isSafeInteger(need) || idx.byteLength < need)
      fail(`truncated: ${sequences} sequences and ${documents} document boundaries need ${need} bytes, the file has ${idx.byteLength}`);
    const copy = (offset: number, bytes: number) => idx.buffer.slice(idx.byteOffset + offset, idx.byteOffset + offset + bytes);
    const sizes = new Int32Array(copy(HEADER_BYTES, 4 * sequences));
    const pointers = new BigInt64Array(copy(HEADER_BYTES + 4 * sequences, 8 * sequences));
    const documentIndex = new BigInt64Array(copy(HEADER_BYTES + 12 * sequences, 8 * documents));
    const fd = openSync(binPath, 'r');
    const binBytes = BigInt(fstatSync(fd).size);
    const item = BigInt(dtype.bytes);
    try {
      for (let i = 0; i < sequences; i++) {
        if (sizes[i]! < 0) fail(`sequence ${i} has length ${sizes[i]}`);
        const end = pointers[i]! + BigInt(sizes[i]!) * item;
        if (pointers[i]! < 0n || end > binBytes)
          fail(`sequence ${i} (bytes ${pointers[i]}..${end}) runs past the end of ${binPath} (${binBytes} bytes)`);
      }
      if (documents < 1 || documentIndex[0] !== 0n) fail('the document boundaries do not start at sequence 0');
      for (let d = 1; d < documents; d++) {
        if (documentIndex[d]! < documentIndex[d - 1]! || documentIndex[d]! > BigInt(sequences))
          fail(`document boundary ${d} (${documentIndex[d]}) is out of order or past the ${sequences} sequences`);
      }
      if (documentIndex[documents - 1] !== BigInt(sequences))
        fail(`the last document boundary is ${documentIndex[documents - 1]}, not the sequence count ${sequences}`);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    return new IndexedDataset(prefix, fd, dtype.name, dtype.bytes, dtype.read, sizes, pointers, documentIndex);
  }

  get sequenceCount(): number {
    return this.sizes.length;
  }

  get documentCount(): number {
    return this.documentIndex.length - 1;
  }

  /** Tokens of every sequence together. */
  get tokenCount(): number {
    return this.sizes.reduce((a, b) => a + b, 0);
  }

  /** The tokens of sequence `i`, read from .bin. */
  sequence(i: number): Uint32Array {
    const out = new Uint32Array(this.sizes[i]!);
    this.readTokens(i, 0, out.length, out, 0);
    return out;
  }

  /** Tokens `from`..`from + n - 1` of sequence `i` into `out` at `at`: one read of just those bytes. */
  private readTokens(i: number, from: number, n: number, out: Uint32Array, at: number): void {
    const bytes = Buffer.allocUnsafe(n * this.itemBytes);
    const start = Number(this.pointers[i]!) + from * this.itemBytes;
    for (let done = 0; done < bytes.byteLength; ) {
      const got = readSync(this.fd, bytes, done, bytes.byteLength - done, start + done);
      if (got === 0) throw new DataError(`${this.prefix}.bin: ends inside sequence ${i}; the dataset changed while open`);
      done += got;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let k = 0; k < n; k++) {
      const v = this.readToken(view, k * this.itemBytes);
      if (v < 0) throw new DataError(`${this.prefix}.bin: sequence ${i} holds the negative token id ${v}`);
      out[at + k] = v;
    }
  }

  /** Tokens per document. */
  documentLengths(): Float64Array {
    const out = new Float64Array(this.documentCount);
    for (let d = 0; d < out.length; d++) {
      let n = 0;
      for (let s = Number(this.documentIndex[d]!); s < Number(this.documentIndex[d + 1]!); s++) n += this.sizes[s]!;
      out[d] = n;
    }
    return out;
  }

  /** Tokens `offset`..`offset + n - 1` of document `d` into `out` at `at`, reading only those bytes; returns how many there were (fewer at the document's end). */
  readDocument(d: number, offset: number, n: number, out: Uint32Array, at: number): number {
    let done = 0;
    for (let s = Number(this.documentIndex[d]!); s < Number(this.documentIndex[d + 1]!) && done < n; s++) {
      const size = this.sizes[s]!;
      if (offset >= size) {
        offset -= size;
        continue;
      }
      const take = Math.min(size - offset, n - done);
      this.readTokens(s, offset, take, out, at + done);
      done += take;
      offset = 0;
    }
    return done;
  }

  /** The tokens of document `d`: its sequences, in order. */
  document(d: number): Uint32Array {
    const [first, end] = [Number(this.documentIndex[d]!), Number(this.documentIndex[d + 1]!)];
    return concatTokens(Array.from({ length: end - first }, (_, k) => this.sequence(first + k)));
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** Writes PREFIX.bin and PREFIX.idx: documents one at a time, then `finish()`. */
export class IndexedDatasetBuilder {
  private readonly binTmp: string;
  private readonly fd: number;
  private readonly sizes: number[] = [];
  private readonly documentIndex: number[] = [0];
  private bytes = 0;
  private readonly code: 4 | 8;
  /** Tokens not yet written to .bin (written in blocks of 4 MiB, not a write per sequence). */
  private pending = new Uint8Array(4 << 20);
  private used = 0;

  constructor(
    readonly prefix: string,
    readonly dtype: 'uint16' | 'int32',
  ) {
    this.code = dtype === 'uint16' ? 8 : 4;
    this.binTmp = `${prefix}.bin.tmp-${process.pid}`;
    try {
      this.fd = openSync(this.binTmp, 'w');
    } catch (error) {
      throw new DataError(
        `${prefix}: cannot write ${this.binTmp}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give an output prefix in a folder you can write`,
      );
    }
  }

  /** One document of one or more sequences (Megatron's sentences). */
  addDocument(sequences: readonly (readonly number[] | Uint32Array)[]): void {
    const item = this.dtype === 'uint16' ? 2 : 4;
    const max = this.dtype === 'uint16' ? 0xffff : 0x7fffffff;
    for (const tokens of sequences) {
      for (let k = 0; k < tokens.length; k++) {
        const t = tokens[k]!;
        if (!(t >= 0 && t <= max && Number.isInteger(t))) throw new DataError(`${this.prefix}: token id ${t} does not fit ${this.dtype}`);
      }
      if (this.pending.byteLength - this.used < tokens.length * item) this.flush(tokens.length * item);
      // Little-endian typed-array views (every platform Node runs on): one converting copy per sequence.
      const view =
        item === 2
          ? new Uint16Array(this.pending.buffer, this.used, tokens.length)
          : new Int32Array(this.pending.buffer, this.used, tokens.length);
      view.set(tokens);
      this.used += tokens.length * item;
      this.sizes.push(tokens.length);
      this.bytes += tokens.length * item;
    }
    this.documentIndex.push(this.sizes.length);
  }

  /** Write the buffered tokens to .bin; make room for at least `need` bytes. */
  private flush(need = 0): void {
    for (let at = 0; at < this.used; ) at += writeSync(this.fd, this.pending, at, this.used - at);
    this.used = 0;
    if (need > this.pending.byteLength) this.pending = new Uint8Array(need);
  }

  /** Write the index and put both files in place (.bin first, .idx last). */
  finish(): void {
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    const n = this.sizes.length;
    const d = this.documentIndex.length;
    const idx = Buffer.alloc(HEADER_BYTES + 12 * n + 8 * d);
    idx.set(INDEX_MAGIC, 0);
    idx.writeBigUInt64LE(1n, 9);
    idx.writeUInt8(this.code, 17);
    idx.writeBigUInt64LE(BigInt(n), 18);
    idx.writeBigUInt64LE(BigInt(d), 26);
    const item = this.dtype === 'uint16' ? 2 : 4;
    let pointer = 0;
    for (let i = 0; i < n; i++) {
      idx.writeInt32LE(this.sizes[i]!, HEADER_BYTES + 4 * i);
      idx.writeBigInt64LE(BigInt(pointer), HEADER_BYTES + 4 * n + 8 * i);
      pointer += this.sizes[i]! * item;
    }
    for (let k = 0; k < d; k++) idx.writeBigInt64LE(BigInt(this.documentIndex[k]!), HEADER_BYTES + 12 * n + 8 * k);
    const idxTmp = `${this.prefix}.idx.tmp-${process.pid}`;
    try {
      const fd = openSync(idxTmp, 'w');
      try {
        for (let at = 0; at < idx.byteLength; ) at += writeSync(fd, idx, at, idx.byteLength - at);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(this.binTmp, `${this.prefix}.bin`);
      renameSync(idxTmp, `${this.prefix}.idx`);
    } catch (error) {
      rmSync(idxTmp, { force: true });
      rmSync(this.binTmp, { force: true });
      throw error;
    }
    fsyncDir(dirname(this.prefix));
  }

  /** Give up: remove what was written; nothing replaces an existing dataset. */
  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    rmSync(this.binTmp, { force: true });
  }

  get tokensWritten(): number {
    return this.bytes / (this.dtype === 'uint16' ? 2 : 4);
  }
}
