/**
 * One rank of `npm run bench -- collectives` (spawned by bench/collectives.ts with RANK, WORLD_SIZE,
 * MASTER_* set). Ranks 0 and 1 also hold a plain TCP socket between them; every timed round runs
 * each ring op and then the plain one-way and two-way transfers of the same bytes, so the ring and
 * the wire are measured under the same conditions. Rank 0 prints one JSON line per (op, size).
 *
 * With `gpu`, each round also times DDP's whole grad sync of a bucket of the same bytes on the GPU
 * (`finishGradSync`: readback, collective, upload, and the wait for the upload): 'grad_sync' with
 * the distributed optimizer (reduce-scatter), 'grad_sync_all_reduce' without, and
 * 'grad_sync_unpipelined', the first in chunks of 64 MiB (up to 64 MiB: read all back, reduce,
 * upload, one after another).
 */
import net from 'node:net';
import { initProcessGroup } from '../src/collectives/init.js';
import { hostFloat32 } from '../src/collectives/simd.js';
import type { StoreClient } from '../src/collectives/store.js';
import type { Collectives } from '../src/collectives/process-group.js';
import { DistributedDataParallel } from '../src/ddp/ddp.js';
import { computeLayout, lcm } from '../src/ddp/layout.js';
import { GpuContext } from '../src/gpu/context.js';
import { median } from './timing.js';

const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

function runsFor(bytes: number): { warmup: number; runs: number } {
  if (bytes >= 64 << 20) return { warmup: 2, runs: 15 };
  if (bytes >= 4 << 20) return { warmup: 2, runs: 10 };
  return { warmup: 5, runs: 30 };
}

type Config = { sizes: number[]; ops: string[]; wireMin: number; gpu?: boolean };

async function ring(config: Config): Promise<void> {
  const d = await initProcessGroup({ timeoutMs: 300_000 });
  const { group, store } = d;
  const { rank, worldSize: n } = d.info;
  const ctx = config.gpu ? await GpuContext.create() : null;
  const wires = rank <= 1 ? { plain: await wireBetween(rank, store!, 'plain'), inplace: await wireBetween(rank, store!, 'inplace') } : null;
  for (const bytes of config.sizes) {
    // With the GPU's grad syncs, every op moves a whole bucket: elements a multiple of lcm(4n, 128).
    const unit = ctx ? lcm(4 * n, 128) : n;
    const elements = Math.max(unit, Math.floor(bytes / 4 / unit) * unit);
    // Host buffers as DDP allocates them: in WASM memory, where reductions run as SIMD.
    const data = hostFloat32(elements).fill(1);
    const syncs = ctx && bytes >= config.wireMin ? gradSyncs(ctx, group, elements) : [];
    const { warmup, runs } = runsFor(bytes);
    const samples = new Map<string, number[]>();
    const record = (op: string, i: number, ms: number) => i >= warmup && samples.set(op, [...(samples.get(op) ?? []), ms]);
    for (let i = 0; i < warmup + runs; i++) {
      for (const op of config.ops) {
        await group.barrier();
        const t0 = performance.now();
        if (op === 'all_reduce') await group.allReduce(data);
        else if (op === 'reduce_scatter') await group.reduceScatter(data);
        else await group.allGather(data);
        record(op, i, performance.now() - t0);
      }
      for (const { op, ddp } of syncs) {
        ddp.zeroGradBuffer(); // a new batch; its clear is done before the clock starts
        await ctx!.sync();
        await group.barrier();
        const t0 = performance.now();
        await ddp.finishGradSync();
        record(op, i, performance.now() - t0);
      }
      if (wires && bytes >= config.wireMin) {
        for (const [kind, wire] of Object.entries(wires)) {
          for (const mode of ['oneway', 'exchange'] as const) {
            await group.barrier();
            const ms = await p2pRound(wire, elements * 4, mode, rank === 0);
            record(kind === 'plain' ? `p2p_${mode}` : `p2p_${mode}_inplace`, i, ms);
          }
        }
      }
    }
    // Every round's time too: the bench compares each op with the wire round by round.
    if (rank === 0) for (const [op, ms] of samples) say({ op, bytes: elements * 4, ms: median(ms), samples_ms: ms });
    for (const { ddp } of syncs) ddp.destroy();
  }
  await group.barrier();
  if (wires) for (const wire of Object.values(wires)) wire.close();
  await d.close();
}

