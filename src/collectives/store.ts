/**
 * The rendezvous store: a TCP key-value server (run by the launcher or by rank 0) and its client.
 * Connections are authenticated with the job token; requests are length-prefixed JSON with binary
 * values in base64. Blocking reads (`get`, `wait`) park on the server until the keys exist or the
 * timeout passes; a timeout names the keys it waited for.
 */
import net from 'node:net';
import { type ByteStream, connectAndAuthenticate, dialHandshake, HandshakeGate } from './auth.js';
import { StoreError, TransportError } from './errors.js';
import { rateLimitedLog } from './log-limit.js';

/** Bounds on what a client may store or ask, so that no request can exhaust the store host. */
export const STORE_LIMITS = {
  keyBytes: 1024,
  valueBytes: 16 << 20,
  keysPerRequest: 4096,
  messageBytes: 64 << 20,
  timeoutMs: 24 * 3600_000,
} as const;

type Request =
  | { id: number; cmd: 'set'; key: string; value: string }
  | { id: number; cmd: 'get'; keys: string[]; timeoutMs: number }
  | { id: number; cmd: 'wait'; keys: string[]; timeoutMs: number }
  | { id: number; cmd: 'add'; key: string; delta: number }
  | { id: number; cmd: 'compareSet'; key: string; expected: string | null; desired: string }
  | { id: number; cmd: 'delete'; key: string }
  | { id: number; cmd: 'check'; keys: string[] }
  | { id: number; cmd: 'numKeys' };

type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

type RequestBody = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/**
 * A request as received, checked field by field (a token holder can still send anything): the
 * request, or a one-line reason. Pure.
 */
export function validateRequest(message: unknown): { request: Request } | { id: number | null; error: string } {
  if (typeof message !== 'object' || message === null || Array.isArray(message))
    return { id: null, error: 'a store request must be a JSON object' };
  const m = message as Record<string, unknown>;
  const id = typeof m.id === 'number' && Number.isSafeInteger(m.id) ? m.id : null;
  if (id === null) return { id: null, error: `field 'id' must be an integer, got ${JSON.stringify(m.id)?.slice(0, 40)}` };
  const bad = (error: string) => ({ id, error });
  const key = (name: string, v: unknown): string | null => {
    if (typeof v !== 'string') return `field '${name}' must be a string`;
    if (Buffer.byteLength(v) > STORE_LIMITS.keyBytes) return `field '${name}' is longer than ${STORE_LIMITS.keyBytes} B`;
    return null;
  };
  const value = (name: string, v: unknown): string | null => {
    if (typeof v !== 'string') return `field '${name}' must be a base64 string`;
    if ((v.length * 3) / 4 > STORE_LIMITS.valueBytes) return `field '${name}' is larger than ${STORE_LIMITS.valueBytes} B`;
    return null;
  };
  const keys = (v: unknown): string | null => {
    if (!Array.isArray(v) || v.length === 0) return "field 'keys' must be a non-empty array of strings";
    if (v.length > STORE_LIMITS.keysPerRequest) return `field 'keys' holds more than ${STORE_LIMITS.keysPerRequest} keys`;
    for (const k of v) {
      const e = key('keys', k);
      if (e) return e;
    }
    return null;
  };
  const timeout = (v: unknown): string | null =>
    typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= STORE_LIMITS.timeoutMs
      ? null
      : `field 'timeoutMs' must be a number of milliseconds in 0..${STORE_LIMITS.timeoutMs}`;
  let error: string | null;
  switch (m.cmd) {
    case 'set':
      error = key('key', m.key) ?? value('value', m.value);
      break;
    case 'get':
    case 'wait':
      error = keys(m.keys) ?? timeout(m.timeoutMs);
      break;
    case 'add':
      error =
        key('key', m.key) ?? (typeof m.delta === 'number' && Number.isSafeInteger(m.delta) ? null : "field 'delta' must be an integer");
      break;
    case 'compareSet':
      error = key('key', m.key) ?? (m.expected === null ? null : value('expected', m.expected)) ?? value('desired', m.desired);
      break;
    case 'delete':
      error = key('key', m.key);
      break;
    case 'check':
      error = keys(m.keys);
      break;
    case 'numKeys':
      error = null;
      break;
    default:
      error = `unknown store command ${JSON.stringify(m.cmd)?.slice(0, 40)}`;
  }
  return error ? bad(error) : { request: m as unknown as Request };
}

