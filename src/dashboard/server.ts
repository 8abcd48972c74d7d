/**
 * `webtron dashboard`: a small read-only web server over run folders. It serves one page (the charts
 * draw with uPlot from node_modules, so nothing is fetched from the internet), the runs' metrics as
 * JSON, and server-sent events: the whole state on connecting, then the lines their `metrics.jsonl`
 * and `timing-rank<r>.jsonl` gain.
 *
 * Only these paths exist: `/`, `/uplot.js`, `/uplot.css`, `/api/state` and `/api/events`. No URL
 * maps to a file, so `/../` and absolute paths are 404 like every other path; the run folders are
 * the ones named at start and are read, never written.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { hostPort } from '../collectives/transport.js';
import { basename, dirname, join, resolve } from 'node:path';
import { DASHBOARD_PAGE } from './page.js';

export interface DashboardOptions {
  /** Run folders (each with metrics.jsonl, possibly still growing). */
  runs: string[];
  /** Default 127.0.0.1: only this machine. */
  host?: string;
  /** Default 6007; 0 picks a free port. */
  port?: number;
  /** How often the files are checked for new lines, ms (default 500). */
  pollMs?: number;
}

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

/** A file read as it grows: the complete lines appended since the last read. */
class GrowingLines {
  private offset = 0;
  private carry = '';

  constructor(readonly path: string) {}

  read(): unknown[] {
    if (!existsSync(this.path)) return [];
    const size = statSync(this.path).size;
    if (size < this.offset) [this.offset, this.carry] = [0, '']; // replaced: read it again
    if (size === this.offset) return [];
    const fd = openSync(this.path, 'r');
    try {
      const bytes = Buffer.alloc(size - this.offset);
      readSync(fd, bytes, 0, bytes.length, this.offset);
      this.offset = size;
      const text = this.carry + bytes.toString('utf8');
      const lines = text.split('\n');
      this.carry = lines.pop() ?? '';
      return lines
        .filter((l) => l.trim())
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as unknown];
          } catch {
            return []; // a line being written by a crashed run: skip it
          }
        });
    } finally {
      closeSync(fd);
    }
  }
}

interface RunState {
  id: number;
  name: string;
  dir: string;
  metrics: GrowingLines;
  timing: Map<string, GrowingLines>;
  data: { metrics: unknown[]; timing: unknown[] };
}

const readJson = (path: string): unknown => {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch {
    return null;
  }
};

/** What the page needs of a run besides its lines: its config's reference entropies and summary. */
function runInfo(run: RunState): Record<string, unknown> {
  const config = readJson(join(run.dir, 'config.json')) as Record<string, unknown> | null;
  return {
    id: run.id,
    name: run.name,
    unigram: config?.unigram_entropy ?? null,
    bigram: config?.bigram_entropy ?? null,
    params: config?.params ?? null,
    summary: readJson(join(run.dir, 'summary.json')),
  };
}

/** Start the server; resolves once it listens. */
export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const require = createRequire(import.meta.url);
  const uplot = dirname(require.resolve('uplot/package.json'));
  const assets: Record<string, { type: string; body: Buffer | string }> = {
    '/': { type: 'text/html; charset=utf-8', body: DASHBOARD_PAGE },
    '/uplot.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(join(uplot, 'dist', 'uPlot.iife.min.js')) },
    '/uplot.css': { type: 'text/css; charset=utf-8', body: readFileSync(join(uplot, 'dist', 'uPlot.min.css')) },
  };
  const runs: RunState[] = options.runs.map((dir, id) => ({
    id,
    name: basename(resolve(dir)),
    dir,
    metrics: new GrowingLines(join(dir, 'metrics.jsonl')),
    timing: new Map(),
    data: { metrics: [], timing: [] },
  }));
  const clients = new Set<ServerResponse>();

  /** New lines of every run, appended to its data and sent to every open page. */
  const poll = (): void => {
    for (const run of runs) {
      if (existsSync(run.dir)) {
        for (const f of readdirSync(run.dir)) {
          if (/^timing-rank\d+\.jsonl$/.test(f) && !run.timing.has(f)) run.timing.set(f, new GrowingLines(join(run.dir, f)));
        }
      }
      const metrics = run.metrics.read();
      const timing = [...run.timing.values()].flatMap((t) => t.read());
      if (metrics.length === 0 && timing.length === 0) continue;
      run.data.metrics.push(...metrics);
      run.data.timing.push(...timing);
      const event = `data: ${JSON.stringify({ run: run.id, metrics, timing })}\n\n`;
      for (const c of clients) c.write(event);
    }
  };
  poll();
  const timer = setInterval(poll, options.pollMs ?? 500);
  const keepAlive = setInterval(() => {
    for (const c of clients) c.write(': keep-alive\n\n');
  }, 15_000);

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://dashboard').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain; charset=utf-8', allow: 'GET, HEAD' }).end('read-only\n');
      return;
    }
    const asset = assets[path];
    if (asset) {
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-store' }).end(asset.body);
      return;
    }
    const state = () => JSON.stringify({ runs: runs.map((r) => ({ ...runInfo(r), ...r.data })) });
    if (path === '/api/state') {
      poll();
      const body = state();
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(body);
      return;
    }
    if (path === '/api/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      // The whole state first, then every new line: nothing falls between the two.
      poll();
      res.write(`event: state\ndata: ${state()}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
  });
  const host = options.host ?? '127.0.0.1';
  const asked = options.port ?? 6007;
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(asked, host, () => done());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : asked;
  return {
    url: `http://${hostPort(host, port)}/`,
    close: async () => {
      clearInterval(timer);
      clearInterval(keepAlive);
      for (const c of clients) c.end();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}
