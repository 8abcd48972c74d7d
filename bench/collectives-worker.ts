/**
 * One rank of `npm run bench -- collectives` (spawned by bench/collectives.ts), or one end of the
 * plain-socket wire measurement. Prints JSON lines on stdout.
 *
 *   collectives-worker.js ring '{"sizes":[...],"ops":[...]}'     (RANK, WORLD_SIZE, MASTER_* set)
 *   collectives-worker.js p2p-listen BYTES MODE                   prints {"port"} then measures
 *   collectives-worker.js p2p-dial BYTES MODE PORT
 */
import net from 'node:net';
import { initProcessGroup } from '../src/collectives/init.js';
import { hostFloat32 } from '../src/collectives/simd.js';

const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

function runsFor(bytes: number): { warmup: number; runs: number } {
  if (bytes >= 64 << 20) return { warmup: 1, runs: 5 };
  if (bytes >= 4 << 20) return { warmup: 2, runs: 10 };
  return { warmup: 5, runs: 30 };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function ring(config: { sizes: number[]; ops: string[] }): Promise<void> {
  const d = await initProcessGroup({ timeoutMs: 300_000 });
  const { group } = d;
  const n = d.info.worldSize;
  for (const bytes of config.sizes) {
    const elements = Math.max(n, Math.floor(bytes / 4 / n) * n);
    // Host buffers as DDP allocates them: in WASM memory, where reductions run as SIMD.
    const data = hostFloat32(elements).fill(1);
    for (const op of config.ops) {
      const { warmup, runs } = runsFor(bytes);
      const samples: number[] = [];
      for (let i = 0; i < warmup + runs; i++) {
        await group.barrier();
        const t0 = performance.now();
        if (op === 'all_reduce') await group.allReduce(data);
        else if (op === 'reduce_scatter') await group.reduceScatter(data);
        else await group.allGather(data);
        if (i >= warmup) samples.push(performance.now() - t0);
      }
      if (d.info.rank === 0) say({ op, bytes: elements * 4, ms: median(samples) });
    }
  }
  await group.barrier();
  await d.close();
}

/** Stream `bytes` over `socket` with large writes, honouring backpressure. */
async function stream(socket: net.Socket, bytes: number): Promise<void> {
  const block = Buffer.alloc(Math.min(bytes, 4 << 20), 7);
  let left = bytes;
  while (left > 0) {
    const piece = left >= block.byteLength ? block : block.subarray(0, left);
    left -= piece.byteLength;
    if (!socket.write(piece)) await new Promise((r) => socket.once('drain', r));
  }
}

/** Counts every byte a socket receives; `until(total)` resolves once that many have arrived in all. */
class ByteCounter {
  private got = 0;
  private waiters: { total: number; resolve: () => void }[] = [];

  constructor(socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.got += chunk.byteLength;
      this.waiters = this.waiters.filter((w) => (this.got >= w.total ? (w.resolve(), false) : true));
    });
  }

  get total(): number {
    return this.got;
  }

  until(total: number): Promise<void> {
    return this.got >= total ? Promise.resolve() : new Promise((resolve) => this.waiters.push({ total, resolve }));
  }
}

/**
 * One timed transfer: 'oneway' (dialer sends, listener receives and acks with one byte) or
 * 'exchange' (both send at once). Byte totals are cumulative over rounds.
 */
async function p2pRound(socket: net.Socket, counter: ByteCounter, expected: { total: number }, bytes: number, mode: string, sender: boolean): Promise<number> {
  // Line up: each side sends one byte and waits for the other's.
  socket.write(Buffer.from([1]));
  expected.total += 1;
  await counter.until(expected.total);
  const t0 = performance.now();
  if (mode === 'exchange') {
    expected.total += bytes;
    await Promise.all([stream(socket, bytes), counter.until(expected.total)]);
  } else if (sender) {
    expected.total += 1;
    await stream(socket, bytes);
    await counter.until(expected.total);
  } else {
    expected.total += bytes;
    await counter.until(expected.total);
    socket.write(Buffer.from([2]));
  }
  return performance.now() - t0;
}

async function p2p(role: string, bytes: number, mode: string, port?: number): Promise<void> {
  let socket: net.Socket;
  if (role === 'p2p-listen') {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    say({ port: (server.address() as net.AddressInfo).port });
    socket = await new Promise<net.Socket>((r) => server.once('connection', r));
    server.close();
  } else {
    socket = net.connect({ host: '127.0.0.1', port: port! });
    await new Promise((r) => socket.once('connect', r));
  }
  socket.setNoDelay(true);
  const { warmup, runs } = runsFor(bytes);
  const samples: number[] = [];
  const counter = new ByteCounter(socket);
  const expected = { total: 0 };
  for (let i = 0; i < warmup + runs; i++) {
    const ms = await p2pRound(socket, counter, expected, bytes, mode, role === 'p2p-dial');
    if (i >= warmup) samples.push(ms);
  }
  if (role === 'p2p-dial') say({ mode, bytes, ms: median(samples) });
  socket.end();
}

const [role, arg1, arg2, arg3] = process.argv.slice(2);
const main = role === 'ring' ? ring(JSON.parse(arg1!)) : p2p(role!, Number(arg1), arg2!, arg3 ? Number(arg3) : undefined);
main.then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`${error.stack ?? error.message}\n`);
    process.exit(1);
  },
);
