/**
 * d ranks simulated in one process: a `Collectives` per rank whose ops meet in memory. Each rank
 * issues its ops in order; op k completes once every rank has issued its op k (and they agree on
 * the op and the size). Reductions run in fp32 in rank order (16-bit words are widened first and
 * rounded once), as the ring's result but for summation order. For tests of DDP and the
 * optimizers at data-parallel sizes no machine here can run as processes (64 to 512).
 */
import type { CollectiveData, Collectives, DataOptions, OpOptions } from '../../src/collectives/process-group.js';
import { float32ToWords, reduceInto, scale, wordsToFloat32, type ReduceOp } from '../../src/collectives/reduce.js';

interface Posted {
  op: string;
  data: CollectiveData;
  reduce?: ReduceOp;
  options?: DataOptions;
  root?: number;
  done: (error?: Error) => void;
}

export function localGroups(world: number): Collectives[] {
  const posted: Posted[][] = Array.from({ length: world }, () => []);
  const issued = new Array<number>(world).fill(0);
  let completed = 0;

  const widen = (p: Posted) => (p.data instanceof Float32Array ? Float32Array.from(p.data) : wordsToFloat32(p.data, p.options!.dtype!));
  const store = (p: Posted, values: Float32Array, from: number, to: number) => {
    if (p.data instanceof Float32Array) p.data.set(values.subarray(from, to), from);
    else {
      const words = new Uint16Array(to - from);
      float32ToWords(values.subarray(from, to), p.options!.dtype!, words);
      p.data.set(words, from);
    }
  };

  const run = (ops: Posted[]) => {
    const first = ops[0]!;
    const mismatch = ops.find((p) => p.op !== first.op || p.data.length !== first.data.length || p.reduce !== first.reduce);
    if (mismatch)
      throw new Error(
        `local collective mismatch at op #${completed + 1}: ${ops.map((p, r) => `rank ${r} ${p.op}(${p.data.length})`).join(', ')}`,
      );
    const n = first.data.length;
    if (first.op === 'allReduce' || first.op === 'reduceScatter') {
      const total = widen(ops[0]!);
      for (let r = 1; r < world; r++) reduceInto(total, widen(ops[r]!), first.reduce === 'avg' ? 'sum' : first.reduce!);
      if (first.reduce === 'avg') scale(total, 1 / world);
      const s = n / world;
      for (const [r, p] of ops.entries()) {
        if (first.op === 'allReduce') store(p, total, 0, n);
        else store(p, total, r * s, (r + 1) * s);
      }
    } else if (first.op === 'allGather') {
      const s = n / world;
      for (const p of ops) for (const [r, q] of ops.entries()) p.data.set(q.data.subarray(r * s, (r + 1) * s), r * s);
    } else if (first.op === 'broadcast') {
      const root = ops[first.root!]!.data;
      for (const p of ops) if (p.data !== root) p.data.set(root);
    }
  };

  const post = (rank: number, p: Omit<Posted, 'done'>): Promise<void> =>
    new Promise((resolve, reject) => {
      const k = issued[rank]!++;
      posted[rank]![k] = { ...p, done: (error) => (error ? reject(error) : resolve()) };
      // Run every op that all ranks have now issued.
      while (posted.every((list) => list[completed] !== undefined)) {
        const ops = posted.map((list) => list[completed]!);
        completed += 1;
        try {
          run(ops);
          for (const o of ops) o.done();
        } catch (error) {
          for (const o of ops) o.done(error as Error);
        }
      }
    });

  return Array.from({ length: world }, (_, rank) => ({
    rank,
    worldSize: world,
    allReduce: (data: CollectiveData, op: ReduceOp = 'sum', options: DataOptions = {}) =>
      post(rank, { op: 'allReduce', data, reduce: op, options }),
    reduceScatter: <T extends CollectiveData>(data: T, op: ReduceOp = 'sum', options: DataOptions = {}) => {
      if (data.length % world !== 0) return Promise.reject(new Error(`reduceScatter of ${data.length} elements on ${world} ranks`));
      const s = data.length / world;
      return post(rank, { op: 'reduceScatter', data, reduce: op, options }).then(() => data.subarray(rank * s, (rank + 1) * s) as T);
    },
    allGather: (data: CollectiveData, _options?: OpOptions) => post(rank, { op: 'allGather', data }),
    broadcast: (data: CollectiveData, root = 0, _options?: OpOptions) => post(rank, { op: 'broadcast', data, root }),
    barrier: (_options?: OpOptions) => post(rank, { op: 'barrier', data: new Float32Array(0) }),
  }));
}
