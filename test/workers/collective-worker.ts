/**
 * One rank of a collectives test job, as its own process (spawned by test/collectives/*.test.ts
 * with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and WEBTRON_JOB_TOKEN set). Every rank's input is
 * a deterministic function of (rank, salt, index), so each rank checks its result against direct
 * sums of all ranks' inputs. Prints one JSON object per line on stdout.
 */
import { initProcessGroup, type Distributed } from '../../src/collectives/init.js';
import type { CollectiveData } from '../../src/collectives/process-group.js';
import { hostFloat32 } from '../../src/collectives/simd.js';
import { float32ToWords, wordsToFloat32, type HalfDtype, type ReduceOp } from '../../src/collectives/reduce.js';
import { bf16Reference, bf16WireAtTwo } from '../helpers/bf16.js';

const scenario = process.argv[2] ?? 'matrix';
const params = JSON.parse(process.argv[3] ?? '{}') as { big?: number; loopMs?: number; elements?: number; iterations?: number };

function say(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Integer-valued inputs in [-half, half]: sums over a few ranks are exact in fp32 (and fp16/bf16 for small half). */
function input(rank: number, salt: number, length: number, half: number): Float32Array {
  const out = new Float32Array(length);
  const span = 2 * half + 1;
  for (let i = 0; i < length; i++)
    out[i] = (((Math.imul(i, 2654435761) + Math.imul(rank + 1, 40503) + Math.imul(salt, 977)) >>> 0) % span) - half;
  return out;
}

function expectedReduction(world: number, salt: number, length: number, half: number, op: ReduceOp): Float32Array {
  const acc = input(0, salt, length, half);
  for (let r = 1; r < world; r++) {
    const x = input(r, salt, length, half);
    for (let i = 0; i < length; i++) acc[i] = op === 'max' ? Math.max(acc[i]!, x[i]!) : acc[i]! + x[i]!;
  }
  if (op === 'avg') for (let i = 0; i < length; i++) acc[i] = Math.fround(acc[i]! * (1 / world));
  return acc;
}

function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) return `at ${i}: got ${got[i]}, want ${want[i]}`;
  }
  return null;
}

/** The world-2 result of a bf16-wire reduction over whole buffers (chunk 0 owned by rank 0). */
function bf16WireAtTwoOf(inputs: Float32Array[], op: 'reduceScatter' | 'allReduce', scale: number): Float32Array {
  const length = inputs[0]!.length;
  return Float32Array.from({ length }, (_, i) => {
    const owner = i < Math.floor(length / 2) ? 0 : 1;
    return bf16WireAtTwo(inputs[owner]![i]!, inputs[1 - owner]![i]!, scale, op);
  });
}

function asWords(values: Float32Array, dtype: HalfDtype): Uint16Array {
  const words = new Uint16Array(values.length);
  float32ToWords(values, dtype, words);
  return words;
}

async function check(name: string, run: () => Promise<string | null>): Promise<void> {
  const mismatch = await run();
  say({ check: name, ok: mismatch === null, detail: mismatch });
}