/** DDP over one fp32 param of `elements`, in one bucket: with and without the distributed optimizer. */
function gradSyncs(ctx: GpuContext, group: Collectives, elements: number) {
  const model = [{ name: 'w', shape: [elements], dtype: 'float32' as const, gradDtype: 'float32' as const }];
  return [
    { op: 'grad_sync', distributedOptimizer: true },
    { op: 'grad_sync_unpipelined', distributedOptimizer: true, syncChunkBytes: 64 << 20 },
    { op: 'grad_sync_all_reduce', distributedOptimizer: false },
  ].map(({ op, distributedOptimizer, syncChunkBytes }) => {
    const layout = computeLayout(model, { dataParallelSize: group.worldSize, distributedOptimizer, bucketSize: elements });
    return { op, ddp: new DistributedDataParallel(ctx, group, layout, syncChunkBytes ? { syncChunkBytes } : {}) };
  });
}

interface Wire {
  /** Where this rank writes. */
  send: net.Socket;
  /** What this rank has received in all. */
  counter: ByteCounter;
  expected: { total: number };
  close(): void;
}

/**
 * Ranks 0 and 1: plain sockets between them, large writes, no framing. 'plain': one socket, read
 * with Node's default 'data' events (the baseline). 'inplace': each side dials the other
 * and reads with onread into one reused buffer, the cheapest way Node can receive.
 */
async function wireBetween(rank: number, store: StoreClient, kind: 'plain' | 'inplace'): Promise<Wire> {
  // This rank's address (WEBTRON_BENCH_ADDR on hosts of their own, `--hosts`), published with the port.
  const own = process.env.WEBTRON_BENCH_ADDR || '127.0.0.1';
  const listenOnce = async (key: string) => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, own, r));
    await store.set(key, `${own} ${(server.address() as net.AddressInfo).port}`);
    const socket = await new Promise<net.Socket>((r) => server.once('connection', r));
    server.close();
    return socket;
  };
  const peerOf = async (key: string) => {
    const [host, port] = (await store.get(key)).toString().split(' ');
    return { host: host!, port: Number(port) };
  };
  if (kind === 'plain') {
    let socket: net.Socket;
    if (rank === 1) socket = await listenOnce('bench/wire-plain');
    else {
      socket = net.connect(await peerOf('bench/wire-plain'));
      await new Promise((r) => socket.once('connect', r));
    }
    socket.setNoDelay(true);
    const counter = new ByteCounter();
    socket.on('data', (chunk: Buffer) => counter.count(chunk.byteLength));
    return { send: socket, counter, expected: { total: 0 }, close: () => socket.end() };
  }
  const counter = new ByteCounter();
  const accepted = listenOnce(`bench/wire-inplace/${rank}`);
  const readBuffer = Buffer.alloc(4 << 20);
  const dialed = net.connect({
    ...(await peerOf(`bench/wire-inplace/${1 - rank}`)),
    onread: {
      buffer: readBuffer,
      callback: (n: number) => {
        counter.count(n);
        return true;
      },
    },
  });
  await new Promise((r) => dialed.once('connect', r));
  const send = await accepted;
  send.setNoDelay(true);
  return {
    send,
    counter,
    expected: { total: 0 },
    close: () => {
      send.end();
      dialed.end();
    },
  };
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

  count(n: number): void {
    this.got += n;
    const ready = this.waiters.filter((w) => this.got >= w.total);
    this.waiters = this.waiters.filter((w) => this.got < w.total);
    for (const w of ready) w.resolve();
  }

  until(total: number): Promise<void> {
    return this.got >= total ? Promise.resolve() : new Promise((resolve) => this.waiters.push({ total, resolve }));
  }
}

/**
 * One timed transfer: 'oneway' (dialer sends, listener receives and acks with one byte) or
 * 'exchange' (both send at once). Byte totals are cumulative over rounds.
 */
async function p2pRound(wire: Wire, bytes: number, mode: string, sender: boolean): Promise<number> {
  const { send: socket, counter, expected } = wire;
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

ring(JSON.parse(process.argv[2]!) as Config).then(
  () => process.exit(0),
  (error: Error) => {
    process.stderr.write(`${error.stack ?? error.message}\n`);
    process.exit(1);
  },
);
