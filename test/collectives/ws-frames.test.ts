/**
 * The WebSocket client framing the receive link speaks (src/collectives/ws-frames.ts), against the
 * `ws` package as the referee: ws's Sender frames a server's payloads of every length class and
 * ours reads their headers; ours masks client frames and ws's server-side Receiver reads them back.
 */
import { createHash } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import {
  checkUpgradeAnswer,
  decodeFrameHeader,
  headerBytes,
  maskedFrame,
  OPCODE,
  upgradeRequest,
} from '../../src/collectives/ws-frames.js';
import { seeded } from '../helpers/seed.js';

/** ws's framing classes, which its package exports but its type declarations leave out. */
const { Receiver, Sender } = createRequire(import.meta.url)('ws') as {
  Receiver: new (options: { isServer: boolean; binaryType: string }) => EventEmitter & { write(chunk: Uint8Array): void };
  Sender: { frame(data: Buffer, options: Record<string, unknown>): Buffer[] };
};

describe('WebSocket client framing', () => {
  it.each([0, 1, 125, 126, 65535, 65536, 1_000_003])('reads the header ws writes for a %i-byte binary frame', (n) => {
    const parts = Sender.frame(Buffer.alloc(n), { fin: true, opcode: OPCODE.binary, mask: false, readOnly: true, rsv1: false });
    const header = new Uint8Array(parts[0]!);
    expect(headerBytes(header)).toBe(header.byteLength);
    expect(decodeFrameHeader(header)).toEqual({ fin: true, opcode: OPCODE.binary, length: n });
  });

  it.each([0, 5, 125, 126, 70_000])('ws reads back a masked %i-byte client frame', async (n) => {
    const { random, seed } = seeded(`masked frame of ${n} B`);
    const payload = new Uint8Array(n).map(() => Math.floor(random() * 256));
    const receiver = new Receiver({ isServer: true, binaryType: 'nodebuffer' });
    const got = new Promise<Buffer>((resolve, reject) => {
      receiver.on('message', (data: Buffer) => resolve(data));
      receiver.on('error', reject);
    });
    receiver.write(maskedFrame(OPCODE.binary, payload, new Uint8Array([1, 2, 3, 4])));
    expect(new Uint8Array(await got), `seed ${seed}`).toEqual(payload);
  });

  it("checks the server's accept value as RFC 6455 computes it", () => {
    const key = new Uint8Array(16).fill(7);
    const { request, accept } = upgradeRequest('127.0.0.1:1234', '/', key);
    const keyText = /Sec-WebSocket-Key: (\S+)/.exec(request)![1]!;
    const expected = createHash('sha1').update(`${keyText}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    expect(accept).toBe(expected);
    const answer = (value: string) =>
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${value}`;
    expect(() => checkUpgradeAnswer(answer(accept), accept)).not.toThrow();
    expect(() => checkUpgradeAnswer(answer('nope'), accept)).toThrow(/wrong Sec-WebSocket-Accept/);
    expect(() => checkUpgradeAnswer('HTTP/1.1 426 Upgrade Required', accept)).toThrow(/did not upgrade to a WebSocket: HTTP\/1.1 426/);
  });

  it('refuses masked server frames and reserved bits', () => {
    expect(() => headerBytes(new Uint8Array([0x82, 0x85]))).toThrow(/masked frame/);
    expect(() => decodeFrameHeader(new Uint8Array([0xc2, 0x05]))).toThrow(/reserved bits/);
  });
});
