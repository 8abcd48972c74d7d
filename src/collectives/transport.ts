/**
 * Authenticated, framed connections between ranks: TCP, or WebSocket (`link: 'ws'`, the link a
 * browser can open). Each rank listens on one port (chosen by the OS unless given) and publishes
 * its address and link through the store; a browser tab, which cannot listen, publishes a URL at its
 * launcher that relays connections to it (`listener`). A rank dials every peer it receives from,
 * over the link that peer listens on, so a ring can mix links pair by pair. It reads what it dialed
 * with `onread`, into the places the receiving op names (the destination itself for copies, the
 * SIMD scratch for reductions): received bytes are never copied again. Over WebSocket the same byte
 * stream (handshake, then frames) travels in binary messages; the dialer speaks the client side
 * itself so that each payload lands in place as TCP's bytes do, and the `ws` package serves the
 * listening side (and dials a browser rank's relay URL, copying each message once). It sends on the
 * connections its peers dialed. The transport knows nothing of reductions:
 * it hands every frame's header to a router and reads the body where the router's sink says.
 */
import { createServer as createHttpServer } from 'node:http';
import net from 'node:net';
import { EventEmitter } from 'node:events';
import type { WebSocket, WebSocketServer } from 'ws';
import { type ByteStream, connectAndAuthenticate, dialHandshake, HandshakeGate, HandshakeReader } from './auth.js';
import { TransportError } from './errors.js';
import { rateLimitedLog } from './log-limit.js';
import { encodeHeader, FrameReader, type BodySink, type FrameHeader } from './frame.js';
import { listen, type StoreClient } from './store.js';
import { checkUpgradeAnswer, decodeFrameHeader, headerBytes, maskedFrame, OPCODE, upgradeRequest } from './ws-frames.js';

export type FrameSink = BodySink;

export interface FrameRouter {
  /**
   * Called for each header; throw to reject the frame (the transport then fails that peer). Null:
   * the frame belongs to an op not started yet; the connection stops reading until `retryHeld()`.
   */
  route(peer: number, header: FrameHeader): FrameSink | null;
  /** A connection to `peer` ended (`fatal`: it spoke garbage); called once per peer. */
  failed(peer: number, reason: string, fatal: boolean): void;
}

export interface TransportOptions {
  rank: number;
  worldSize: number;
  token: string;
  /** Address to listen on (never every interface by default). */
  host: string;
  /** 0: chosen by the OS. */
  port: number;
  store: StoreClient;
  /** The launcher's restart round (WEBTRON_RESTART_COUNT; default '0'): the store keys this rank's job meets under. */
  round?: string;
  /** Deadline for handshakes this rank dials and for finding a peer's address. */
  connectTimeoutMs: number;
  /** Deadline for a connection to this rank to authenticate (default 10 s). */
  acceptTimeoutMs?: number;
  /** Connections not yet authenticated that this rank's port holds at once (default max(64, 2·world)). */
  maxPendingConnections?: number;
  /**
   * Settings every rank must share (segment size, protocol version): sent in the hello and
   * published with the address; a peer with other values is refused, naming the setting.
   */
  settings: Record<string, number | string>;
  /** What this rank listens on: TCP (default) or WebSocket. Its dialers follow the published address. */
  link?: TransportLink;
  /** Connections that reach this rank some other way than a port of its own (a browser tab's relay); replaces the listener. */
  listener?: TransportListener;
  log: (line: string) => void;
}

/**
 * Where a rank that cannot listen (a browser tab) is reached: a WebSocket URL it publishes, and the
 * connections that arrive there, each handed to `accept` as a byte stream.
 */
export interface TransportListener {
  url: string;
  start(accept: (stream: ByteStream, from: string) => void): void;
  /** Where this rank dials `peer` instead of its address (the launcher joins the two). */
  dialUrl(peer: number): string;
  close(): void;
}

/** What a rank publishes under peerAddressKey: where to dial it, over which link, and its shared settings. */
export interface PeerAddress {
  host?: string;
  port?: number;
  link?: TransportLink;
  /** A WebSocket URL to dial instead of host:port (a browser rank's relay). */
  url?: string;
  settings?: unknown;
}