/** Length-prefixed JSON messages over a socket. */
class MessageChannel {
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    private readonly socket: ByteStream,
    private readonly onMessage: (message: unknown) => void,
    private readonly onBroken: (reason: string) => void,
    leftover: Buffer,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('close', () => onBroken('connection closed'));
    socket.on('error', (e) => onBroken(e.message));
    if (leftover.byteLength > 0) this.receive(leftover);
  }

  send(message: unknown): void {
    const body = Buffer.from(JSON.stringify(message), 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32LE(body.byteLength);
    this.socket.write(Buffer.concat([length, body]));
  }

  private receive(chunk: Buffer): void {
    this.pending = this.pending.byteLength ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.byteLength >= 4) {
      const length = this.pending.readUInt32LE(0);
      if (length > STORE_LIMITS.messageBytes) {
        this.onBroken(`store message of ${length} B is too large`);
        this.socket.destroy();
        return;
      }
      if (this.pending.byteLength < 4 + length) return;
      const body = this.pending.subarray(4, 4 + length);
      this.pending = this.pending.subarray(4 + length);
      let message: unknown;
      try {
        message = JSON.parse(body.toString('utf8'));
      } catch {
        this.onBroken('store message is not JSON');
        this.socket.destroy();
        return;
      }
      this.onMessage(message);
    }
  }
}

export interface StoreServerOptions {
  host: string;
  /** 0: chosen by the OS. */
  port: number;
  token: string;
  /** Handshake deadline for a new connection (default 10 s). */
  authTimeoutMs?: number;
  /** Connections still authenticating at once; more are closed at once (default 256). */
  maxPendingConnections?: number;
  /** Where refused connections are reported (default: stderr), at most 10 lines a minute. */
  log?: (line: string) => void;
}

interface Waiter {
  keys: string[];
  done: () => void;
}

export class StoreServer {
  private readonly data = new Map<string, Buffer>();
  private waiters: Waiter[] = [];
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(options: StoreServerOptions): Promise<StoreServer> {
    const log = rateLimitedLog(options.log ?? ((line: string) => process.stderr.write(`${line}\n`)), { what: 'refused store connections' });
    const authTimeout = options.authTimeoutMs ?? 10_000;
    const gate = new HandshakeGate(options.maxPendingConnections ?? 256);
    const server = net.createServer();
    let store: StoreServer | null = null;
    server.on('connection', (socket) => {
      const from = `${socket.remoteAddress}:${socket.remotePort}`;
      const handshake = gate.accept(socket, options.token, authTimeout);
      if (!handshake) {
        log(`webtron store: refused connection from ${from}: ${gate.cap} connections are already authenticating`);
        socket.destroy();
        return;
      }
      socket.setNoDelay(true);
      store?.sockets.add(socket);
      socket.on('close', () => store?.sockets.delete(socket));
      handshake
        .then(({ hello, leftover }) => {
          if (hello.kind !== 'store') throw new TransportError(`expected a store client, got '${String(hello.kind).slice(0, 40)}'`);
          store?.serve(socket, leftover);
        })
        .catch((error: Error) => {
          log(`webtron store: refused connection from ${from}: ${error.message}`);
          socket.destroy();
        });
    });
    await listen(server, options.host, options.port, 'store');
    const address = server.address() as net.AddressInfo;
    store = new StoreServer(server, options.host, address.port);
    return store;
  }

  private serve(socket: net.Socket, leftover: Buffer): void {
    const channel = new MessageChannel(
      socket,
      (message) => {
        const checked = validateRequest(message);
        if (!('request' in checked)) return channel.send({ id: checked.id ?? -1, ok: false, error: `bad request: ${checked.error}` });
        try {
          this.handle(channel, checked.request);
        } catch (error) {
          // Never let one request take the store host down.
          channel.send({ id: checked.request.id, ok: false, error: `request failed: ${(error as Error).message}` });
        }
      },
      () => undefined,
      leftover,
    );
  }

