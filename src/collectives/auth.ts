/**
 * Mutual challenge-response authentication of a fresh connection (TCP, or a WebSocket's byte
 * stream) with the job's secret (HMAC-SHA256), before any other byte is trusted. Neither side
 * ever sends the token:
 *
 *   acceptor → dialer   'WTHS' v role nonceA(32)
 *   dialer   → acceptor 'WTHS' v role nonceD(32) len(u32) hello(JSON) HMAC(token, 'dial'|nonceA|nonceD|hello)
 *   acceptor → dialer   HMAC(token, 'accept'|nonceD|nonceA)
 *
 * A peer without the token, with a wrong one, or speaking anything else is refused; every read
 * has a deadline so a silent client cannot hold the connection open.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { TransportError } from './errors.js';

const MAGIC = Buffer.from('WTHS');
const VERSION = 1;
const NONCE = 32;
const MAC = 32;
const MAX_HELLO = 4096;

// biome-ignore lint/suspicious/noExplicitAny: Node's own listener type, which net.Socket's methods take
type Listener = (...args: any[]) => void;

/**
 * The byte stream a handshake and the frames after it travel on: a TCP socket, or a WebSocket's
 * binary messages read back as one stream (transport.ts).
 */
export interface ByteStream {
  write(chunk: Uint8Array, callback?: (error?: Error | null) => void): boolean;
  on(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
  cork(): void;
  uncork(): void;
  pause(): unknown;
  resume(): unknown;
  end(): unknown;
  destroy(): unknown;
}

/** What a dialer says about itself (authenticated by the MAC). */
export interface Hello {
  /** 'peer' for a rank's transport connection, 'store' for a store client. */
  kind: 'peer' | 'store';
  rank?: number;
  [key: string]: unknown;
}

/**
 * Reads exact byte counts from a socket during the handshake; keeps whatever arrives after. With
 * `external`, bytes are not taken from 'data' events but fed through `push` (for sockets that read
 * with `onread`).
 */
export class HandshakeReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private wake: (() => void) | null = null;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.failure ??= new TransportError('connection closed during authentication');
    this.wake?.();
  };
  private readonly onError = (error: Error) => {
    this.failure ??= new TransportError(`socket error during authentication: ${error.message}`);
    this.wake?.();
  };

  constructor(
    private readonly socket: ByteStream,
    private readonly external = false,
  ) {
    if (!external) socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  /** Bytes that arrived through `onread` (copied: the read buffer is reused). */
  push(bytes: Uint8Array): void {
    this.onData(Buffer.from(bytes));
  }

  async read(n: number, deadline: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new TransportError('authentication timed out');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(n)];
    this.buffered -= n;
    return all.subarray(0, n);
  }

  /** Stop listening; return bytes that arrived beyond the handshake. */
  detach(): Buffer {
    if (!this.external) this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    return Buffer.concat(this.chunks);
  }
}

function mac(token: string, ...parts: (string | Buffer)[]): Buffer {
  const h = createHmac('sha256', token);
  for (const p of parts) h.update(p);
  return h.digest();
}

function checkPreamble(buf: Buffer): void {
  if (!buf.subarray(0, 4).equals(MAGIC)) throw new TransportError('not a webtron handshake (bad magic)');
  if (buf[4] !== VERSION) throw new TransportError(`handshake version ${buf[4]}, this webtron speaks ${VERSION}`);
}

export interface Authenticated {
  hello: Hello;
  /** Bytes received after the handshake, to be fed to the frame parser first. */
  leftover: Buffer;
}

/** Acceptor side. Resolves with the dialer's hello, or rejects (the caller destroys the socket). */
export async function acceptHandshake(socket: ByteStream, token: string, timeoutMs: number): Promise<Authenticated> {
  const deadline = Date.now() + timeoutMs;
  const reader = new HandshakeReader(socket);
  try {
    const nonceA = randomBytes(NONCE);
    socket.write(Buffer.concat([MAGIC, Buffer.from([VERSION, 0]), nonceA]));
    const fixed = await reader.read(4 + 2 + NONCE + 4, deadline);
    checkPreamble(fixed);
    const nonceD = fixed.subarray(6, 6 + NONCE);
    const helloBytes = fixed.readUInt32LE(6 + NONCE);
    if (helloBytes > MAX_HELLO) throw new TransportError(`hello of ${helloBytes} B is too large`);
    const rest = await reader.read(helloBytes + MAC, deadline);
    const helloRaw = rest.subarray(0, helloBytes);
    const theirMac = rest.subarray(helloBytes);
    if (!timingSafeEqual(theirMac, mac(token, 'dial', nonceA, nonceD, helloRaw))) {
      throw new TransportError('wrong or missing job token (WEBTRON_JOB_TOKEN)');
    }
    let hello: Hello;
    try {
      hello = JSON.parse(helloRaw.toString('utf8')) as Hello;
    } catch {
      throw new TransportError('authenticated hello is not JSON');
    }
    socket.write(mac(token, 'accept', nonceD, nonceA));
    return { hello, leftover: reader.detach() };
  } catch (error) {
    reader.detach();
    throw error;
  }
}

/**
 * At most `cap` connections authenticating at once on one listening port, so that a flood of
 * half-open connections cannot hold every socket of a store host or a rank.
 */
export class HandshakeGate {
  private pending = 0;

  constructor(readonly cap: number) {}

  /** `acceptHandshake` counted against the cap, or null when `cap` connections are already authenticating (refuse this one). */
  accept(socket: ByteStream, token: string, timeoutMs: number): Promise<Authenticated> | null {
    if (this.pending >= this.cap) return null;
    this.pending += 1;
    return acceptHandshake(socket, token, timeoutMs).finally(() => {
      this.pending -= 1;
    });
  }
}

/** Wait for a freshly created client socket to connect, then authenticate as the dialer. */
export async function connectAndAuthenticate(
  socket: Socket,
  token: string,
  hello: Hello,
  timeoutMs: number,
  reader?: HandshakeReader,
): Promise<Buffer> {
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return dialHandshake(socket, token, hello, timeoutMs, reader);
}

/** Dialer side. Rejects if the acceptor does not prove it holds the same token. */
export async function dialHandshake(
  socket: ByteStream,
  token: string,
  hello: Hello,
  timeoutMs: number,
  reader = new HandshakeReader(socket),
): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  try {
    const preamble = await reader.read(4 + 2 + NONCE, deadline);
    checkPreamble(preamble);
    const nonceA = preamble.subarray(6, 6 + NONCE);
    const nonceD = randomBytes(NONCE);
    const helloRaw = Buffer.from(JSON.stringify(hello), 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32LE(helloRaw.byteLength);
    socket.write(Buffer.concat([MAGIC, Buffer.from([VERSION, 1]), nonceD, length, helloRaw, mac(token, 'dial', nonceA, nonceD, helloRaw)]));
    const theirMac = await reader.read(MAC, deadline).catch((error: Error) => {
      // The acceptor was up (it sent its challenge) and then hung up on our answer: it refused us.
      throw new TransportError(`refused after the challenge (wrong WEBTRON_JOB_TOKEN?): ${error.message}`);
    });
    if (!timingSafeEqual(theirMac, mac(token, 'accept', nonceD, nonceA))) {
      throw new TransportError('the other side does not hold this job token (wrong WEBTRON_JOB_TOKEN or not a webtron peer)');
    }
    return reader.detach();
  } catch (error) {
    reader.detach();
    throw error;
  }
}