export const TRANSPORT_LINKS = ['tcp', 'ws'] as const;
export type TransportLink = (typeof TRANSPORT_LINKS)[number];

/**
 * The `ws` package, loaded by the first WebSocket link or server: most runs use TCP only, and loading
 * it at start-up cost every process about 40 ms.
 */
let wsPackage: Promise<typeof import('ws')> | undefined;
export const loadWs = (): Promise<typeof import('ws')> => (wsPackage ??= import('ws'));

/** A WebSocket's readyState when open (WebSocket.OPEN, in the standard and in `ws`). */
export const WS_OPEN = 1;

/** How a WebSocket's byte stream is configured: no compression (the frames are floats), messages up to a segment and its header. */
export const WS_OPTIONS = { perMessageDeflate: false, maxPayload: 1 << 30 } as const;

/** `host:port` as a URL names it (an IPv6 address in brackets). */
export const hostPort = (host: string, port: number) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** The first setting whose value differs, as "name: this rank has a, rank p has b", or null. */
export function settingsMismatch(mine: Record<string, unknown>, theirs: unknown, peer: string): string | null {
  const other = (theirs ?? {}) as Record<string, unknown>;
  for (const key of new Set([...Object.keys(mine), ...Object.keys(other)])) {
    if (mine[key] !== other[key]) return `setting ${key} differs: this rank has ${String(mine[key])}, ${peer} has ${String(other[key])}`;
  }
  return null;
}

/** Where `rank` publishes its address; each restart round of the launcher meets under its own keys in the same store. */
export const peerAddressKey = (rank: number, round = '0') => `webtron/${round}/peer/${rank}`;

/**
 * A WebSocket as a byte stream: each write is one binary message, and the messages read back as
 * one stream ('data'). Without Node's stream machinery in between, whose 16 KiB high-water mark
 * paused and resumed the socket at every segment.
 */
export class WsStream extends EventEmitter implements ByteStream {
  constructor(readonly ws: WebSocket) {
    super();
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer) => this.emit('data', data));
    ws.on('close', () => {
      this.emit('end');
      this.emit('close');
    });
    ws.on('error', (error) => this.emit('error', error));
  }

  write(chunk: Uint8Array, callback?: (error?: Error | null) => void): boolean {
    if (this.ws.readyState !== WS_OPEN) {
      callback?.(new Error('the WebSocket is not open'));
      return false;
    }
    this.ws.send(chunk, { binary: true }, callback);
    return true;
  }

  cork(): void {}
  uncork(): void {}

  pause(): this {
    this.ws.pause();
    return this;
  }

  resume(): this {
    this.ws.resume();
    return this;
  }

  end(): this {
    this.ws.close();
    return this;
  }

  destroy(): this {
    this.ws.terminate();
    return this;
  }
}

/** A connection this rank dialed to receive `peer`'s frames. */
interface ReceiveLink {
  readonly peer: number;
  readonly socket: ByteStream;
  open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void>;
  /** Give a held frame another chance (its op may have started); reading resumes once it has a place. */
  retry(): void;
}

/**
 * What both receive links do once authenticated: feed the frame reader in order, pause the socket
 * while a frame waits for its op, and report a peer that fails.
 */
abstract class FrameReceiveLink implements ReceiveLink {
  abstract readonly socket: ByteStream;
  protected frames: FrameReader | null = null;

  constructor(
    readonly peer: number,
    protected readonly transport: Transport,
  ) {}

  abstract open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void>;

  protected fail(error: unknown): void {
    this.transport.peerFailed(this.peer, `bad data from rank ${this.peer}: ${(error as Error).message}`, true);
    this.socket.destroy();
  }

  /** Frames from the end of the handshake on, starting with the bytes that came with it. */
  protected startFrames(leftover: Uint8Array): void {
    this.frames = new FrameReader((header) => this.transport.router.route(this.peer, header));
    this.socket.on('close', () => this.transport.peerFailed(this.peer, 'connection closed by peer or network', false));
    this.socket.on('error', (error: Error) => this.transport.peerFailed(this.peer, `socket error: ${error.message}`, false));
    this.feed(leftover);
  }

