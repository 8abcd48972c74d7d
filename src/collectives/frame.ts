/**
 * The wire format of webtron's TCP collectives, pure. Every frame starts with a 24-byte header so
 * that data of a mismatched or out-of-order collective is an error, never silently mixed in:
 *
 *   0  u32 magic 'WTRN'     8  u32 collective sequence number (per group, from 1)
 *   4  u8  version          12 u32 chunk index within the collective
 *   5  u8  op code          16 u32 body length in bytes
 *   6  u8  dtype code       20 u32 total bytes of the collective (both sides must agree)
 *   7  u8  reserved (0)
 *
 * All integers little-endian. The body follows the header directly.
 */

export const FRAME_MAGIC = 0x4e525457; // 'WTRN' read as little-endian u32
export const FRAME_VERSION = 1;
export const HEADER_BYTES = 24;

export const OPS = ['reduceScatter', 'allGather', 'allReduce', 'broadcast', 'barrier'] as const;
export type OpName = (typeof OPS)[number];

export const DTYPES = ['float32', 'float16', 'bfloat16', 'bytes'] as const;
export type WireDtype = (typeof DTYPES)[number];

export interface FrameHeader {
  op: OpName;
  dtype: WireDtype;
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
  out.writeUInt8(0, 7);
  out.writeUInt32LE(h.seq >>> 0, 8);
  out.writeUInt32LE(h.chunk >>> 0, 12);
  out.writeUInt32LE(h.length >>> 0, 16);
  out.writeUInt32LE(h.totalBytes % 2 ** 32, 20);
  return out;
}

/** Decode a header, or throw a one-line reason (bad magic, version, op or dtype). */
export function decodeHeader(buf: Uint8Array): FrameHeader {
  if (buf.byteLength < HEADER_BYTES) throw new Error(`frame header needs ${HEADER_BYTES} bytes, got ${buf.byteLength}`);
  const view = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new Error(`bad frame magic 0x${magic.toString(16).padStart(8, '0')} (not a webtron peer?)`);
  const version = view.getUint8(4);
  if (version !== FRAME_VERSION) throw new Error(`frame version ${version}, this webtron speaks ${FRAME_VERSION}`);
  const op = OPS[view.getUint8(5)];
  const dtype = DTYPES[view.getUint8(6)];
  if (!op) throw new Error(`unknown op code ${view.getUint8(5)}`);
  if (!dtype) throw new Error(`unknown dtype code ${view.getUint8(6)}`);
  return {
    op,
    dtype,
    seq: view.getUint32(8, true),
    chunk: view.getUint32(12, true),
    length: view.getUint32(16, true),
    totalBytes: view.getUint32(20, true),
  };
}

/** Where a frame's body goes (the router's answer to a header). */
export interface BodySink {
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
 */
export class FrameReader {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private readonly scratch: Uint8Array;
  private headerFill = 0;
  private current: { header: FrameHeader; sink: BodySink; offset: number; left: number } | null = null;
  private lastTarget: Uint8Array | null = null;

  constructor(
    private readonly onHeader: (header: FrameHeader) => BodySink,
    scratchBytes = 1 << 16,
  ) {
    this.scratch = new Uint8Array(scratchBytes);
  }

  /** Where the next bytes should go; never longer than what the current part still needs. */
  target(): Uint8Array {
    const c = this.current;
    if (c === null) this.lastTarget = this.header.subarray(this.headerFill);
    else this.lastTarget = c.sink.target?.(c.offset, c.left) ?? this.scratch.subarray(0, Math.min(this.scratch.byteLength, c.left));
    return this.lastTarget;
  }

  /** `n` bytes landed in the last target. Throws on a malformed header (drop the connection). */
  advance(n: number): void {
    const target = this.lastTarget!;
    const c = this.current;
    if (c === null) {
      this.headerFill += n;
      if (this.headerFill < HEADER_BYTES) return;
      this.headerFill = 0;
      const header = decodeHeader(this.header);
      this.current = { header, sink: this.onHeader(header), offset: 0, left: header.length };
      if (header.length === 0) this.finish();
      return;
    }
    c.sink.piece(target.subarray(0, n), c.offset);
    c.offset += n;
    c.left -= n;
    if (c.left === 0) this.finish();
  }

  /** Feed bytes that did not arrive through `target()`. */
  push(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.byteLength) {
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
