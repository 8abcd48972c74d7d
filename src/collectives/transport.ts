/**
 * Authenticated, framed TCP connections between ranks. Each rank listens on one port (chosen by
 * the OS unless given) and publishes its address through the store; for each pair the lower rank
 * dials. The transport knows nothing of reductions: it hands every frame's header to a router and
 * streams the body to the sink the router returns. Any broken connection is reported once.
 */
import net from 'node:net';
import { acceptHandshake, connectAndAuthenticate } from './auth.js';
import { TransportError } from './errors.js';
import { encodeHeader, FrameParser, type FrameHeader } from './frame.js';
import { listen, type StoreClient } from './store.js';

/** Where a frame's body goes. */
export interface FrameSink {
  piece(bytes: Uint8Array, offset: number): void;
  end(): void;
}

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

export class PeerConnection {
  private readonly parser: FrameParser;
  private sink: FrameSink | null = null;

  constructor(
    readonly peer: number,
    readonly socket: net.Socket,
    leftover: Buffer,
    private readonly transport: Transport,
  ) {
    this.parser = new FrameParser(
      (header) => {
        this.sink = transport.router.route(peer, header);
      },
      (_header, piece, offset) => this.sink!.piece(piece, offset),
      () => {
        const sink = this.sink!;
        this.sink = null;
        sink.end();
      },
    );
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('close', () => transport.peerFailed(peer, 'connection closed by peer or network', false));
    socket.on('error', (error) => transport.peerFailed(peer, `socket error: ${error.message}`, false));
    if (leftover.byteLength > 0) this.receive(leftover);
  }

  private receive(chunk: Uint8Array): void {
    try {
      this.parser.push(chunk);
    } catch (error) {
      this.transport.peerFailed(this.peer, `bad data from rank ${this.peer}: ${(error as Error).message}`, true);
      this.socket.destroy();
    }
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
  private readonly connections = new Map<number, Promise<PeerConnection>>();
  private readonly awaitingDial = new Map<number, { resolve: (c: PeerConnection) => void; reject: (e: Error) => void }>();
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
        if (peer < 0 || peer >= rank) throw new TransportError(`rank ${peer} may not dial rank ${rank} (the lower rank dials)`);
        const waiting = this.awaitingDial.get(peer);
        if (this.connections.has(peer) && !waiting) throw new TransportError(`rank ${peer} is already connected`);
        const connection = new PeerConnection(peer, socket, leftover, this);
        if (waiting) {
          this.awaitingDial.delete(peer);
          waiting.resolve(connection);
        } else {
          this.connections.set(peer, Promise.resolve(connection));
        }
      })
      .catch((error: Error) => {
        log(`webtron rank ${rank}: refused connection from ${from}: ${error.message}`);
        socket.destroy();
      });
  }

  /** The connection to `peer`, made on first use. */
  peer(peer: number): Promise<PeerConnection> {
    if (this.closed) return Promise.reject(new TransportError(`transport of rank ${this.rank} is closed`, peer));
    let connection = this.connections.get(peer);
    if (!connection) {
      connection = peer > this.rank ? this.dial(peer) : new Promise((resolve, reject) => this.awaitingDial.set(peer, { resolve, reject }));
      connection.catch(() => undefined); // failures surface through the op that asked
      this.connections.set(peer, connection);
    }
    return connection;
  }

  private async dial(peer: number): Promise<PeerConnection> {
    const { store, token, connectTimeoutMs, rank, worldSize } = this.options;
    const address = JSON.parse((await store.get(peerAddressKey(peer), connectTimeoutMs)).toString('utf8')) as { host: string; port: number };
    const socket = net.connect({ host: address.host, port: address.port });
    this.track(socket);
    try {
      const leftover = await connectAndAuthenticate(socket, token, { kind: 'peer', rank, worldSize }, connectTimeoutMs);
      return new PeerConnection(peer, socket, leftover, this);
    } catch (error) {
      socket.destroy();
      throw new TransportError(`cannot connect to rank ${peer} at ${address.host}:${address.port}: ${(error as Error).message}`, peer);
    }
  }

  /** Report an ended or broken peer once; its connection is destroyed. */
  peerFailed(peer: number, reason: string, fatal: boolean): void {
    if (this.failedPeers.has(peer) || this.closed) return;
    this.failedPeers.add(peer);
    void this.connections.get(peer)?.then((c) => c.socket.destroy(), () => undefined);
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