  /** Bytes that arrived somewhere of their own: copied into the reader's places. */
  protected feed(bytes: Uint8Array): void {
    try {
      this.frames!.push(bytes);
      if (this.frames!.held) this.socket.pause();
    } catch (error) {
      this.fail(error);
    }
  }

  /** Give a held frame another chance (its op may have started); reading resumes once it has a place. */
  retry(): void {
    if (!this.frames?.held) return;
    try {
      if (this.frames.retry()) this.socket.resume();
    } catch (error) {
      this.fail(error);
    }
  }
}

/** A TCP socket to host:port read with `onread`: each read lands where `target()` says and is reported to `received(n)`. */
function readingSocket(host: string, port: number, target: () => Uint8Array, received: (n: number) => boolean): net.Socket {
  return net.connect({ host, port, onread: { buffer: target, callback: received } });
}

/** A TCP connection this rank dialed to `peer` to receive its frames; read with `onread`. */
class TcpReceiveLink extends FrameReceiveLink {
  readonly socket: net.Socket;
  private readonly handshake: HandshakeReader;
  private readonly handshakeBuffer = new Uint8Array(1 << 12);
  private lastTarget: Uint8Array | null = null;
  private targetEpoch = -1;

  constructor(peer: number, host: string, port: number, transport: Transport) {
    super(peer, transport);
    this.socket = readingSocket(
      host,
      port,
      () => this.target(),
      (n) => this.received(n),
    );
    this.handshake = new HandshakeReader(this.socket, true);
  }

  private target(): Uint8Array {
    this.lastTarget = this.frames ? this.frames.target() : this.handshakeBuffer;
    this.targetEpoch = this.frames?.epoch ?? -1;
    return this.lastTarget;
  }

  private received(n: number): boolean {
    // Node asks for the next buffer right after each read, and the reader may move on by itself
    // before the read lands (the handshake ends, a held frame finds its op): judge by where the
    // bytes went and by whether the reader is still where it was when it handed that buffer out.
    const landed = this.lastTarget!;
    if (!this.frames) this.handshake.push(landed.subarray(0, n));
    else if (landed !== this.handshakeBuffer && this.frames.epoch === this.targetEpoch) {
      try {
        this.frames.advance(n);
        if (this.frames.held) this.socket.pause();
      } catch (error) {
        this.fail(error);
      }
    } else this.feed(landed.slice(0, n));
    return true;
  }

  async open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void> {
    this.startFrames(await connectAndAuthenticate(this.socket, token, { kind: 'peer', ...hello }, timeoutMs, this.handshake));
  }
}

/**
 * A WebSocket this rank dialed to a peer that listens with the `ws` package, read with `onread`
 * like the TCP link: the upgrade answer and each WebSocket frame's header go to a small buffer,
 * each binary payload straight into the places the frame reader names (./ws-frames.ts says why).
 * What this side writes (the handshake) goes out in masked frames, as a client's must.
 */
class WsDirectReceiveLink extends FrameReceiveLink {
  readonly socket: net.Socket;
  /** The socket as the handshake sees it: each write one masked binary frame. */
  private readonly stream: ByteStream;
  private readonly handshake: HandshakeReader;
  private readonly incoming = new Uint8Array(1 << 12);
  private readonly header = new Uint8Array(10);
  private readonly control = new Uint8Array(125);
  private state: 'http' | 'header' | 'payload' | 'control' = 'http';
  private http = Buffer.alloc(0);
  private have = 0;
  private need = 2;
  private payloadLeft = 0;
  private controlOpcode = 0;
  private handedFrames = false;
  private lastTarget: Uint8Array | null = null;
  private targetEpoch = -1;
  private upgrade: { resolve: () => void; reject: (error: Error) => void } | null = null;
  private readonly accept: string;

