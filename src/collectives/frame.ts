import { TransportError } from './errors.js';
/**
 * The wire format of webtron's TCP collectives, pure. Every frame starts with a 24-byte header so
 * that data of a mismatched or out-of-order collective is an error, never silently mixed in:
 *
 *   0  u32 magic 'WTRN'     8  u32 collective sequence number (per group, from 1)
 *   4  u8  version          12 u32 chunk index within the collective
 *   5  u8  op code          16 u32 body length in bytes
 *   6  u8  dtype code       20 u32 total bytes of the collective (both sides must agree)
 *   7  u8  reduce op code (none, sum, avg, max)
 *
 * All integers little-endian. The body follows the header directly. A receiver checks every
 * header against what it expects (op, dtype, total, reduce op, and the body length against the
 * place the body goes), so a peer that disagrees is an error, never bytes reduced out of range.
 */

export const FRAME_MAGIC = 0x4e525457; // 'WTRN' read as little-endian u32
export const FRAME_VERSION = 2;
export const HEADER_BYTES = 24;

export const OPS = ['reduceScatter', 'allGather', 'allReduce', 'broadcast', 'barrier'] as const;
export type OpName = (typeof OPS)[number];

export const DTYPES = ['float32', 'float16', 'bfloat16', 'bytes'] as const;
export type WireDtype = (typeof DTYPES)[number];

export const REDUCE_OPS = ['none', 'sum', 'avg', 'max'] as const;
export type WireReduceOp = (typeof REDUCE_OPS)[number];

export interface FrameHeader {
  op: OpName;
  dtype: WireDtype;
  /** The reduction the sender applies ('none' for copies and barriers). */
  reduce: WireReduceOp;
  seq: number;
  chunk: number;
  length: number;
  totalBytes: number;
}

export function encodeHeader(h: FrameHeader, out: Buffer = Buffer.allocUnsafe(HEADER_BYTES)): Buffer {
  out.writeUInt32LE(FRAME_MAGIC, 0);
  out.writeUInt8(FRAME_VERSION, 4);
  out.writeUInt8(OPS.indexOf(h.op), 5);
  out.writeUInt8(DTYPES.indexOf(h.dtype), 6);
  out.writeUInt8(REDUCE_OPS.indexOf(h.reduce), 7);
  out.writeUInt32LE(h.seq >>> 0, 8);
  out.writeUInt32LE(h.chunk >>> 0, 12);
  out.writeUInt32LE(h.length >>> 0, 16);
  out.writeUInt32LE(h.totalBytes % 2 ** 32, 20);
  return out;
}

/** Decode a header, or throw a one-line reason (bad magic, version, op or dtype). */
export function decodeHeader(buf: Uint8Array): FrameHeader {
  if (buf.byteLength < HEADER_BYTES) throw new TransportError(`frame header needs ${HEADER_BYTES} bytes, got ${buf.byteLength}`);
  const view = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new TransportError(`bad frame magic 0x${magic.toString(16).padStart(8, '0')} (not a webtron peer?)`);
  const version = view.getUint8(4);
  if (version !== FRAME_VERSION) throw new TransportError(`frame version ${version}, this webtron speaks ${FRAME_VERSION}`);
  const op = OPS[view.getUint8(5)];
  const dtype = DTYPES[view.getUint8(6)];
  const reduce = REDUCE_OPS[view.getUint8(7)];
  if (!op) throw new TransportError(`unknown op code ${view.getUint8(5)}`);
  if (!dtype) throw new TransportError(`unknown dtype code ${view.getUint8(6)}`);
  if (!reduce) throw new TransportError(`unknown reduce op code ${view.getUint8(7)}`);
  return {
    op,
    dtype,
    reduce,
    seq: view.getUint32(8, true),
    chunk: view.getUint32(12, true),
    length: view.getUint32(16, true),
    totalBytes: view.getUint32(20, true),
  };
}

/** Where a frame's body goes (the router's answer to a header). */
export interface BodySink {
  /** The body length this place takes; a frame of any other length is an error. */
  readonly bytes: number;
  /**
   * Optional: where the next at most `max` body bytes, starting at body `offset`, should be read to,
   * so that the socket writes them straight into place. Without it the reader uses its own scratch.
   */
  target?(offset: number, max: number): Uint8Array;
  /** `bytes` of the body arrived at `offset` (possibly already in the place `target` gave). */
  piece(bytes: Uint8Array, offset: number): void;
  end(): void;
}

