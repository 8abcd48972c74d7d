/**
 * DistributedDataParallel: the model's params and grads in contiguous GPU buffers (one per dtype
 * pair, laid out by `computeLayout`), grads accumulated across micro-batches, and per-bucket grad
 * sync over the process group, averaged over the d data-parallel ranks:
 *
 * - without the distributed optimizer: all-reduce of whole buckets;
 * - with it: reduce-scatter, and only this rank's shard of each bucket comes back to the GPU.
 *
 * With `overlapGradReduce`, a bucket's sync starts as soon as its last param registers its grad as
 * ready (`registerGradReady`); otherwise every bucket syncs in `finishGradSync`. Syncs are issued in
 * the same order on every rank (bucket readiness follows the backward pass, which is the same
 * everywhere), one after another.
 *
 * A bucket syncs in chunks of a few MiB (`syncChunkBytes`), pipelined: each chunk is read back through
 * a staging buffer of its own, and chunk k goes onto the wire while the readbacks of the next ones
 * copy and map; its result is uploaded as soon as its collective ends. With the distributed
 * optimizer, chunk k holds the k-th slice of every rank's shard (the host staging keeps the slices
 * of a chunk together), so that each chunk reduce-scatters on its own and returns a slice of this
 * rank's shard.
 *
 * Megatron-FSDP's strategies (`shardingStrategy`) shard more than the optimizer state: with
 * `optim_grads` each bucket's grads live in a buffer of their own only from the first write of a
 * backward (`beforeGradWrite`) until the sync has read them, and the reduced shard goes into a shard
 * buffer; with `optim_grads_params` the params too are kept as a shard and a bucket is gathered into
 * its own buffer before a pass reads it (`useParams`, the next bucket ahead) and released after.
 * Gathers and syncs share one chain of collectives, so every rank issues them in the same order.
 *
 * Grad accumulation is safe by construction (Megatron's `no_sync`): run every micro-batch but the
 * last inside `noSync(...)`, where `registerGradReady` does nothing and `finishGradSync` refuses, so
 * a partial grad can never be synced; `zeroGradBuffer` refuses while a sync is still in flight.
 *
 * Every write to the model params through this class (`importParams`, `broadcastParams`) bumps
 * `paramsVersion`, so that an optimizer keeping fp32 main params refreshes them before its next step;
 * code that writes the param buffers directly calls `paramsWritten()`.
 */
import { WebtronError } from '../errors.js';
import type { Collectives } from '../collectives/process-group.js';
import { float32ToWords, wordsToFloat32 } from '../collectives/reduce.js';
import { hostFloat32 } from '../collectives/simd.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { ParamAndGradBuffer, type BufferView } from './buffers.js';
import { BYTES, type BucketLayout, type ModelLayout, type ParamPlacement } from './layout.js';
import { EARLY_READBACK_BYTES, planSyncChunks, READS_AHEAD, type SyncChunk } from './sync-plan.js';
import { PhaseTimes } from './phases.js';

/** Buffer elements importParams converts and uploads at once. */
const IMPORT_WINDOW = 1 << 22;

export interface DdpOptions {
  overlapGradReduce?: boolean;
  /**
   * fp32 grads travel as bf16 words and are summed in fp32 (Megatron-LM's --grad-reduce-in-bf16):
   * half the bytes on the wire, each rank's contribution rounded to bf16 on its way.
   */
  gradReduceInBf16?: boolean;
  /** Where to add the time of each grad-sync phase (readback, reduce-scatter / all-reduce, upload). */
  phases?: PhaseTimes;
  /** Bytes of a bucket per grad-sync chunk; default `syncChunkBytes(d)` (tests make it small). */
  syncChunkBytes?: number;
  /**
   * Megatron-FSDP's sharding strategy (needs the distributed optimizer's layout): `optim` (the
   * default) keeps whole params and grads; `optim_grads` keeps only this rank's shard of the reduced
   * grads (a bucket's grads are whole from the first write of a backward until its reduce-scatter
   * has read them); `optim_grads_params` keeps only the param shard too (a bucket's params are
   * gathered before the forward or backward uses them and released after). Sharded grads sync each
   * bucket as soon as its grads are final, as `overlapGradReduce` does.
   */
  shardingStrategy?: ShardingStrategy;
}