  constructor(peer: number, host: string, port: number, transport: Transport) {
    super(peer, transport);
    this.socket = readingSocket(
      host,
      port,
      () => this.target(),
      (n) => this.received(n),
    );
    const { request, accept } = upgradeRequest(hostPort(host, port), '/', randomMask(16));
    this.accept = accept;
    this.socket.once('connect', () => this.socket.write(request));
    const socket = this.socket;
    this.stream = {
      write: (chunk, callback) => socket.write(maskedFrame(OPCODE.binary, chunk, randomMask(4)), callback),
      on: (event, listener) => socket.on(event, listener),
      off: (event, listener) => socket.off(event, listener),
      once: (event, listener) => socket.once(event, listener),
      cork: () => socket.cork(),
      uncork: () => socket.uncork(),
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      end: () => socket.end(),
      destroy: () => socket.destroy(),
    };
    this.handshake = new HandshakeReader(this.stream, true);
  }

  private target(): Uint8Array {
    this.handedFrames = false;
    if (this.state === 'payload' && this.frames) {
      const t = this.frames.target();
      this.handedFrames = true;
      this.targetEpoch = this.frames.epoch;
      this.lastTarget = t.byteLength > this.payloadLeft ? t.subarray(0, this.payloadLeft) : t;
    } else if (this.state === 'payload') this.lastTarget = this.incoming.subarray(0, Math.min(this.incoming.byteLength, this.payloadLeft));
    else if (this.state === 'header') this.lastTarget = this.incoming.subarray(0, this.need - this.have);
    else this.lastTarget = this.incoming;
    return this.lastTarget;
  }

  private received(n: number): boolean {
    const landed = this.lastTarget!;
    try {
      if (this.handedFrames && this.state === 'payload' && this.frames!.epoch === this.targetEpoch) {
        this.payloadLeft -= n;
        if (this.payloadLeft === 0) this.nextHeader();
        this.frames!.advance(n);
        if (this.frames!.held) this.socket.pause();
      } else this.consume(landed.slice(0, n));
    } catch (error) {
      this.failed(error as Error);
    }
    return true;
  }

  private failed(error: Error): void {
    if (this.upgrade) this.upgrade.reject(error);
    else this.fail(error);
    this.socket.destroy();
  }

  private nextHeader(): void {
    this.state = 'header';
    this.have = 0;
    this.need = 2;
  }

  /** Bytes that landed outside a frame target: the upgrade answer, headers, control frames, and payload bytes that came with them. */
  private consume(bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.byteLength) {
      if (this.state === 'http') {
        this.http = Buffer.concat([this.http, bytes.subarray(at)]);
        const end = this.http.indexOf('\r\n\r\n');
        if (end < 0) {
          if (this.http.byteLength > 16 << 10) throw new Error('the upgrade answer has no end');
          return;
        }
        checkUpgradeAnswer(this.http.subarray(0, end).toString('latin1'), this.accept);
        const rest = this.http.subarray(end + 4);
        this.http = Buffer.alloc(0);
        this.nextHeader();
        this.upgrade?.resolve();
        this.upgrade = null;
        this.consume(rest);
        return;
      }
      if (this.state === 'header') {
        at = this.fill(this.header, bytes, at);
        if (this.have === 2) this.need = headerBytes(this.header);
        if (this.have === this.need) this.frameHeader(decodeFrameHeader(this.header.subarray(0, this.need)));
        continue;
      }
      if (this.state === 'control') {
        at = this.fill(this.control, bytes, at);
        if (this.have === this.need) this.controlFrame();
        continue;
      }
      const n = Math.min(this.payloadLeft, bytes.byteLength - at);
      const chunk = bytes.subarray(at, at + n);
      at += n;
      this.payloadLeft -= n;
      if (this.payloadLeft === 0) this.nextHeader();
      if (this.frames) this.feed(chunk);
      else this.handshake.push(chunk);
    }
  }

  /** Copies into `part` (a frame header, a control frame) what it still needs of `bytes` from `at`; returns where the rest starts. */
  private fill(part: Uint8Array, bytes: Uint8Array, at: number): number {
    const n = Math.min(this.need - this.have, bytes.byteLength - at);
    part.set(bytes.subarray(at, at + n), this.have);
    this.have += n;
    return at + n;
  }

  private frameHeader(h: { opcode: number; length: number }): void {
    if (h.opcode === OPCODE.binary || h.opcode === OPCODE.continuation) {
      if (h.length === 0) this.nextHeader();
      else {
        this.state = 'payload';
        this.payloadLeft = h.length;
      }
      return;
    }
    if (h.opcode === OPCODE.close || h.opcode === OPCODE.ping || h.opcode === OPCODE.pong) {
      if (h.length > 125) throw new Error(`a control frame of ${h.length} B`);
      this.controlOpcode = h.opcode;
      this.state = 'control';
      this.have = 0;
      this.need = h.length;
      if (h.length === 0) this.controlFrame();
      return;
    }
    throw new Error(`a WebSocket frame with opcode ${h.opcode} where binary frames were due`);
  }

  private controlFrame(): void {
    const payload = this.control.slice(0, this.need);
    const opcode = this.controlOpcode;
    this.nextHeader();
    if (opcode === OPCODE.ping) this.socket.write(maskedFrame(OPCODE.pong, payload, randomMask(4)));
    else if (opcode === OPCODE.close) this.socket.end();
  }

  async open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const upgraded = new Promise<void>((resolve, reject) => {
      this.upgrade = { resolve, reject };
      timer = setTimeout(() => reject(new TransportError('the WebSocket upgrade timed out')), timeoutMs);
      this.socket.once('error', reject);
      this.socket.once('close', () => reject(new TransportError('connection closed during the WebSocket upgrade')));
    });
    try {
      await upgraded;
    } finally {
      clearTimeout(timer);
      this.upgrade = null;
    }
    const leftover = await dialHandshake(this.stream, token, { kind: 'peer', ...hello }, timeoutMs, this.handshake);
    this.startFrames(leftover);
  }
}

