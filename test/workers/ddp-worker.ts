/**
 * One rank of a DDP test job (spawned by test/ddp/ddp.test.ts). Every rank's params and grads are a
 * deterministic function of (rank, element), so each rank checks the synced buffers against direct
 * averages. Prints one JSON object per line.
 */
import { initProcessGroup } from '../../src/collectives/init.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { bf16WireAtTwo } from '../helpers/bf16.js';

const config = JSON.parse(process.argv[2] ?? '{}') as {
  distributed: boolean;
  overlap: boolean;
  bucketSize: number;
  skipReady?: string;
  /** --grad-reduce-in-bf16 (world 2): grads that bf16 must round, checked against the world-2 model. */
  bf16?: boolean;
};
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype: 'float32', gradDtype: 'float32' });
export const MODEL = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];

const paramValue = (rank: number, i: number) => rank * 1000 + (i % 997);
const gradValue = (rank: number, i: number) => {
  const whole = ((i * 7 + rank * 13) % 17) - 8;
  return config.bf16 ? Math.fround(whole / 3 + 0.01) : whole;
};

async function main(): Promise<void> {
  const ctx = await GpuContext.create();
  const d = await initProcessGroup();
  const { rank, worldSize: n } = d.info;
  const layout = computeLayout(MODEL, { dataParallelSize: n, distributedOptimizer: config.distributed, bucketSize: config.bucketSize });
  if (config.bf16 && n !== 2) throw new Error('the bf16 check models world 2 only');
  const ddp = new DistributedDataParallel(ctx, d.group, layout, { overlapGradReduce: config.overlap, gradReduceInBf16: config.bf16 });
  const buffer = ddp.buffers[0]!;
  const numel = buffer.layout.numel;
  say({ layout: { numel, buckets: buffer.layout.buckets.map((b) => [b.start, b.end]) } });

  // Params: rank 0's everywhere after the broadcast.
  ctx.transfers.upload(
    buffer.params,
    Float32Array.from({ length: numel }, (_, i) => paramValue(rank, i)),
  );
  await ddp.broadcastParams();
  const params = await ctx.transfers.readFloat32(buffer.params, 0, numel);
  const badParam = params.findIndex((v, i) => v !== paramValue(0, i));
  say({ check: 'broadcastParams', ok: badParam < 0, detail: badParam < 0 ? null : `element ${badParam}: ${params[badParam]}` });

  // Grads: the average over ranks comes back (the whole bucket, or only this rank's shard).
  ddp.zeroGradBuffer();
  const local = Float32Array.from({ length: numel }, (_, i) => gradValue(rank, i));
  ctx.transfers.upload(buffer.grads, local);
  for (const p of buffer.layout.params) if (p.name !== config.skipReady) ddp.registerGradReady(p.name);
  try {
    await ddp.finishGradSync();
  } catch (error) {
    say({ check: 'finishGradSync', ok: false, error: (error as Error).message });
    await d.close();
    process.exit(0);
  }
  const grads = await ctx.transfers.readFloat32(buffer.grads, 0, numel);
  let bad: string | null = null;
  for (const bucket of buffer.layout.buckets) {
    const s = (bucket.end - bucket.start) / n;
    for (let i = bucket.start; i < bucket.end && !bad; i++) {
      let sum = 0;
      for (let r = 0; r < n; r++) sum += gradValue(r, i);
      const mine = !config.distributed || (i >= bucket.start + rank * s && i < bucket.start + (rank + 1) * s);
      // With bf16 on the wire, the element's owner (its chunk of the bucket) adds the other's rounded value.
      const owner = i - bucket.start < Math.floor((bucket.end - bucket.start) / 2) ? 0 : 1;
      const average = config.bf16
        ? bf16WireAtTwo(gradValue(owner, i), gradValue(1 - owner, i), 0.5, config.distributed ? 'reduceScatter' : 'allReduce')
        : Math.fround(sum * (1 / n));
      const want = mine ? average : local[i]!;
      if (grads[i] !== want)
        bad = `element ${i} (bucket ${bucket.index}, ${mine ? 'own shard' : 'other shard'}): got ${grads[i]}, want ${want}`;
    }
  }
  say({ check: 'grad sync', ok: bad === null, detail: bad });
  const memory = ctx.memoryReport().live;
  say({ check: 'memory', ok: memory.params === numel * 4 && memory.grads === numel * 4, detail: memory });
  await d.group.barrier();
  await d.close();
  say({ done: true });
  process.exit(0);
}

main().catch((error: Error) => {
  say({ error: error.message });
  process.exit(1);
});