/** Megatron-FSDP's strategies with the distributed optimizer (`no_shard` is DDP without it). */
export const SHARDING_STRATEGIES = ['optim', 'optim_grads', 'optim_grads_params'] as const;
export type ShardingStrategy = (typeof SHARDING_STRATEGIES)[number];

interface BucketState {
  buffer: ParamAndGradBuffer;
  chunks: SyncChunk[];
  /** The distributed optimizer's param all-gather into this bucket, while it runs (overlap mode). */
  gather: Promise<void> | null;
  layout: BucketLayout;
  /** Host staging in WASM memory, where the reductions run as SIMD. */
  host: Float32Array;
  /** Params whose grads are not yet registered ready (overlap mode). */
  pending: Set<string>;
  sync: Promise<void> | null;
  /** The sync has started and not yet settled. */
  syncing: boolean;
  /** Sharded params: the gather of this bucket's params, while its buffer holds them (or gets them). */
  paramGather: Promise<void> | null;
  /** That gather has not settled. */
  gatheringParams: boolean;
  /** Sharded params: host staging of the gathers (apart from `host`, which grad syncs use meanwhile). */
  paramHost: Float32Array | null;
}

export class DdpError extends WebtronError {
  override name = 'DdpError';
  override readonly code: string = 'ERR_DDP';
  override readonly exitCode: 1 | 2 = 1;
}

export class DistributedDataParallel {
  readonly buffers: ParamAndGradBuffer[];
  readonly overlapGradReduce: boolean;
  readonly gradReduceInBf16: boolean;
  readonly shardingStrategy: ShardingStrategy;
  readonly phases: PhaseTimes;
  /** Bytes per grad-sync chunk when set; else `syncChunkBytes(d)`. The param all-gather chunks the same way. */
  readonly syncChunkBytes: number | undefined;
  private readonly buckets: BucketState[];
  private readonly bucketOf = new Map<string, BucketState>();
  /** Serializes bucket syncs so that every rank issues its collectives in the same order. */
  private chain: Promise<void> = Promise.resolve();
  private lastMicroBatch = true;
  private version = 0;
  /** Param all-gathers not yet settled (they use the host staging too). */
  private gathersRunning = 0;
  /** Bytes of grad readbacks queued ahead of their sync (they hold staging buffers): bounded. */
  private earlyBytes = 0;

  constructor(
    readonly ctx: GpuContext,
    private readonly group: Collectives,
    readonly layout: ModelLayout,
    options: DdpOptions = {},
  ) {
    if (layout.dataParallelSize !== group.worldSize) {
      throw new DdpError(`the layout is for ${layout.dataParallelSize} data-parallel ranks but the process group has ${group.worldSize}`);
    }
    for (const b of layout.buffers) {
      const row = `${b.paramDtype}/${b.gradDtype}`;
      if (!['float32/float32', 'bfloat16/float32', 'float16/float16', 'bfloat16/bfloat16'].includes(row)) {
        throw new DdpError(
          `params ${b.paramDtype} with grads ${b.gradDtype}: use fp32/fp32, bf16/fp32, fp16/fp16 (Megatron's three rows) or bf16/bf16 (--main-grads-dtype bf16)`,
        );
      }
    }
    this.shardingStrategy = options.shardingStrategy ?? 'optim';
    if (this.shardingStrategy !== 'optim' && !layout.distributedOptimizer) {
      throw new DdpError(
        `sharding strategy ${this.shardingStrategy} shards the grads of the distributed optimizer's layout: make it with distributedOptimizer: true`,
      );
    }
    const sharded = this.shardingStrategy !== 'optim';
    // Sharded grads free a bucket as soon as it is reduced: every bucket syncs once its grads are final.
    this.overlapGradReduce = sharded || (options.overlapGradReduce ?? false);
    this.gradReduceInBf16 = options.gradReduceInBf16 ?? false;
    this.phases = options.phases ?? new PhaseTimes();
    this.syncChunkBytes = options.syncChunkBytes;
    const sharding = sharded
      ? { rank: group.rank, d: group.worldSize, grads: true, params: this.shardingStrategy === 'optim_grads_params' }
      : null;
    this.buffers = layout.buffers.map((b, i) => new ParamAndGradBuffer(ctx, b, i, sharding));
    this.buckets = this.buffers.flatMap((buffer) =>
      buffer.layout.buckets.map((bucket) => ({
        buffer,
        chunks: planSyncChunks(
          bucket,
          BYTES[buffer.layout.gradDtype],
          layout.distributedOptimizer ? group.worldSize : null,
          group.rank,
          options.syncChunkBytes,
        ),
        layout: bucket,
        host: hostFloat32(bucket.end - bucket.start),
        pending: new Set(bucket.params),
        sync: null,
        syncing: false,
        gather: null,
        paramGather: null,
        gatheringParams: false,
        paramHost: sharding?.params ? hostFloat32(bucket.end - bucket.start) : null,
      })),
    );
    for (const b of this.buckets) for (const name of b.layout.params) this.bucketOf.set(name, b);
  }