function randomMask(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** A WebSocket this rank dialed to `peer` to receive its frames: binary messages, read as one byte stream. */
class WsReceiveLink extends FrameReceiveLink {
  readonly socket: WsStream;
  private readonly ws: WebSocket;
  private readonly handshake: HandshakeReader;

  constructor(peer: number, url: string, transport: Transport, ws: typeof import('ws')) {
    super(peer, transport);
    this.ws = new ws.WebSocket(url, WS_OPTIONS);
    this.ws.on('upgrade', (response) => response.socket.setNoDelay(true));
    // Read from the start: the peer's challenge can come in the same packet as the upgrade.
    this.socket = new WsStream(this.ws);
    this.handshake = new HandshakeReader(this.socket);
  }

  async open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    const leftover = await dialHandshake(this.socket, token, { kind: 'peer', ...hello }, timeoutMs, this.handshake);
    this.socket.on('data', (chunk: Buffer) => this.feed(chunk));
    this.startFrames(leftover);
  }
}

/**
 * A connection `peer` dialed to this rank; this rank only sends frames on it. When it closes, only a
 * later send on it fails: the peer may have ended after its last op while its last frames to this
 * rank still wait on the other connection (behind a handshake, or held for an op not started), and
 * whether this rank still needs them is for that receive link to say.
 */
export class SendLink {
  private closed: string | null = null;

  constructor(
    readonly peer: number,
    readonly socket: ByteStream,
    transport: Transport,
  ) {
    socket.on('data', () => {
      transport.peerFailed(peer, `rank ${peer} sent data on a connection it only receives on`, true);
      socket.destroy();
    });
    socket.on('close', () => {
      this.closed ??= 'connection closed by peer or network';
    });
    socket.on('error', (error) => {
      this.closed ??= `socket error: ${error.message}`;
    });
  }

  /** Send one frame; resolves once Node has handed the bytes to the kernel (the body may then change). */
  send(header: FrameHeader, body?: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new TransportError(`send to rank ${this.peer} failed: ${this.closed}`, this.peer));
    return new Promise((resolve, reject) => {
      const done = (error?: Error | null) =>
        error ? reject(new TransportError(`send to rank ${this.peer} failed: ${error.message}`, this.peer)) : resolve();
      this.socket.cork();
      if (body && body.byteLength > 0) {
        this.socket.write(encodeHeader(header));
        this.socket.write(body, done);
      } else {
        this.socket.write(encodeHeader(header), done);
      }
      this.socket.uncork();
    });
  }
}