async function matrix(d: Distributed): Promise<void> {
  const { group } = d;
  const { rank, worldSize: n } = d.info;
  const big = params.big ?? 0;
  const lengths = [0, 1, 1001, ...(big ? [big] : [])];
  let salt = 1;
  for (const length of lengths) {
    for (const op of ['sum', 'avg', 'max'] as const) {
      const s = salt++;
      await check(`allReduce float32 ${op} n=${length}`, async () => {
        const data = input(rank, s, length, 1000);
        await group.allReduce(data, op);
        return firstMismatch(data, expectedReduction(n, s, length, 1000, op));
      });
    }
    for (const op of ['sum', 'max'] as const) {
      const s = salt++;
      await check(`allReduce host-buffer ${op} n=${length}`, async () => {
        // A WASM-memory host buffer (as DDP allocates): reductions take the SIMD path.
        const data = hostFloat32(length);
        data.set(input(rank, s, length, 1000));
        await group.allReduce(data, op);
        return firstMismatch(data, expectedReduction(n, s, length, 1000, op));
      });
    }
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const s = salt++;
      if (length > 100_000) continue;
      await check(`allReduce ${dtype} sum n=${length}`, async () => {
        const words = asWords(input(rank, s, length, 30), dtype);
        await group.allReduce(words, 'sum', { dtype });
        return firstMismatch(wordsToFloat32(words, dtype), expectedReduction(n, s, length, 30, 'sum'));
      });
    }
    const shard = length === big ? Math.floor(big / n) : length;
    const whole = shard * n;
    for (const op of ['sum', 'avg'] as const) {
      const s = salt++;
      await check(`reduceScatter float32 ${op} shard=${shard}`, async () => {
        const data = input(rank, s, whole, 1000);
        const view = await group.reduceScatter(data, op);
        if (view.buffer !== data.buffer || view.byteOffset !== data.byteOffset + rank * shard * 4)
          return "the result is not this rank's shard of the input";
        return firstMismatch(view, expectedReduction(n, s, whole, 1000, op).subarray(rank * shard, (rank + 1) * shard));
      });
    }
    {
      const s = salt++;
      await check(`reduceScatter float16 sum shard=${shard}`, async () => {
        if (whole > 100_000) return null;
        const words = asWords(input(rank, s, whole, 30), 'float16');
        const view = await group.reduceScatter(words, 'sum', { dtype: 'float16' });
        return firstMismatch(
          wordsToFloat32(view, 'float16'),
          expectedReduction(n, s, whole, 30, 'sum').subarray(rank * shard, (rank + 1) * shard),
        );
      });
    }
    // bf16 on the wire, summed in fp32. At world 2 the result is predictable exactly from both
    // inputs (fractions that bf16 must round); at 3 and 4, integers whose partial sums bf16 holds.
    // (At most ~700k elements: several segments per chunk, at a fraction of the big case's time.)
    const bfShard = Math.min(shard, Math.floor(700_000 / n));
    for (const op of ['reduceScatter', 'allReduce'] as const) {
      const s = salt++;
      const whole = bfShard * n;
      const shard = bfShard;
      for (const reduce of ['sum', 'avg'] as const) {
        await check(`${op} bf16 wire ${reduce} n=${whole}`, async () => {
          const of = (r: number) => (n === 2 ? input(r, s, whole, 1000).map((x) => x / 7 + 0.1) : input(r, s, whole, 30));
          const data = hostFloat32(whole);
          data.set(of(rank));
          const want =
            n === 2
              ? bf16WireAtTwoOf([of(0), of(1)], op, reduce === 'avg' ? 0.5 : 1)
              : expectedReduction(n, s, whole, 30, reduce).map((x) => (op === 'allReduce' ? bf16Reference(x) : x));
          if (op === 'allReduce') {
            await group.allReduce(data, reduce, { wire: 'bfloat16' });
            return firstMismatch(data, n === 1 ? of(0) : want);
          }
          const view = await group.reduceScatter(data, reduce, { wire: 'bfloat16' });
          return firstMismatch(view, n === 1 ? of(0) : want.subarray(rank * shard, (rank + 1) * shard));
        });
      }
    }
    for (const kind of ['float32', 'uint16'] as const) {
      const s = salt++;
      await check(`allGather ${kind} shard=${shard}`, async () => {
        const want = new Float32Array(whole);
        for (let r = 0; r < n; r++) want.set(input(r, s, shard, 1000), r * shard);
        const data: CollectiveData = kind === 'float32' ? new Float32Array(whole).fill(NaN) : new Uint16Array(whole).fill(0xffff);
        const mine = input(rank, s, shard, 1000);
        if (data instanceof Float32Array) data.set(mine, rank * shard);
        else
          data.set(
            Uint16Array.from(mine, (x) => x + 1000),
            rank * shard,
          );
        await group.allGather(data);
        return firstMismatch(data, kind === 'float32' ? want : Uint16Array.from(want, (x) => x + 1000));
      });
    }
    {
      const s = salt++;
      const root = n - 1;
      await check(`broadcast root=${root} n=${length}`, async () => {
        const data = rank === root ? input(root, s, length, 1000) : new Float32Array(length).fill(NaN);
        await group.broadcast(data, root);
        return firstMismatch(data, input(root, s, length, 1000));
      });
    }
  }
  await check('barrier', async () => {
    await group.barrier();
    return null;
  });
  await check('issue order', async () => {
    // Several outstanding ops complete in the order they were issued.
    const order: number[] = [];
    const a = input(rank, 900, 300_000, 10);
    const b = input(rank, 901, 7, 10);
    const c = input(rank, 902, 5000, 10);
    await Promise.all([
      group.allReduce(a).then(() => order.push(1)),
      group.allReduce(b).then(() => order.push(2)),
      group.barrier().then(() => order.push(3)),
      group.allReduce(c, 'max').then(() => order.push(4)),
    ]);
    return firstMismatch(order, [1, 2, 3, 4]) ?? firstMismatch(b, expectedReduction(n, 901, 7, 10, 'sum'));
  });
  await check('a bf16 wire for 16-bit words is a clear error', async () => {
    const error = await group.allReduce(new Uint16Array(8), 'sum', { dtype: 'float16', wire: 'bfloat16' }).then(
      () => null,
      (e: Error) => e.message,
    );
    return error && /needs Float32Array data/.test(error) ? null : `got ${error}`;
  });
  await check('uneven reduceScatter is a clear error', async () => {
    if (n === 1) return null;
    const error = await group.reduceScatter(new Float32Array(n * 3 + 1)).then(
      () => null,
      (e: Error) => e.message,
    );
    return error && /do not split into \d+ equal shards; pad to a multiple of/.test(error) ? null : `got ${error}`;
  });
}

