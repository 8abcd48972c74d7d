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
import type { GpuContext } from '../gpu/context.js';
import { ParamAndGradBuffer, type BufferView } from './buffers.js';
import { BYTES, type BucketLayout, type ModelLayout } from './layout.js';
import { EARLY_READBACK_BYTES, planSyncChunks, READS_AHEAD, type SyncChunk } from './sync-plan.js';
import { PhaseTimes } from './phases.js';

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
}

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
      if (!['float32/float32', 'bfloat16/float32', 'float16/float16'].includes(row)) {
        throw new DdpError(
          `params ${b.paramDtype} with grads ${b.gradDtype}: use fp32/fp32, bf16/fp32 or fp16/fp16 (Megatron's three rows)`,
        );
      }
    }
    this.overlapGradReduce = options.overlapGradReduce ?? false;
    this.gradReduceInBf16 = options.gradReduceInBf16 ?? false;
    this.phases = options.phases ?? new PhaseTimes();
    this.syncChunkBytes = options.syncChunkBytes;
    this.buffers = layout.buffers.map((b, i) => new ParamAndGradBuffer(ctx, b, i));
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

  /** Every param's values, compact (no padding), read back from the param buffers. */
  async exportParams(): Promise<Map<string, Float32Array>> {
    await this.finishParamSync();
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

  /** Set every param from compact values (padding becomes zero; 16-bit params round to nearest even). */
  importParams(values: Map<string, Float32Array>): void {
    this.version += 1;
    for (const buffer of this.buffers) {
      const all = new Float32Array(buffer.layout.numel);
      for (const p of buffer.layout.params) {
        const v = values.get(p.name);
        if (!v || v.length !== p.numel)
          throw new DdpError(`importParams: '${p.name}' needs ${p.numel} values, got ${v ? v.length : 'none'}`);
        all.set(v, p.start);
      }
      const dtype = buffer.layout.paramDtype;
      if (dtype !== 'float32') {
        const words = new Uint16Array(all.length);
        float32ToWords(all, dtype, words);
        this.ctx.transfers.upload(buffer.params, words);
      } else {
        this.ctx.transfers.upload(buffer.params, all);
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

  /** The bucket's grads as the collectives take them (fp16 words or floats) over its host staging. */
  private hostGrads(b: BucketState): Float32Array | Uint16Array {
    // fp16 grads travel as fp16 words and are summed in fp32 by the collectives.
    return b.buffer.layout.gradDtype === 'float16'
      ? new Uint16Array(b.host.buffer, b.host.byteOffset, b.layout.end - b.layout.start)
      : b.host;
  }

  /** Queue the readback of chunk `k` of a bucket into its place in the host staging. */
  private readChunk(b: BucketState, k: number): Promise<void> {
    const chunk = b.chunks[k]!;
    const grads = this.hostGrads(b).subarray(chunk.hostStart, chunk.hostStart + chunk.length);
    return this.ctx.transfers.readbackPieces(
      b.buffer.grads,
      chunk.pieces,
      new Uint8Array(grads.buffer, grads.byteOffset, grads.byteLength),
    );
  }

  private startBucketSync(b: BucketState): void {
    if (this.group.worldSize === 1 && !this.gradReduceInBf16) {
      // A world of one: the grads in the buffer are already the average. (bf16 wire grads still make
      // the round trip, so that the rounding is the same at every data-parallel size.)
      b.sync = Promise.resolve();
      return;
    }
    // The readbacks' copies are queued now, right behind the work that made these grads (the rest of
    // the backward pass queues after them), unless a param all-gather still uses the host staging.
    const size = b.buffer.gradBytes(b.layout).size;
    let early: Promise<void>[] | null = null;
    if (this.gathersRunning === 0 && this.earlyBytes + size <= EARLY_READBACK_BYTES) {
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
    const options =
      b.buffer.layout.gradDtype === 'float16' ? { dtype: 'float16' as const } : this.gradReduceInBf16 ? { wire: 'bfloat16' as const } : {};
    const { phases } = this;
    const reads: Promise<void>[] = early ?? [];
    for (let k = 0; k < b.chunks.length; k++) {
      for (let next = k; next < Math.min(b.chunks.length, k + READS_AHEAD); next++) {
        if (reads[next]) continue;
        const read = this.readChunk(b, next);
        read.catch(() => undefined); // awaited below, unless an earlier chunk fails
        reads[next] = read;
      }
      await phases.time('grad readback', () => reads[k]!);
      const chunk = b.chunks[k]!;
      const data = grads.subarray(chunk.hostStart, chunk.hostStart + chunk.length);
      const result = this.layout.distributedOptimizer
        ? await phases.time('reduce-scatter', () => this.group.reduceScatter(data, 'avg', options))
        : await phases.time('all-reduce', () => this.group.allReduce(data, 'avg', options)).then(() => data);
      await phases.time('grad upload', async () => this.ctx.transfers.upload(b.buffer.grads, result, chunk.uploadOffset));
    }
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