export class Transport {
  router: FrameRouter = {
    route: () => {
      throw new Error('no router');
    },
    failed: () => undefined,
  };
  private readonly receiveLinks = new Map<number, Promise<ReceiveLink>>();
  /** Receive links once open (for `retryHeld`, which must not wait). */
  private readonly openLinks = new Set<ReceiveLink>();
  private readonly gate: HandshakeGate;
  private readonly refusal: (line: string) => void;
  private readonly sendLinks = new Map<number, Promise<SendLink>>();
  private readonly awaitingDial = new Map<number, { resolve: (link: SendLink) => void; reject: (e: Error) => void }>();
  private readonly sockets = new Set<ByteStream>();
  private readonly failedPeers = new Set<number>();
  private closed = false;

  private constructor(
    readonly options: TransportOptions,
    private readonly server: net.Server | null,
    readonly port: number,
    private readonly wss: WebSocketServer | null,
  ) {
    this.refusal = rateLimitedLog(options.log, { what: `refused connections to rank ${options.rank}` });
    this.gate = new HandshakeGate(options.maxPendingConnections ?? Math.max(64, 2 * options.worldSize));
  }

  static async start(options: TransportOptions): Promise<Transport> {
    if (options.listener) {
      const transport = new Transport(options, null, 0, null);
      options.listener.start((stream, from) => transport.accept(stream, from));
      const address: PeerAddress = { url: options.listener.url, link: 'ws', settings: options.settings };
      await options.store.set(peerAddressKey(options.rank, options.round), JSON.stringify(address));
      return transport;
    }
    const holder: { transport?: Transport } = {};
    let server: net.Server;
    let wss: WebSocketServer | null = null;
    if (options.link === 'ws') {
      const http = createHttpServer((_request, response) => response.writeHead(426).end());
      server = http;
      wss = new (await loadWs()).WebSocketServer({ server: http, ...WS_OPTIONS });
      wss.on('connection', (ws, request) => {
        if (!holder.transport) return ws.terminate(); // not yet published: nobody can legitimately know this port
        request.socket.setNoDelay(true);
        holder.transport.accept(new WsStream(ws), `${request.socket.remoteAddress}:${request.socket.remotePort}`);
      });
    } else {
      server = net.createServer();
      server.on('connection', (socket) => {
        if (!holder.transport) return socket.destroy(); // not yet published: nobody can legitimately know this port
        holder.transport.accept(socket, `${socket.remoteAddress}:${socket.remotePort}`);
      });
    }
    await listen(server, options.host, options.port, `rank ${options.rank} transport`);
    const { port } = server.address() as net.AddressInfo;
    holder.transport = new Transport(options, server, port, wss);
    const address: PeerAddress = { host: options.host, port, link: options.link ?? 'tcp', settings: options.settings };
    await options.store.set(peerAddressKey(options.rank, options.round), JSON.stringify(address));
    return holder.transport;
  }

  get rank(): number {
    return this.options.rank;
  }