  private handle(channel: MessageChannel, request: Request): void {
    const reply = (result: unknown) => channel.send({ id: request.id, ok: true, result } satisfies Response);
    const fail = (error: string) => channel.send({ id: request.id, ok: false, error } satisfies Response);
    switch (request.cmd) {
      case 'set':
        this.data.set(request.key, Buffer.from(request.value, 'base64'));
        this.wakeWaiters();
        reply(null);
        return;
      case 'get':
      case 'wait':
        this.whenPresent(
          request.keys,
          request.timeoutMs,
          () => {
            reply(request.cmd === 'get' ? request.keys.map((k) => this.data.get(k)!.toString('base64')) : null);
          },
          (missing) => fail(`timed out after ${request.timeoutMs} ms waiting for keys: ${missing.join(', ')}`),
        );
        return;
      case 'add': {
        const current = this.data.get(request.key);
        const value = (current === undefined ? 0 : Number(current.toString('utf8'))) + request.delta;
        this.data.set(request.key, Buffer.from(String(value), 'utf8'));
        this.wakeWaiters();
        reply(value);
        return;
      }
      case 'compareSet': {
        const current = this.data.get(request.key);
        const currentB64 = current === undefined ? null : current.toString('base64');
        if (currentB64 === request.expected) {
          this.data.set(request.key, Buffer.from(request.desired, 'base64'));
          this.wakeWaiters();
          reply(request.desired);
          return;
        }
        reply(currentB64);
        return;
      }
      case 'delete':
        reply(this.data.delete(request.key));
        return;
      case 'check':
        reply(request.keys.map((k) => this.data.has(k)));
        return;
      case 'numKeys':
        reply(this.data.size);
        return;
      default:
        fail(`unknown store command '${(request as { cmd: string }).cmd}'`);
        return;
    }
  }

  private whenPresent(keys: string[], timeoutMs: number, done: () => void, timedOut: (missing: string[]) => void): void {
    if (keys.every((k) => this.data.has(k))) {
      done();
      return;
    }
    const waiter: Waiter = {
      keys,
      done: () => {
        clearTimeout(timer);
        done();
      },
    };
    const timer = setTimeout(() => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      timedOut(keys.filter((k) => !this.data.has(k)));
    }, timeoutMs);
    this.waiters.push(waiter);
  }

  private wakeWaiters(): void {
    const ready = this.waiters.filter((w) => w.keys.every((k) => this.data.has(k)));
    if (ready.length === 0) return;
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.done();
  }

  /** A key's value as the store holds it now, for the process that serves it (the launcher relaying a browser rank's dial). */
  peek(key: string): Buffer | undefined {
    return this.data.get(key);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Listen, turning EADDRINUSE into a clear error. */
export function listen(server: net.Server, host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(
        new TransportError(
          error.code === 'EADDRINUSE'
            ? `cannot listen for the ${what} on ${host}:${port}: port already in use; pick another port (MASTER_PORT / --port) or stop what holds it`
            : `cannot listen for the ${what} on ${host}:${port}: ${error.message}`,
        ),
      );
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host, port, exclusive: true });
  });
}

export interface StoreClientOptions {
  host: string;
  port: number;
  token: string;
  /** How long to keep retrying the first connection (the server may start later). Default 60 s. */
  connectTimeoutMs?: number;
  /** Default timeout of blocking reads. Default 300 s. */
  timeoutMs?: number;
  /**
   * Another way to the store than TCP to host:port (a browser tab's WebSocket, which the launcher
   * joins to the store's port): resolves with a connected byte stream.
   */
  open?: () => Promise<ByteStream>;
}