  private bufferOf(name: string): ParamAndGradBuffer {
    const b = this.bucketOf.get(name);
    if (!b) throw new DdpError(`no param named '${name}' in this model`);
    return b.buffer;
  }

  paramView(name: string): BufferView {
    return this.bufferOf(name).paramView(name);
  }

  gradView(name: string): BufferView {
    return this.bufferOf(name).gradView(name);
  }

  /**
   * The host staging of bucket `bucket` of buffer `buffer` (WASM memory). Free between grad syncs:
   * the distributed optimizer gathers params through it.
   */
  hostBucket(buffer: number, bucket: number): Float32Array {
    const b = this.buckets.find((x) => x.buffer.index === buffer && x.layout.index === bucket);
    if (!b) throw new DdpError(`no bucket ${bucket} in buffer ${buffer}`);
    return b.host;
  }

  get bucketCount(): number {
    return this.buckets.length;
  }

  /** Record the param all-gather running into a bucket (`--overlap-param-gather`). */
  setParamGather(buffer: number, bucket: number, gather: Promise<void>): void {
    const b = this.buckets.find((x) => x.buffer.index === buffer && x.layout.index === bucket)!;
    b.gather = gather;
    this.gathersRunning += 1;
    gather.catch(() => undefined).finally(() => (this.gathersRunning -= 1)); // errors surface in paramsReady / finishParamSync
  }

  /** Wait until the bucket holding `name` has its updated params (the forward calls this first). */
  async paramsReady(name: string): Promise<void> {
    const b = this.bucketOf.get(name);
    if (!b) throw new DdpError(`paramsReady: no param named '${name}' in this model`);
    await b.gather;
  }

  /** Wait for every param all-gather still running. */
  async finishParamSync(): Promise<void> {
    await Promise.all(this.buckets.map((b) => b.gather));
    for (const b of this.buckets) b.gather = null;
    await Promise.all(this.buckets.map((b) => b.paramGather));
  }

  /** Whether params are sharded (optim_grads_params): buckets must be gathered before use (`useParams`). */
  get shardedParams(): boolean {
    return this.shardingStrategy === 'optim_grads_params';
  }

  private bucketOfParam(name: string): BucketState {
    const b = this.bucketOf.get(name);
    if (!b) throw new DdpError(`no param named '${name}' in this model`);
    return b;
  }

  /** Sharded grads: the buckets of `names` take (zeroed) memory before a backward writes their grads. */
  beforeGradWrite(names: readonly string[]): void {
    if (this.shardingStrategy === 'optim') return;
    for (const name of names) {
      const b = this.bucketOfParam(name);
      b.buffer.bucketGrads[b.layout.index]!.restore();
    }
  }