  private track(socket: ByteStream): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    if (socket instanceof net.Socket) {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 10_000);
    }
  }

  private accept(socket: ByteStream, from: string): void {
    const { token, rank, worldSize, settings } = this.options;
    const handshake = this.closed ? null : this.gate.accept(socket, token, this.options.acceptTimeoutMs ?? 10_000);
    if (!handshake) {
      if (!this.closed)
        this.refusal(`webtron rank ${rank}: refused connection from ${from}: ${this.gate.cap} connections are already authenticating`);
      socket.destroy();
      return;
    }
    this.track(socket);
    handshake
      .then(({ hello, leftover }) => {
        const peer = hello.rank;
        if (hello.kind !== 'peer' || typeof peer !== 'number' || !Number.isInteger(peer)) {
          throw new TransportError(`expected a peer hello, got ${JSON.stringify(hello).slice(0, 200)}`);
        }
        if (hello.worldSize !== worldSize)
          throw new TransportError(`rank ${peer} thinks the world size is ${String(hello.worldSize)}, this rank ${worldSize}`);
        const mismatch = settingsMismatch(settings, hello.settings, `rank ${peer}`);
        if (mismatch) throw new TransportError(mismatch);
        if (peer < 0 || peer >= worldSize || peer === rank)
          throw new TransportError(`rank ${peer} is not another rank of this world of ${worldSize}`);
        if (leftover.byteLength > 0) throw new TransportError(`rank ${peer} sent data before this rank sent any`);
        const waiting = this.awaitingDial.get(peer);
        if (this.sendLinks.has(peer) && !waiting) throw new TransportError(`rank ${peer} is already connected`);
        const link = new SendLink(peer, socket, this);
        if (waiting) {
          this.awaitingDial.delete(peer);
          waiting.resolve(link);
        } else {
          this.sendLinks.set(peer, Promise.resolve(link));
        }
      })
      .catch((error: Error) => {
        this.refusal(`webtron rank ${rank}: refused connection from ${from}: ${error.message}`);
        socket.destroy();
      });
  }

  /** Frames held for ops not started yet: try them again (the process group started an op). */
  retryHeld(): void {
    for (const link of this.openLinks) link.retry();
  }

  /** The link this rank receives `peer`'s frames on: dialed on first use. */
  receiveFrom(peer: number): Promise<unknown> {
    return this.link(this.receiveLinks, peer, () => this.dial(peer));
  }

  /** The link this rank sends to `peer` on: `peer` dials it when it first expects our frames. */
  sendTo(peer: number): Promise<SendLink> {
    return this.link(this.sendLinks, peer, () => new Promise((resolve, reject) => this.awaitingDial.set(peer, { resolve, reject })));
  }

  private link<T>(links: Map<number, Promise<T>>, peer: number, make: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new TransportError(`transport of rank ${this.rank} is closed`, peer));
    let link = links.get(peer);
    if (!link) {
      link = make();
      link.catch(() => undefined); // failures surface through the op that asked
      links.set(peer, link);
    }
    return link;
  }

  private async dial(peer: number): Promise<ReceiveLink> {
    const { store, token, connectTimeoutMs, rank, worldSize, settings, round } = this.options;
    const address = JSON.parse((await store.get(peerAddressKey(peer, round), connectTimeoutMs)).toString('utf8')) as PeerAddress;
    const host = address.host ?? '';
    const where = address.url ?? `${host}:${address.port}`;
    const { listener } = this.options;
    const ws = listener || address.url ? await loadWs() : null;
    const link: ReceiveLink = listener
      ? new WsReceiveLink(peer, listener.dialUrl(peer), this, ws!)
      : address.url
        ? new WsReceiveLink(peer, address.url, this, ws!)
        : address.link === 'ws'
          ? new WsDirectReceiveLink(peer, host, address.port!, this)
          : new TcpReceiveLink(peer, host, address.port!, this);
    this.track(link.socket);
    try {
      await link.open({ rank, worldSize, settings }, token, connectTimeoutMs);
      this.openLinks.add(link);
      link.socket.on('close', () => this.openLinks.delete(link));
      return link;
    } catch (error) {
      link.socket.destroy();
      throw new TransportError(`cannot connect to rank ${peer} at ${where}: ${(error as Error).message}`, peer);
    }
  }

  /** Report an ended or broken peer once; its connection is destroyed. */
  peerFailed(peer: number, reason: string, fatal: boolean): void {
    if (this.failedPeers.has(peer) || this.closed) return;
    this.failedPeers.add(peer);
    for (const links of [this.receiveLinks, this.sendLinks] as Map<number, Promise<{ socket: ByteStream }>>[]) {
      void links.get(peer)?.then(
        (l) => l.socket.destroy(),
        () => undefined,
      );
    }
    this.awaitingDial.get(peer)?.reject(new TransportError(reason, peer));
    this.router.failed(peer, reason, fatal);
  }

  /**
   * Close every connection. `graceful`: half-close (FIN after the queued bytes) and let peers read
   * to the end, so data already sent is never cut off by a reset; otherwise drop at once.
   */
  async close(graceful = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [peer, w] of this.awaitingDial) w.reject(new TransportError('transport closed', peer));
    this.awaitingDial.clear();
    for (const s of this.sockets) {
      if (graceful) {
        s.end();
        setTimeout(() => s.destroy(), 2000).unref();
      } else {
        s.destroy();
      }
    }
    this.wss?.close();
    this.options.listener?.close();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