async function loop(d: Distributed): Promise<void> {
  const { group } = d;
  const elements = params.elements ?? 1 << 20;
  const until = Date.now() + (params.loopMs ?? 2000);
  let iterations = 0;
  // Rank 0 decides when to stop, so every rank runs the same number of ops.
  const more = new Float32Array(1);
  for (;;) {
    if (params.iterations !== undefined) {
      if (iterations === params.iterations) break;
    } else {
      more[0] = Date.now() < until ? 1 : 0;
      await group.broadcast(more, 0);
      if (more[0] === 0) break;
    }
    const salt = 5000 + iterations;
    const data = input(d.info.rank, salt, elements, 1000);
    await group.allReduce(data);
    const mismatch = firstMismatch(data, expectedReduction(d.info.worldSize, salt, elements, 1000, 'sum'));
    if (mismatch) throw new Error(`allReduce iteration ${iterations} wrong: ${mismatch}`);
    if (iterations === 0) say({ started: true, rank: d.info.rank, pid: process.pid });
    iterations += 1;
  }
  say({ iterations });
}

async function mismatch(d: Distributed): Promise<void> {
  const data = new Float32Array(1000);
  if (d.info.rank === 0) await d.group.allReduce(data);
  else await d.group.broadcast(data, 0);
}

/** Rank 1 joins an all-gather late; the op's own timeout (not the group's) decides whether rank 0 waits. */
async function lateJoiner(d: Distributed): Promise<void> {
  if (d.info.rank === 1) await new Promise((r) => setTimeout(r, params.loopMs ?? 1500));
  await d.group.allGather(new Float32Array(4 * d.info.worldSize), params.iterations ? { timeoutMs: params.iterations } : {});
}

/** The same op and size with another reduction: 'sum' on rank 0, 'max' elsewhere. */
async function reduceMismatch(d: Distributed): Promise<void> {
  await d.group.allReduce(new Float32Array(1000), d.info.rank === 0 ? 'sum' : 'max');
}

async function main(): Promise<void> {
  const started = Date.now();
  let d: Distributed;
  try {
    d = await initProcessGroup();
  } catch (error) {
    say({ error: (error as Error).message, name: (error as Error).name, phase: 'init' });
    process.exit(3);
  }
  try {
    if (scenario === 'matrix') await matrix(d);
    else if (scenario === 'loop') await loop(d);
    else if (scenario === 'mismatch') await mismatch(d);
    else if (scenario === 'reduceMismatch') await reduceMismatch(d);
    else if (scenario === 'lateJoiner') await lateJoiner(d);
    else throw new Error(`unknown scenario ${scenario}`);
    await d.group.barrier();
    say({ done: true, ms: Date.now() - started });
    await d.close();
    process.exit(0);
  } catch (error) {
    say({ error: (error as Error).message, name: (error as Error).name, ms: Date.now() - started });
    await d.close().catch(() => undefined);
    process.exit(1);
  }
}

process.on('unhandledRejection', (reason) => {
  say({ unhandledRejection: String(reason) });
  process.exit(4);
});

void main();