  /** Sharded params: whether every bucket holding `names` is gathered already (nothing to wait for). */
  hasParams(names: readonly string[]): boolean {
    if (!this.shardedParams) return true;
    return names.every((n) => {
      const b = this.bucketOfParam(n);
      return b.paramGather !== null && !b.gatheringParams;
    });
  }

  /**
   * Sharded params: make the buckets holding `names` whole and wait for them; start gathering the
   * bucket the pass needs next (`forward` needs the buckets from the last to bucket 0, `backward`
   * the other way); release every other bucket but those holding `keep` (a param the pass uses again
   * at its other end: a tied embedding). Submit the work that reads the params first.
   */
  async useParams(names: readonly string[], pass: 'forward' | 'backward', keep: readonly string[] = []): Promise<void> {
    if (!this.shardedParams) return;
    const order = pass === 'forward' ? [...this.buckets].reverse() : this.buckets;
    const needed = new Set(names.map((n) => this.bucketOfParam(n)));
    const kept = new Set(keep.map((n) => this.bucketOfParam(n)));
    // Kept buckets say nothing about where the pass is: with only those, nothing moves.
    const moving = [...needed].filter((b) => !kept.has(b));
    if (moving.length > 0) {
      const next = order[Math.max(...moving.map((b) => order.indexOf(b))) + 1];
      for (const b of this.buckets) if (!needed.has(b) && !kept.has(b) && b !== next) this.releaseBucketParams(b);
      for (const b of order) if (needed.has(b)) this.gatherParams(b);
      if (next) this.gatherParams(next);
    } else {
      for (const b of needed) this.gatherParams(b);
    }
    await Promise.all([...needed].map((b) => b.paramGather));
  }

  /** Sharded params: give back the memory of every gathered bucket (submit the work that reads them first). */
  async releaseParams(): Promise<void> {
    if (!this.shardedParams) return;
    await Promise.all(this.buckets.map((b) => b.paramGather)); // a gather in flight writes its bucket
    for (const b of this.buckets) this.releaseBucketParams(b);
  }

  /** Sharded params: gather every bucket (a checkpoint reads them all). */
  async gatherAllParams(): Promise<void> {
    if (!this.shardedParams) return;
    for (const b of [...this.buckets].reverse()) this.gatherParams(b);
    await Promise.all(this.buckets.map((b) => b.paramGather));
  }

  private releaseBucketParams(b: BucketState): void {
    if (b.paramGather === null || b.gatheringParams) return;
    b.buffer.bucketParams[b.layout.index]!.release();
    b.paramGather = null;
  }

  /** Start gathering a bucket's params into its own buffer (in the collectives' order), unless it holds them. */
  private gatherParams(b: BucketState): void {
    if (b.paramGather) return;
    b.buffer.bucketParams[b.layout.index]!.restore();
    b.gatheringParams = true;
    b.paramGather = this.chain
      .then(() => this.phases.time('param gather', () => this.gatherBucketParams(b)))
      .finally(() => {
        b.gatheringParams = false;
      });
    this.chain = b.paramGather.catch(() => undefined);
  }

