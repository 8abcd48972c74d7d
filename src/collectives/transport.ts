/**
 * Authenticated, framed TCP connections between ranks. Each rank listens on one port (chosen by
 * the OS unless given) and publishes its address through the store. A rank dials every peer it
 * receives from and reads that socket with `onread`, into the places the receiving op names (the
 * destination itself for copies, the SIMD scratch for reductions): received bytes are never copied
 * again. It sends on the connections its peers dialed. The transport knows nothing of reductions:
 * it hands every frame's header to a router and reads the body where the router's sink says.
 */
import net from 'node:net';
import { acceptHandshake, connectAndAuthenticate, HandshakeReader } from './auth.js';
import { TransportError } from './errors.js';
import { encodeHeader, FrameReader, type BodySink, type FrameHeader } from './frame.js';
import { listen, type StoreClient } from './store.js';

export type FrameSink = BodySink;

export interface FrameRouter {
  /** Called for each header; throw to reject the frame (the transport then fails that peer). */
  route(peer: number, header: FrameHeader): FrameSink;
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
  /** Deadline for handshakes and for finding a peer's address. */
  connectTimeoutMs: number;
  log: (line: string) => void;
}

export const peerAddressKey = (rank: number) => `webtron/peer/${rank}`;

/** A connection this rank dialed to `peer` to receive its frames; read with `onread`. */
class ReceiveLink {
  readonly socket: net.Socket;
  private readonly handshake: HandshakeReader;
  private readonly handshakeBuffer = new Uint8Array(1 << 12);
  private frames: FrameReader | null = null;
  private lastTarget: Uint8Array | null = null;

  constructor(
    readonly peer: number,
    host: string,
    port: number,
    private readonly transport: Transport,
  ) {
    this.socket = net.connect({
      host,
      port,
      onread: { buffer: () => this.target(), callback: (n: number) => this.received(n) },
    });
    this.handshake = new HandshakeReader(this.socket, true);
  }

  private target(): Uint8Array {
    this.lastTarget = this.frames ? this.frames.target() : this.handshakeBuffer;
    return this.lastTarget;
  }

  private received(n: number): boolean {
    try {
      // Node asks for the next buffer right after each read, so a read may still land in the
      // handshake buffer after the handshake: judge by where the bytes went, not by the state now.
      const landed = this.lastTarget!;
      if (landed !== this.handshakeBuffer) this.frames!.advance(n);
      else if (this.frames) this.frames.push(landed.subarray(0, n));
      else this.handshake.push(landed.subarray(0, n));
    } catch (error) {
      this.transport.peerFailed(this.peer, `bad data from rank ${this.peer}: ${(error as Error).message}`, true);
      this.socket.destroy();
    }
    return true;
  }

  async open(hello: Record<string, unknown>, token: string, timeoutMs: number): Promise<void> {
    const leftover = await connectAndAuthenticate(this.socket, token, { kind: 'peer', ...hello }, timeoutMs, this.handshake);
    this.frames = new FrameReader((header) => this.transport.router.route(this.peer, header));
    this.socket.on('close', () => this.transport.peerFailed(this.peer, 'connection closed by peer or network', false));
    this.socket.on('error', (error) => this.transport.peerFailed(this.peer, `socket error: ${error.message}`, false));
    try {
      this.frames.push(leftover);
    } catch (error) {
      this.transport.peerFailed(this.peer, `bad data from rank ${this.peer}: ${(error as Error).message}`, true);
    }
  }
}

/** A connection `peer` dialed to this rank; this rank only sends frames on it. */
export class SendLink {
  constructor(
    readonly peer: number,
    readonly socket: net.Socket,
    transport: Transport,
  ) {
    socket.on('data', () => {
      transport.peerFailed(peer, `rank ${peer} sent data on a connection it only receives on`, true);
      socket.destroy();
    });
    socket.on('close', () => transport.peerFailed(peer, 'connection closed by peer or network', false));
    socket.on('error', (error) => transport.peerFailed(peer, `socket error: ${error.message}`, false));
  }

  /** Send one frame; resolves once Node has handed the bytes to the kernel (the body may then change). */
  send(header: FrameHeader, body?: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (error?: Error | null) => (error ? reject(new TransportError(`send to rank ${this.peer} failed: ${error.message}`, this.peer)) : resolve());
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
  private readonly sendLinks = new Map<number, Promise<SendLink>>();
  private readonly awaitingDial = new Map<number, { resolve: (link: SendLink) => void; reject: (e: Error) => void }>();
  private readonly sockets = new Set<net.Socket>();
  private readonly failedPeers = new Set<number>();
  private closed = false;

  private constructor(
    readonly options: TransportOptions,
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(options: TransportOptions): Promise<Transport> {
    const server = net.createServer();
    const holder: { transport?: Transport } = {};
    server.on('connection', (socket) => {
      if (holder.transport) holder.transport.accept(socket);
      else socket.destroy(); // not yet published: nobody can legitimately know this port
    });
    await listen(server, options.host, options.port, `rank ${options.rank} transport`);
    const { port } = server.address() as net.AddressInfo;
    holder.transport = new Transport(options, server, port);
    await options.store.set(peerAddressKey(options.rank), JSON.stringify({ host: options.host, port }));
    return holder.transport;
  }

  get rank(): number {
    return this.options.rank;
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.track(socket);
    const from = `${socket.remoteAddress}:${socket.remotePort}`;
    const { token, connectTimeoutMs, rank, worldSize, log } = this.options;
    acceptHandshake(socket, token, connectTimeoutMs)
      .then(({ hello, leftover }) => {
        const peer = hello.rank;
        if (hello.kind !== 'peer' || typeof peer !== 'number' || !Number.isInteger(peer)) {
          throw new TransportError(`expected a peer hello, got ${JSON.stringify(hello)}`);
        }
        if (hello.worldSize !== worldSize) throw new TransportError(`rank ${peer} thinks the world size is ${String(hello.worldSize)}, this rank ${worldSize}`);
        if (peer < 0 || peer >= worldSize || peer === rank) throw new TransportError(`rank ${peer} is not another rank of this world of ${worldSize}`);
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
        log(`webtron rank ${rank}: refused connection from ${from}: ${error.message}`);
        socket.destroy();
      });
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
    const { store, token, connectTimeoutMs, rank, worldSize } = this.options;
    const address = JSON.parse((await store.get(peerAddressKey(peer), connectTimeoutMs)).toString('utf8')) as { host: string; port: number };
    const link = new ReceiveLink(peer, address.host, address.port, this);
    this.track(link.socket);
    try {
      await link.open({ rank, worldSize }, token, connectTimeoutMs);
      return link;
    } catch (error) {
      link.socket.destroy();
      throw new TransportError(`cannot connect to rank ${peer} at ${address.host}:${address.port}: ${(error as Error).message}`, peer);
    }
  }

  /** Report an ended or broken peer once; its connection is destroyed. */
  peerFailed(peer: number, reason: string, fatal: boolean): void {
    if (this.failedPeers.has(peer) || this.closed) return;
    this.failedPeers.add(peer);
    for (const links of [this.receiveLinks, this.sendLinks] as Map<number, Promise<{ socket: net.Socket }>>[]) {
      void links.get(peer)?.then((l) => l.socket.destroy(), () => undefined);
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
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