/**
 * Incremental frame reader, pull style: `target()` says where the next bytes should land (the rest
 * of a header, or a body region the sink chose), `advance(n)` reports that n bytes landed there. A
 * read never crosses a header/body boundary, so bodies can be read in place. `push(bytes)` feeds
 * bytes that arrived elsewhere (e.g. after the handshake).
 *
 * The router may answer a header with `null`: the frame belongs to an op this rank has not started.
 * The reader then holds it (`held`), and the connection should stop reading (TCP then holds the
 * sender back) until `retry()` finds a sink for it. Bytes that still arrive while held are kept in
 * order and fed in after the retry.
 */
export class FrameReader {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private readonly scratch: Uint8Array;
  private headerFill = 0;
  private current: { header: FrameHeader; sink: BodySink; offset: number; left: number } | null = null;
  private lastTarget: Uint8Array | null = null;
  private heldHeader: FrameHeader | null = null;
  private heldBytes: Uint8Array[] = [];
  private epochs = 0;

  constructor(
    private readonly onHeader: (header: FrameHeader) => BodySink | null,
    scratchBytes = 1 << 16,
  ) {
    this.scratch = new Uint8Array(scratchBytes);
  }

  /** A frame waits for its op (see the class comment). */
  get held(): boolean {
    return this.heldHeader !== null;
  }

  /**
   * Changes whenever `push` or `retry` moved the reader on by itself: a target handed out before
   * is stale then, and bytes that landed in it must be fed with `push` (copied), not `advance`.
   */
  get epoch(): number {
    return this.epochs;
  }

  /** Where the next bytes should go; never longer than what the current part still needs. */
  target(): Uint8Array {
    const c = this.current;
    if (this.heldHeader) this.lastTarget = this.scratch;
    else if (c === null) this.lastTarget = this.header.subarray(this.headerFill);
    else {
      const t = c.sink.target?.(c.offset, c.left) ?? this.scratch.subarray(0, Math.min(this.scratch.byteLength, c.left));
      if (t.byteLength === 0 || t.byteLength > c.left)
        throw new TransportError(`the receiving place of a ${c.header.op} frame offered ${t.byteLength} B for ${c.left} B still due`);
      this.lastTarget = t;
    }
    return this.lastTarget;
  }

  /** `n` bytes landed in the last target. Throws on a malformed or unexpected frame (drop the connection). */
  advance(n: number): void {
    const target = this.lastTarget!;
    if (this.heldHeader) {
      this.heldBytes.push(target.slice(0, n));
      return;
    }
    const c = this.current;
    if (c === null) {
      this.headerFill += n;
      if (this.headerFill < HEADER_BYTES) return;
      this.headerFill = 0;
      this.begin(decodeHeader(this.header));
      return;
    }
    c.sink.piece(target.subarray(0, n), c.offset);
    c.offset += n;
    c.left -= n;
    if (c.left === 0) this.finish();
  }

  /** Try the held frame again; true when it found its place (the caller resumes reading). */
  retry(): boolean {
    const header = this.heldHeader;
    if (!header) return true;
    this.epochs += 1;
    this.heldHeader = null;
    this.begin(header);
    if (this.heldHeader) return false;
    const bytes = this.heldBytes;
    this.heldBytes = [];
    for (const b of bytes) this.push(b);
    return !this.held;
  }

  private begin(header: FrameHeader): void {
    const sink = this.onHeader(header);
    if (sink === null) {
      this.heldHeader = header;
      return;
    }
    if (sink.bytes !== header.length) {
      throw new TransportError(
        `${header.op} frame #${header.seq}/${header.chunk} carries ${header.length} B where this rank expects ${sink.bytes} B`,
      );
    }
    this.current = { header, sink, offset: 0, left: header.length };
    if (header.length === 0) this.finish();
  }

  /** Feed bytes that did not arrive through `target()`. */
  push(bytes: Uint8Array): void {
    this.epochs += 1;
    let at = 0;
    while (at < bytes.byteLength) {
      if (this.heldHeader) {
        this.heldBytes.push(bytes.slice(at));
        return;
      }
      const t = this.target();
      const n = Math.min(t.byteLength, bytes.byteLength - at);
      t.set(bytes.subarray(at, at + n));
      at += n;
      this.advance(n);
    }
  }

  private finish(): void {
    const sink = this.current!.sink;
    this.current = null;
    sink.end();
  }
}