  /**
   * Chunk by chunk (slice k of every shard together, as the grad sync's chunks): this rank's slice
   * read back from its shard, all-gathered, every slice uploaded into the bucket's buffer.
   */
  private async gatherBucketParams(b: BucketState): Promise<void> {
    const { rank, worldSize: d } = this.group;
    const bytes = BYTES[b.buffer.layout.paramDtype];
    const numel = b.layout.end - b.layout.start;
    const shard = b.buffer.paramShardPlace(b.layout.index, rank, d);
    const into = b.buffer.bucketParams[b.layout.index]!;
    if (d === 1) {
      this.ctx.transfers.copy(shard.buffer, shard.offset * bytes, into, 0, numel * bytes);
      return;
    }
    const host = bytes === 4 ? b.paramHost! : new Uint16Array(b.paramHost!.buffer, b.paramHost!.byteOffset, numel);
    const chunks = planSyncChunks(b.layout, bytes, d, rank, this.syncChunkBytes);
    // Pieces are in the whole buffer's bytes: the bucket's buffer starts at its first; the shard
    // buffer holds this rank's slice k at (bucket start / d + the slice's start).
    const bucketShift = b.layout.start * bytes;
    const shardShift = (b.layout.start + (rank * numel) / d - shard.offset) * bytes;
    const read = (chunk: SyncChunk) => {
      const slice = chunk.length / d;
      const mine = host.subarray(chunk.hostStart + rank * slice, chunk.hostStart + (rank + 1) * slice);
      const piece = chunk.pieces[rank]!;
      const reading = this.ctx.transfers.readbackPieces(
        shard.buffer,
        [{ offset: piece.offset - shardShift, size: piece.size }],
        new Uint8Array(mine.buffer, mine.byteOffset, mine.byteLength),
      );
      reading.catch(() => undefined); // awaited below, unless an earlier chunk fails
      return reading;
    };
    // `READS_AHEAD` slices in flight, as a grad sync reads: staging stays small.
    const reads: Promise<void>[] = [];
    for (const [k, chunk] of chunks.entries()) {
      for (let next = k; next < Math.min(chunks.length, k + READS_AHEAD); next++) reads[next] ??= read(chunks[next]!);
      await reads[k];
      const data = host.subarray(chunk.hostStart, chunk.hostStart + chunk.length);
      await this.group.allGather(data);
      const slice = chunk.length / d;
      for (let r = 0; r < d; r++) {
        this.ctx.transfers.upload(into, data.subarray(r * slice, (r + 1) * slice), chunk.pieces[r]!.offset - bucketShift);
      }
    }
  }

  /** Counts writes to the model params made through this class or reported by `paramsWritten()`. */
  get paramsVersion(): number {
    return this.version;
  }

  /** Say that the param buffers were written directly (not through `importParams`). */
  paramsWritten(): void {
    this.version += 1;
  }

  /** False inside `noSync`: the grads of this micro-batch are not final. */
  get isLastMicroBatch(): boolean {
    return this.lastMicroBatch;
  }

  /**
   * Run `work` (a micro-batch's forward and backward, sync or async) with grad sync off, as
   * Megatron's `no_sync()`: grads accumulate, `registerGradReady` does nothing, `finishGradSync` refuses.
   */
  noSync<T>(work: () => T): T {
    if (!this.lastMicroBatch) throw new DdpError('noSync: already inside noSync');
    this.lastMicroBatch = false;
    let result: T;
    try {
      result = work();
    } catch (error) {
      this.lastMicroBatch = true;
      throw error;
    }
    if (result instanceof Promise) {
      return result.finally(() => {
        this.lastMicroBatch = true;
      }) as T;
    }
    this.lastMicroBatch = true;
    return result;
  }

  /** Zero every grad buffer and forget readiness: the start of a new global batch. */
  zeroGradBuffer(): void {
    const busy = this.buckets.find((b) => b.syncing);
    if (busy) {
      throw new DdpError(
        `zeroGradBuffer while the grad sync of bucket ${busy.layout.index} of buffer ${busy.buffer.index} is still running: await finishGradSync() first`,
      );
    }
    const encoder = this.ctx.device.createCommandEncoder({ label: 'ddp.zeroGradBuffer' });
    for (const b of this.buffers) b.zeroGrads(encoder);
    this.ctx.submit([encoder.finish()]);
    for (const b of this.buckets) {
      b.pending = new Set(b.layout.params);
      b.sync = null;
    }
  }

  /**
   * The host staging of a bucket seen as its params: float32 values, or bf16 words in the first
   * half of the same memory.
   */
  hostParams(buffer: number, bucket: number): Float32Array | Uint16Array {
    const host = this.hostBucket(buffer, bucket);
    return this.buffers[buffer]!.layout.paramDtype === 'float32' ? host : new Uint16Array(host.buffer, host.byteOffset, host.length);
  }

