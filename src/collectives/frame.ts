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

/**
 * Incremental frame parser: feed it socket chunks; it calls `onHeader` once per header (which
 * returns where the body goes) and `onBody` with each piece of the body as it arrives, so large
 * bodies are consumed in place without being reassembled.
 */
export class FrameParser {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  private bodyLeft = 0;
  private bodyOffset = 0;
  private current: FrameHeader | null = null;

  constructor(
    private readonly onHeader: (header: FrameHeader) => void,
    private readonly onBody: (header: FrameHeader, piece: Uint8Array, offset: number) => void,
    private readonly onFrameEnd: (header: FrameHeader) => void,
  ) {}

  /** Throws on a malformed header; the caller drops the connection. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.byteLength) {
      if (this.current === null) {
        const take = Math.min(HEADER_BYTES - this.headerFill, chunk.byteLength - at);
        this.header.set(chunk.subarray(at, at + take), this.headerFill);
        this.headerFill += take;
        at += take;
        if (this.headerFill < HEADER_BYTES) return;
        this.headerFill = 0;
        const header = decodeHeader(this.header);
        this.current = header;
        this.bodyLeft = header.length;
        this.bodyOffset = 0;
        this.onHeader(header);
        if (this.bodyLeft === 0) this.finish();
        continue;
      }
      const take = Math.min(this.bodyLeft, chunk.byteLength - at);
      this.onBody(this.current, chunk.subarray(at, at + take), this.bodyOffset);
      this.bodyOffset += take;
      this.bodyLeft -= take;
      at += take;
      if (this.bodyLeft === 0) this.finish();
    }
  }

  private finish(): void {
    const header = this.current!;
    this.current = null;
    this.onFrameEnd(header);
  }
}
