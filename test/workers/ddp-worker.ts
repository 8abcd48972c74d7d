/**
 * One rank of a DDP test job (spawned by test/ddp/ddp.test.ts). Every rank's params and grads are a
 * deterministic function of (rank, element), so each rank checks the synced buffers against direct
 * averages. Prints one JSON object per line.
 */
import { initProcessGroup } from '../../src/collectives/init.js';
import { float32ToWords, wordsToFloat32 } from '../../src/collectives/reduce.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { planSyncChunks, syncStagingBytes, type SyncChunk } from '../../src/ddp/sync-plan.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { stagingSize } from '../../src/gpu/transfers.js';
import { bf16WireAtTwo, fp16Reference } from '../helpers/bf16.js';

const config = JSON.parse(process.argv[2] ?? '{}') as {
  distributed: boolean;
  overlap: boolean;
  bucketSize: number;
  skipReady?: string;
  /** --grad-reduce-in-bf16 (world 2): grads that bf16 must round, checked against the world-2 model. */
  bf16?: boolean;
  /** fp16 params and grads (the collectives sum fp16 words in fp32). */
  fp16?: boolean;
  /** Bytes per grad-sync chunk: small, so that every bucket syncs in several. */
  chunkBytes?: number;
};
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const f32 = (name: string, ...shape: number[]): ParamSpec =>
  config.fp16 ? { name, shape, dtype: 'float16', gradDtype: 'float16' } : { name, shape, dtype: 'float32', gradDtype: 'float32' };
export const MODEL = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];

const paramValue = (rank: number, i: number) => rank * 1000 + (i % 997);
const gradValue = (rank: number, i: number) => {
  const whole = ((i * 7 + rank * 13) % 17) - 8;
  return config.bf16 ? Math.fround(whole / 3 + 0.01) : whole;
};

/** World 2, all-reduce: the rank owning byte `at` of a bucket, the half of its chunk it falls in. */
function ownerInChunk(chunks: SyncChunk[], at: number): number {
  const chunk = chunks.find((c) => at < c.pieces[0]!.offset - chunks[0]!.pieces[0]!.offset + c.pieces[0]!.size)!;
  const within = (at - (chunk.pieces[0]!.offset - chunks[0]!.pieces[0]!.offset)) / 4;
  return within < Math.floor(chunk.length / 2) ? 0 : 1;
}

async function main(): Promise<void> {
  const ctx = await GpuContext.create();
  const d = await initProcessGroup();
  const { rank, worldSize: n } = d.info;
  const layout = computeLayout(MODEL, { dataParallelSize: n, distributedOptimizer: config.distributed, bucketSize: config.bucketSize });
  if (config.bf16 && n !== 2) throw new Error('the bf16 check models world 2 only');
  const ddp = new DistributedDataParallel(ctx, d.group, layout, {
    overlapGradReduce: config.overlap,
    gradReduceInBf16: config.bf16,
    ...(config.chunkBytes ? { syncChunkBytes: config.chunkBytes } : {}),
  });
  const buffer = ddp.buffers[0]!;
  const numel = buffer.layout.numel;
  const chunks = buffer.layout.buckets.map((b) =>
    planSyncChunks(b, config.fp16 ? 2 : 4, config.distributed ? n : null, rank, config.chunkBytes || undefined),
  );
  say({ layout: { numel, buckets: buffer.layout.buckets.map((b) => [b.start, b.end]), chunks: chunks.map((c) => c.length) } });
  // fp16 values go up and come back as words; every value here is exact in fp16 but the averages.
  const upload = (target: typeof buffer.params, values: Float32Array) => {
    if (!config.fp16) return ctx.transfers.upload(target, values);
    const words = new Uint16Array(values.length);
    float32ToWords(values, 'float16', words);
    ctx.transfers.upload(target, words);
  };
  const read = async (source: typeof buffer.params) => {
    if (!config.fp16) return ctx.transfers.readFloat32(source, 0, numel);
    const bytes = await ctx.transfers.readback(source, 0, numel * 2);
    return wordsToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, numel), 'float16');
  };

  // Params: rank 0's everywhere after the broadcast.
  upload(
    buffer.params,
    Float32Array.from({ length: numel }, (_, i) => paramValue(rank, i) % 2048),
  );
  await ddp.broadcastParams();
  const params = await read(buffer.params);
  const badParam = params.findIndex((v, i) => v !== paramValue(0, i) % 2048);
  say({ check: 'broadcastParams', ok: badParam < 0, detail: badParam < 0 ? null : `element ${badParam}: ${params[badParam]}` });

  // Grads: the average over ranks comes back (the whole bucket, or only this rank's shard).
  ddp.zeroGradBuffer();
  const local = Float32Array.from({ length: numel }, (_, i) => gradValue(rank, i));
  upload(buffer.grads, local);
  for (const p of buffer.layout.params) if (p.name !== config.skipReady) ddp.registerGradReady(p.name);
  try {
    await ddp.finishGradSync();
  } catch (error) {
    say({ check: 'finishGradSync', ok: false, error: (error as Error).message });
    await d.close();
    process.exit(0);
  }
  // Readback staging: what the sync held at once (the broadcast's staging, made first, is reused).
  const staging = ctx.memoryReport().live.staging;
  const wantStaging = Math.max(
    syncStagingBytes(layout, { gradReduceInBf16: config.bf16, ...(config.chunkBytes ? { syncChunkBytes: config.chunkBytes } : {}) }),
    stagingSize(buffer.params.size),
  );
  say({ check: 'staging', ok: staging === wantStaging, detail: { staging, wantStaging } });
  const grads = await read(buffer.grads);
  let bad: string | null = null;
  for (const [b, bucket] of buffer.layout.buckets.entries()) {
    const s = (bucket.end - bucket.start) / n;
    for (let i = bucket.start; i < bucket.end && !bad; i++) {
      let sum = 0;
      for (let r = 0; r < n; r++) sum += gradValue(r, i);
      const mine = !config.distributed || (i >= bucket.start + rank * s && i < bucket.start + (rank + 1) * s);
      // With bf16 on the wire, the element's owner adds the other's rounded value: the owner of its
      // half of the collective's data (a sync chunk: the element's shard, or its half of the chunk).
      const owner = () => (config.distributed ? Math.floor((i - bucket.start) / s) : ownerInChunk(chunks[b]!, (i - bucket.start) * 4));
      const average = config.bf16
        ? bf16WireAtTwo(gradValue(owner(), i), gradValue(1 - owner(), i), 0.5, config.distributed ? 'reduceScatter' : 'allReduce')
        : config.fp16
          ? fp16Reference(Math.fround(sum * (1 / n)))
          : Math.fround(sum * (1 / n));
      const want = mine ? average : local[i]!;
      if (grads[i] !== want)
        bad = `element ${i} (bucket ${bucket.index}, ${mine ? 'own shard' : 'other shard'}): got ${grads[i]}, want ${want}`;
    }
  }
  say({ check: 'grad sync', ok: bad === null, detail: bad });
  const memory = ctx.memoryReport().live;
  const bytes = config.fp16 ? 2 : 4;
  say({ check: 'memory', ok: memory.params === numel * bytes && memory.grads === numel * bytes, detail: memory });
  await d.group.barrier();
  await d.close();
  say({ done: true });
  process.exit(0);
}

main().catch((error: Error) => {
  say({ error: error.message });
  process.exit(1);
});