  /** Make every rank's params equal rank 0's (before the first step). */
  async broadcastParams(): Promise<void> {
    if (this.shardedParams)
      throw new DdpError('broadcastParams: with optim_grads_params every rank holds its own shard; there is nothing of rank 0 to copy');
    await this.finishParamSync();
    this.version += 1;
    for (const b of this.buckets) {
      const range = b.buffer.paramBytes(b.layout);
      const params = this.hostParams(b.buffer.index, b.layout.index);
      const bytes = new Uint8Array(params.buffer, params.byteOffset, range.size);
      await this.ctx.transfers.readback(b.buffer.params, range.offset, range.size, bytes);
      await this.group.broadcast(params, 0);
      this.ctx.transfers.upload(b.buffer.params, bytes, range.offset);
    }
    await this.ctx.sync();
  }

  /** Every param's values, compact (no padding), read back from the param buffers (sharded params: a collective). */
  async exportParams(): Promise<Map<string, Float32Array>> {
    await this.finishParamSync();
    if (this.shardedParams) return this.exportShardedParams();
    const out = new Map<string, Float32Array>();
    for (const buffer of this.buffers) {
      const n = buffer.layout.numel;
      let all: Float32Array;
      const dtype = buffer.layout.paramDtype;
      if (dtype !== 'float32') {
        const bytes = await this.ctx.transfers.readback(buffer.params, 0, Math.ceil(n / 2) * 4);
        all = wordsToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, n), dtype);
      } else {
        all = await this.ctx.transfers.readFloat32(buffer.params, 0, n);
      }
      for (const p of buffer.layout.params) out.set(p.name, all.slice(p.start, p.end));
    }
    return out;
  }

  /** Bucket by bucket: gathered, read back, released. */
  private async exportShardedParams(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const b of this.buckets) {
      await this.useParams(b.layout.params, 'forward');
      const dtype = b.buffer.layout.paramDtype;
      const n = b.layout.end - b.layout.start;
      const into = b.buffer.bucketParams[b.layout.index]!;
      const values =
        dtype === 'float32'
          ? await this.ctx.transfers.readFloat32(into, 0, n)
          : wordsToFloat32(new Uint16Array((await this.ctx.transfers.readback(into, 0, Math.ceil(n / 2) * 4)).buffer, 0, n), dtype);
      for (const name of b.layout.params) {
        const p = b.buffer.layout.params.find((x) => x.name === name)!;
        out.set(name, values.slice(p.start - b.layout.start, p.end - b.layout.start));
      }
    }
    await this.releaseParams();
    return out;
  }

  /**
   * Set every param from compact values (padding becomes zero; 16-bit params round to nearest
   * even): a map, or a function asked for each param when its values are needed (a reader of a
   * file, so that only one param and a window of the buffer are in host memory at once). With
   * sharded params, only the params in this rank's shards are asked for.
   */
  importParams(values: Map<string, Float32Array> | ((name: string) => Float32Array)): void {
    this.version += 1;
    const { rank, worldSize: d } = this.group;
    const valuesOf = typeof values === 'function' ? values : (name: string) => values.get(name);
    const checked = (p: ParamPlacement): Float32Array => {
      const v = valuesOf(p.name);
      if (!v || v.length !== p.numel) throw new DdpError(`importParams: '${p.name}' needs ${p.numel} values, got ${v ? v.length : 'none'}`);
      return v;
    };
    if (values instanceof Map) for (const buffer of this.buffers) for (const p of buffer.layout.params) checked(p);
    for (const buffer of this.buffers) {
      const dtype = buffer.layout.paramDtype;
      // The param last asked for: one that straddles windows is asked for once.
      let last: { name: string; values: Float32Array } | null = null;
      const param = (p: ParamPlacement) => {
        if (last?.name !== p.name) last = { name: p.name, values: checked(p) };
        return last.values;
      };
      // Elements [from, to) of the buffer into `into` from element `at`, a window at a time
      // (windows and `from` even, so 16-bit uploads stay 4-byte aligned).
      const place = (from: number, to: number, into: DeviceBuffer, at: number) => {
        for (let w = from; w < to; w += IMPORT_WINDOW) {
          const end = Math.min(to, w + IMPORT_WINDOW);
          const part = new Float32Array(end - w);
          for (const p of buffer.layout.params) {
            const lo = Math.max(w, p.start);
            const hi = Math.min(end, p.end);
            if (lo < hi) part.set(param(p).subarray(lo - p.start, hi - p.start), lo - w);
          }
          if (dtype === 'float32') {
            this.ctx.transfers.upload(into, part, (at + w - from) * 4);
            continue;
          }
          const words = new Uint16Array(part.length);
          float32ToWords(part, dtype, words);
          this.ctx.transfers.upload(into, words, (at + w - from) * 2);
        }
      };
      if (!buffer.sharding?.params) {
        place(0, buffer.layout.numel, buffer.params, 0);
        continue;
      }
      // Sharded params: only this rank's shard of each bucket.
      for (const bucket of buffer.layout.buckets) {
        const size = (bucket.end - bucket.start) / d;
        const start = bucket.start + rank * size;
        const shard = buffer.paramShardPlace(bucket.index, rank, d);
        place(start, start + size, shard.buffer, shard.offset);
      }
    }
  }

  /**
   * The grad of `name` is final for this batch. With overlap, the bucket's sync starts once all its
   * params are ready. Inside `noSync` (not the last micro-batch) it does nothing.
   */
  registerGradReady(name: string): void {
    const b = this.bucketOf.get(name);
    if (!b) throw new DdpError(`registerGradReady: no param named '${name}' in this model`);
    if (!this.overlapGradReduce || !this.lastMicroBatch) return;
    b.pending.delete(name);
    if (b.pending.size === 0 && b.sync === null) this.startBucketSync(b);
  }

  /** Sync every bucket not yet started and wait for all of them. */
  async finishGradSync(): Promise<void> {
    if (!this.lastMicroBatch)
      throw new DdpError('finishGradSync inside noSync: the grads of this micro-batch are not final; call it after the last micro-batch');
    for (const b of this.buckets) {
      if (b.sync !== null) continue;
      if (this.overlapGradReduce && b.pending.size > 0) {
        const names = [...b.pending].map((n) => `'${n}'`).join(', ');
        throw new DdpError(
          `bucket ${b.layout.index} of buffer ${b.buffer.index} cannot sync: param(s) ${names} never received a grad (registerGradReady) in this batch`,
        );
      }
      this.startBucketSync(b);
    }
    await Promise.all(this.buckets.map((b) => b.sync));
    await this.ctx.sync();
  }

  /** The bucket's grads as the collectives take them (16-bit words or floats) over its host staging. */
  private hostGrads(b: BucketState): Float32Array | Uint16Array {
    // 16-bit grads travel as their words and are summed in fp32 by the collectives.
    return b.buffer.layout.gradDtype !== 'float32'
      ? new Uint16Array(b.host.buffer, b.host.byteOffset, b.layout.end - b.layout.start)
      : b.host;
  }

  /** Queue the readback of chunk `k` of a bucket into its place in the host staging. */
  private readChunk(b: BucketState, k: number): Promise<void> {
    const chunk = b.chunks[k]!;
    const grads = this.hostGrads(b).subarray(chunk.hostStart, chunk.hostStart + chunk.length);
    // The chunk's pieces are in the grad buffer's bytes; a bucket of its own starts at its first.
    const place = b.buffer.bucketGradPlace(b.layout.index);
    const shift = (place.offset - b.layout.start) * BYTES[b.buffer.layout.gradDtype];
    return this.ctx.transfers.readbackPieces(
      place.buffer,
      chunk.pieces.map((piece) => ({ offset: piece.offset + shift, size: piece.size })),
      new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength),
    );
  }

  /** Sharded grads: a bucket synced (or not needed) gives its memory back. */
  private releaseGrads(b: BucketState): void {
    if (b.buffer.sharding?.grads) b.buffer.bucketGrads[b.layout.index]!.release();
  }

  private startBucketSync(b: BucketState): void {
    if (this.group.worldSize === 1 && !this.gradReduceInBf16) {
      // A world of one: the grads in the buffer are already the average. (bf16 wire grads still make
      // the round trip, so that the rounding is the same at every data-parallel size.) Sharded
      // grads: the bucket is its own shard, copied into the shard buffer on the GPU.
      if (b.buffer.sharding?.grads) {
        const from = b.buffer.bucketGradPlace(b.layout.index);
        const to = b.buffer.gradShardPlace(b.layout.index, 0, 1);
        const bytes = BYTES[b.buffer.layout.gradDtype];
        this.ctx.transfers.copy(from.buffer, 0, to.buffer, to.offset * bytes, (b.layout.end - b.layout.start) * bytes);
        this.releaseGrads(b);
      }
      b.sync = Promise.resolve();
      return;
    }
    // The readbacks' copies are queued now, right behind the work that made these grads (the rest of
    // the backward pass queues after them), unless a param all-gather still uses the host staging.
    const size = b.buffer.gradBytes(b.layout).size;
    let early: Promise<void>[] | null = null;
    if (this.shardingStrategy === 'optim' && this.gathersRunning === 0 && this.earlyBytes + size <= EARLY_READBACK_BYTES) {
      early = b.chunks.map((_, k) => this.readChunk(b, k));
      this.earlyBytes += size;
      Promise.allSettled(early).then(() => (this.earlyBytes -= size));
      for (const read of early) read.catch(() => undefined); // awaited in syncBucket
    }
    const gathers = Promise.all(this.buckets.map((x) => x.gather));
    b.syncing = true;
    b.sync = this.chain
      .then(() => gathers)
      .then(() => this.syncBucket(b, early))
      .finally(() => {
        b.syncing = false;
      });
    this.chain = b.sync.catch(() => undefined);
  }

  /**
   * Chunk by chunk: wait for its readback (queueing the next ones), reduce it over the group, upload
   * the result. The collectives run one at a time, in chunk order on every rank; the readbacks of
   * later chunks copy and map meanwhile.
   */
  private async syncBucket(b: BucketState, early: Promise<void>[] | null): Promise<void> {
    const grads = this.hostGrads(b);
    const { gradDtype } = b.buffer.layout;
    const options = gradDtype !== 'float32' ? { dtype: gradDtype } : this.gradReduceInBf16 ? { wire: 'bfloat16' as const } : {};
    const { phases } = this;
    const reads: Promise<void>[] = early ?? [];
    // The result's place: this rank's shard (in the grad buffer, or the shard buffer), or the whole chunk.
    const bytes = BYTES[b.buffer.layout.gradDtype];
    const { rank, worldSize: d } = this.group;
    const shard = this.layout.distributedOptimizer ? b.buffer.gradShardPlace(b.layout.index, rank, d) : null;
    const target = shard?.buffer ?? b.buffer.grads;
    const shift = shard ? (shard.offset - (b.layout.start + (rank * (b.layout.end - b.layout.start)) / d)) * bytes : 0;
    for (let k = 0; k < b.chunks.length; k++) {
      for (let next = k; next < Math.min(b.chunks.length, k + READS_AHEAD); next++) {
        if (reads[next]) continue;
        const read = this.readChunk(b, next);
        read.catch(() => undefined); // awaited below, unless an earlier chunk fails
        reads[next] = read;
      }
      await phases.time('grad readback', () => reads[k]!);
      if (k === b.chunks.length - 1) this.releaseGrads(b); // every chunk is on the host
      const chunk = b.chunks[k]!;
      const data = grads.subarray(chunk.hostStart, chunk.hostStart + chunk.length);
      const result = this.layout.distributedOptimizer
        ? await phases.time('reduce-scatter', () => this.group.reduceScatter(data, 'avg', options))
        : await phases.time('all-reduce', () => this.group.allReduce(data, 'avg', options)).then(() => data);
      await phases.time('grad upload', async () => this.ctx.transfers.upload(target, result, chunk.uploadOffset + shift));
    }
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
