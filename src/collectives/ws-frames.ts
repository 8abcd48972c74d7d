/**
 * The client side of RFC 6455 that a receive link needs to read a WebSocket like a TCP socket:
 * the upgrade request and the check of its answer, the header of each frame the server sends, and
 * masked frames for what the client writes (the handshake's few bytes, a pong). Pure. The server
 * side stays the `ws` package's. Reading the frames here instead of through `ws` lets each
 * payload land straight in the place the frame reader names, as TCP's bytes do: through `ws`,
 * every message was assembled in a buffer of its own and copied again, and the WebSocket link ran
 * at 0.38–0.46× the TCP ring (npm run bench -- collectives --websocket, 64 MiB, world 2).
 */
import { createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The HTTP request that asks `host` to upgrade to a WebSocket, and the accept value its answer must carry. */
export function upgradeRequest(host: string, path: string, key: Uint8Array): { request: string; accept: string } {
  const keyText = Buffer.from(key).toString('base64');
  const request =
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${keyText}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  return {
    request,
    accept: createHash('sha1')
      .update(keyText + GUID)
      .digest('base64'),
  };
}

/** Checks the server's answer (its status line and headers, without the blank line). Throws a line that says what was wrong. */
export function checkUpgradeAnswer(head: string, accept: string): void {
  const [status, ...lines] = head.split('\r\n');
  if (!/^HTTP\/1\.1 101\b/.test(status ?? '')) throw new Error(`the peer did not upgrade to a WebSocket: ${status}`);
  const headers = new Map(
    lines.map((l) => {
      const colon = l.indexOf(':');
      return [l.slice(0, colon).trim().toLowerCase(), l.slice(colon + 1).trim()] as const;
    }),
  );
  if (headers.get('upgrade')?.toLowerCase() !== 'websocket') throw new Error('the upgrade answer is not for a WebSocket');
  if (headers.get('sec-websocket-accept') !== accept) throw new Error('the upgrade answer carries the wrong Sec-WebSocket-Accept');
  if (headers.has('sec-websocket-extensions')) throw new Error(`the peer asked for extensions: ${headers.get('sec-websocket-extensions')}`);
}

export const OPCODE = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

export interface WsFrameHeader {
  fin: boolean;
  opcode: number;
  length: number;
}

/**
 * How many header bytes a frame starting with `first2` has (2 to 10: a server's frames are not
 * masked), or throws for a masked one.
 */
export function headerBytes(first2: Uint8Array): number {
  if (first2[1]! & 0x80) throw new Error('the server sent a masked frame');
  const short = first2[1]! & 0x7f;
  return short === 126 ? 4 : short === 127 ? 10 : 2;
}

/** The header of a server frame whose `headerBytes` are all here. Throws for reserved bits and lengths past 2^53. */
export function decodeFrameHeader(bytes: Uint8Array): WsFrameHeader {
  const b0 = bytes[0]!;
  if (b0 & 0x70) throw new Error('a frame with reserved bits set (no extension was agreed)');
  const short = bytes[1]! & 0x7f;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let length = short;
  if (short === 126) length = view.getUint16(2);
  else if (short === 127) {
    const big = view.getBigUint64(2);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`a frame of ${big} B`);
    length = Number(big);
  }
  return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, length };
}

/** A masked client frame carrying `payload` (RFC 6455 §5.3: every client frame is masked). */
export function maskedFrame(opcode: number, payload: Uint8Array, mask: Uint8Array): Buffer {
  const n = payload.byteLength;
  const lengthBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = Buffer.alloc(2 + lengthBytes + 4 + n);
  out[0] = 0x80 | opcode;
  if (lengthBytes === 0) out[1] = 0x80 | n;
  else if (lengthBytes === 2) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  const at = 2 + lengthBytes;
  out.set(mask.subarray(0, 4), at);
  for (let i = 0; i < n; i++) out[at + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}