export class StoreClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; what: string }>();
  private broken: string | null = null;

  private constructor(
    private readonly socket: ByteStream,
    private readonly channel: MessageChannel,
    readonly timeoutMs: number,
    readonly address: string,
  ) {}

  static async connect(options: StoreClientOptions): Promise<StoreClient> {
    const deadline = Date.now() + (options.connectTimeoutMs ?? 60_000);
    const address = `${options.host}:${options.port}`;
    let lastError = '';
    for (let delay = 20; Date.now() < deadline; delay = Math.min(delay * 2, 500)) {
      let socket: ByteStream | null = null;
      try {
        const timeoutMs = Math.max(1000, deadline - Date.now());
        let leftover: Buffer;
        if (options.open) {
          socket = await options.open();
          leftover = await dialHandshake(socket, options.token, { kind: 'store' }, timeoutMs);
        } else {
          const tcp = net.connect({ host: options.host, port: options.port });
          tcp.setNoDelay(true);
          socket = tcp;
          leftover = await connectAndAuthenticate(tcp, options.token, { kind: 'store' }, timeoutMs);
        }
        // Created before the channel so that its handlers can reach it.
        const holder: { client?: StoreClient } = {};
        const channel = new MessageChannel(
          socket,
          (m) => holder.client?.onResponse(m as Response),
          (reason) => holder.client?.fail(reason),
          leftover,
        );
        holder.client = new StoreClient(socket, channel, options.timeoutMs ?? 300_000, address);
        return holder.client;
      } catch (error) {
        socket?.destroy();
        lastError = (error as Error).message;
        // A store that sent its challenge and then hung up refused our token: retrying cannot help.
        if (
          error instanceof TransportError &&
          (/^refused after the challenge/.test(lastError) || !/closed during authentication/.test(lastError))
        ) {
          throw new StoreError(`store at ${address} refused this client: ${lastError}`);
        }
        await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      }
    }
    throw new StoreError(
      `cannot reach the store at ${address} within ${options.connectTimeoutMs ?? 60_000} ms (${lastError}); is MASTER_ADDR/MASTER_PORT right and rank 0 or the launcher running?`,
    );
  }

  private onResponse(response: Response): void {
    const waiter = this.pending.get(response.id);
    if (!waiter) return;
    this.pending.delete(response.id);
    if (response.ok) waiter.resolve(response.result);
    else waiter.reject(new StoreError(`store ${waiter.what}: ${response.error}`));
  }

  private fail(reason: string): void {
    if (this.broken) return;
    this.broken = reason;
    for (const [, w] of this.pending) w.reject(new StoreError(`store ${w.what}: connection to ${this.address} lost (${reason})`));
    this.pending.clear();
  }

  private request<T>(body: RequestBody, what: string, clientTimeoutMs?: number): Promise<T> {
    if (this.broken) return Promise.reject(new StoreError(`store ${what}: connection to ${this.address} lost (${this.broken})`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      if (clientTimeoutMs !== undefined) {
        // The server answers a timed-out wait itself; this only guards against a server that vanished.
        timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new StoreError(`store ${what}: no answer from ${this.address} within ${clientTimeoutMs} ms`));
        }, clientTimeoutMs);
      }
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        what,
      });
      this.channel.send({ ...body, id });
    });
  }

  set(key: string, value: string | Uint8Array): Promise<void> {
    return this.request({ cmd: 'set', key, value: toB64(value) }, `set('${key}')`);
  }

  /** The value of `key`, waiting up to `timeoutMs` for it to be set. */
  async get(key: string, timeoutMs = this.timeoutMs): Promise<Buffer> {
    const [value] = await this.getMany([key], timeoutMs);
    return value!;
  }

  async getMany(keys: string[], timeoutMs = this.timeoutMs): Promise<Buffer[]> {
    const values = await this.request<string[]>({ cmd: 'get', keys, timeoutMs }, `get(${keys.join(', ')})`, timeoutMs + 5000);
    return values.map((v) => Buffer.from(v, 'base64'));
  }

  /** Wait until every key is set. The timeout error lists the missing keys. */
  wait(keys: string[], timeoutMs = this.timeoutMs): Promise<void> {
    return this.request({ cmd: 'wait', keys, timeoutMs }, `wait(${keys.join(', ')})`, timeoutMs + 5000);
  }

  /** Atomically add `delta` to the integer at `key` (0 when absent); returns the new value. */
  add(key: string, delta: number): Promise<number> {
    return this.request({ cmd: 'add', key, delta }, `add('${key}')`);
  }

  /**
   * Set `key` to `desired` if its current value is `expected` (null: absent). Returns the value now
   * stored: `desired` on success, the current value otherwise (null when absent).
   */
  async compareSet(key: string, expected: string | Uint8Array | null, desired: string | Uint8Array): Promise<Buffer | null> {
    const result = await this.request<string | null>(
      { cmd: 'compareSet', key, expected: expected === null ? null : toB64(expected), desired: toB64(desired) },
      `compareSet('${key}')`,
    );
    return result === null ? null : Buffer.from(result, 'base64');
  }

  delete(key: string): Promise<boolean> {
    return this.request({ cmd: 'delete', key }, `delete('${key}')`);
  }

  /** Which of `keys` are set, without waiting. */
  check(keys: string[]): Promise<boolean[]> {
    return this.request({ cmd: 'check', keys }, `check(${keys.length} keys)`);
  }

  numKeys(): Promise<number> {
    return this.request({ cmd: 'numKeys' }, 'numKeys()');
  }

  close(): void {
    this.fail('closed by this client');
    this.socket.destroy();
  }
}

function toB64(value: string | Uint8Array): string {
  return (typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength)).toString(
    'base64',
  );
}
