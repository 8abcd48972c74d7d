/**
 * ZeRO-1 (Megatron's --use-distributed-optimizer): after the grads are reduce-scattered, each rank
 * runs the update (Adam, SGD or Lion) on its own shard of every bucket only, then all-gathers the
 * updated params bucket by bucket (in the background with `overlapParamGather`). A bucket gathers
 * in the grad sync's chunks (slice k of every shard together), pipelined the same way: this rank's
 * slices are read back through staging of their own, chunk k is gathered while the next ones map,
 * and the other ranks' slices go up as soon as it ends.
 */
import { ConfigError } from '../errors.js';
import type { Collectives } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import { BYTES } from '../ddp/layout.js';
import { EARLY_READBACK_BYTES, planSyncChunks, READS_AHEAD, type SyncChunk } from '../ddp/sync-plan.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import type { StateOperand } from './adam.js';
import { wordsToFloat32 } from '../collectives/reduce.js';
import type { CastRange } from './cast.js';
import type { MomentKind } from './momentum-math.js';
import {
  emptyOptimizerState,
  type OptimizerConfig,
  OptimizerOverBuffers,
  type OptimizerState,
  STATE_FIELD,
  type StatePiece,
} from './optimizer-base.js';
import { shardRanges, type ShardRange } from './ranges.js';
import { SumOfSquares } from './sumsq.js';
import type { UnscaleRange } from './unscale.js';

export class DistributedOptimizer extends OptimizerOverBuffers {
  readonly distributed = true;
  private readonly ranges: ShardRange[];
  /** The param all-gather's chunks of each shard range's bucket. */
  private readonly gatherChunks: SyncChunk[][];
  /** Each moment the update keeps, for this rank's shards. */
  private readonly momentBuffers: [MomentKind, DeviceBuffer][];
  private readonly main: DeviceBuffer | null;

  constructor(ctx: GpuContext, group: Collectives, ddp: DistributedDataParallel, config: OptimizerConfig) {
    super(ctx, group, ddp, config);
    if (!ddp.layout.distributedOptimizer)
      throw new ConfigError(
        'DistributedOptimizer needs a DistributedDataParallel made with distributedOptimizer: true',
        'distributedOptimizer',
      );
    this.ranges = shardRanges(ddp.layout, group.rank);
    this.gatherChunks = this.ranges.map((r) => {
      const buffer = ddp.buffers[r.buffer]!;
      const bucket = buffer.layout.buckets[r.bucket]!;
      return planSyncChunks(bucket, BYTES[buffer.layout.paramDtype], group.worldSize, group.rank, ddp.syncChunkBytes);
    });
    const shardElements = this.ranges.reduce((n, r) => n + (r.gbufLocal.end - r.gbufLocal.start), 0);
    this.momentBuffers = this.moments.map((kind) => [kind, this.stateBuffer(`${kind} (shard)`, shardElements, this.momentDtype(kind))]);
    const layoutOf = (r: ShardRange) => ddp.buffers[r.buffer]!.layout;
    // fp32 params (and fp16 params with fp16 main params): the main params are the param buffer's
    // shard itself; otherwise a copy, fp32 or (--main-params-dtype fp16) fp16.
    const main = this.ranges.some((r) => this.hasMainParams(layoutOf(r).paramDtype))
      ? this.stateBuffer('main params (shard)', shardElements, this.mainParamsDtype, 'main-params')
      : null;
    // fp16 grads: Adam reads fp32 main grads, unscaled from the shard (counted as grads). bf16 grads
    // (--main-grads-dtype bf16) it reads as they are.
    const mainGrads = this.ranges.some((r) => layoutOf(r).gradDtype === 'float16')
      ? this.fp32Buffer('main grads (shard)', shardElements, 'grads')
      : null;
    this.main = main;
    const casts: Record<'bfloat16' | 'float16', CastRange[]> = { bfloat16: [], float16: [] };
    const unscaleRanges: UnscaleRange[] = [];
    const normRanges: { operand: StateOperand; length: number }[] = [];
    let at = 0;
    for (const r of this.ranges) {
      const buffer = ddp.buffers[r.buffer]!;
      const { paramDtype, gradDtype } = buffer.layout;
      const length = r.gbufLocal.end - r.gbufLocal.start;
      // This rank's shard of the bucket's params and grads: in the whole buffers, or in the shard
      // buffers of Megatron-FSDP's strategies.
      const { rank, worldSize: d } = group;
      const paramShard = buffer.paramShardPlace(r.bucket, rank, d);
      const gradShard = buffer.gradShardPlace(r.bucket, rank, d);
      const ownMain = !this.hasMainParams(paramDtype);
      const param = ownMain ? { ...paramShard, dtype: paramDtype } : { buffer: main!, offset: at, dtype: this.mainParamsDtype };
      if (!ownMain) casts[paramDtype as 'bfloat16' | 'float16'].push({ wide: param, narrow: paramShard, length });
      const grad = gradDtype === 'float16' ? { buffer: mainGrads!, offset: at } : { ...gradShard, dtype: gradDtype };
      if (gradDtype === 'float16') unscaleRanges.push({ narrow: gradShard, wide: grad, length });
      normRanges.push({ operand: grad, length });
      this.normPadding += length - r.params.reduce((n, p) => n + p.paramLocal.end - p.paramLocal.start, 0);
      const shapeOf = (name: string) => buffer.layout.params.find((x) => x.name === name)!.shape;
      this.addKernels(
        {
          param,
          grad,
          moments: Object.fromEntries(
            this.momentBuffers.map(([kind, buffer]) => [kind, { buffer, offset: at, dtype: this.momentDtype(kind) }]),
          ),
        },
        length,
        r.params.map((p) => ({ name: p.name, shape: shapeOf(p.name), start: p.paramLocal.start })),
      );
      at += length;
    }
    this.setUpHalves(casts, unscaleRanges);
    this.norm = new SumOfSquares(ctx, normRanges, config.countZeros);
  }

  protected async anyRank(foundInf: boolean): Promise<boolean> {
    const flag = new Float32Array([foundInf ? 1 : 0]);
    await this.group.allReduce(flag, 'max');
    return flag[0]! > 0;
  }

  /** Whether the params of a shard range have main params apart from themselves (16-bit params, in the main buffer). */
  private hasMain(r: ShardRange): boolean {
    return this.hasMainParams(this.ddp.buffers[r.buffer]!.layout.paramDtype);
  }

  /** This rank's shards of every param, as pieces of its moment (and 16-bit params' main) buffers. */
  statePieces(): StatePiece[] {
    this.refreshMainParams();
    const pieces: StatePiece[] = [];
    let at = 0;
    for (const r of this.ranges) {
      for (const p of r.params) {
        const place = { name: p.name, range: p.param, offset: at + p.paramLocal.start };
        for (const [kind, buffer] of this.momentBuffers) pieces.push({ kind, buffer, dtype: this.momentDtype(kind), ...place });
        const { paramDtype } = this.ddp.buffers[r.buffer]!.layout;
        if (this.hasMain(r)) {
          pieces.push({ kind: 'main_params', buffer: this.main!, dtype: this.mainParamsDtype, ...place });
        } else if (paramDtype !== 'float32') {
          // fp16 params that are their own main params: the checkpoint still has main params, so
          // that a run keeping fp32 main params can resume from it (and this one from such a run's).
          const shard = this.ddp.buffers[r.buffer]!.paramShardPlace(r.bucket, this.group.rank, this.group.worldSize);
          pieces.push({
            kind: 'main_params',
            ...place,
            buffer: shard.buffer,
            offset: shard.offset + p.paramLocal.start,
            dtype: paramDtype,
          });
        }
      }
      at += r.gbufLocal.end;
    }
    return pieces;
  }

  /** Gathers every bucket's moments through its host staging: every rank must call it. */
  async exportState(): Promise<OptimizerState> {
    await this.ddp.finishParamSync(); // the gathers use the same host staging
    this.refreshMainParams();
    const state: OptimizerState = { ...emptyOptimizerState(), ...(this.main ? { main: new Map() } : {}) };
    for (const [which, moments] of this.stateBuffers()) {
      let at = 0;
      for (const r of this.ranges) {
        const s = r.gbufLocal.end;
        // Only params with main params apart from themselves have main params to export.
        if (which !== 'main' || this.hasMain(r)) {
          const bucket = this.ddp.buffers[r.buffer]!.layout.buckets[r.bucket]!;
          const host = this.ddp.hostBucket(r.buffer, r.bucket);
          const mine = host.subarray(this.group.rank * s, (this.group.rank + 1) * s);
          const dtype = which === 'main' ? this.mainParamsDtype : this.momentDtype(which);
          if (dtype === 'float32') {
            await this.ctx.transfers.readback(moments, at * 4, s * 4, new Uint8Array(mine.buffer, mine.byteOffset, s * 4));
          } else {
            const bytes = await this.ctx.transfers.readback(moments, at * 2, s * 2);
            wordsToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, s), dtype, mine);
          }
          await this.group.allGather(host);
          for (const p of this.ddp.buffers[r.buffer]!.layout.params) {
            if (p.bucket === r.bucket)
              state[which === 'main' ? 'main' : STATE_FIELD[which]]!.set(p.name, host.slice(p.start - bucket.start, p.end - bucket.start));
          }
        }
        at += s;
      }
    }
    return state;
  }

  /** The state buffers of this rank's shards: each moment, and the main params. */
  private stateBuffers(): [MomentKind | 'main', DeviceBuffer][] {
    return this.main ? [...this.momentBuffers, ['main', this.main]] : this.momentBuffers;
  }

  protected async globalSums(local: number[]): Promise<number[]> {
    const total = Float32Array.from(local);
    await this.group.allReduce(total, 'sum');
    return [...total];
  }

  protected async afterUpdate(): Promise<void> {
    // A world of one: Adam wrote every param in the buffer already; there is nothing to gather.
    // Sharded params (optim_grads_params): each bucket is gathered when the next pass needs it.
    if (this.group.worldSize === 1 || this.ddp.shardedParams) return;
    // The next forward reads the last bucket first (bucket 0 holds the model's end): gather in that
    // order. Every shard's readback is queued now, right behind Adam, so that none waits behind the
    // next forward's work while the gathers run beside it.
    const order = this.config.overlapParamGather ? [...this.ranges].reverse() : this.ranges;
    // Early readbacks hold staging buffers until their gather runs: at most EARLY_READBACK_BYTES.
    let early = 0;
    const reads = order.map((r) => {
      early += this.hostShard(r).mine.byteLength;
      return { r, reads: early <= EARLY_READBACK_BYTES ? this.readShard(r) : null };
    });
    if (!this.config.overlapParamGather) {
      for (const { r, reads: queued } of reads) await this.gatherBucket(r, queued);
      return;
    }
    let chain: Promise<void> = Promise.resolve();
    for (const { r, reads: queued } of reads) {
      chain = chain.then(() => this.gatherBucket(r, queued));
      this.ddp.setParamGather(r.buffer, r.bucket, chain);
    }
  }

  /** The bucket's params in its host staging: this rank's updated shard in place, the rest to gather. */
  private hostShard(r: ShardRange): { params: Float32Array | Uint16Array; mine: Uint8Array } {
    const bucket = this.ddp.buffers[r.buffer]!.layout.buckets[r.bucket]!;
    const params = this.ddp.hostParams(r.buffer, r.bucket).subarray(0, bucket.end - bucket.start);
    const s = r.gbufLocal.end;
    const bytes = params.BYTES_PER_ELEMENT;
    return { params, mine: new Uint8Array(params.buffer, params.byteOffset + this.group.rank * s * bytes, s * bytes) };
  }

  /** Queue the copy of this rank's slice of gather chunk `k` to its place in the host staging. */
  private readSlice(r: ShardRange, k: number): Promise<void> {
    const chunk = this.gatherChunks[this.ranges.indexOf(r)]![k]!;
    const { params } = this.hostShard(r);
    const slice = chunk.length / this.group.worldSize;
    const mine = params.subarray(chunk.hostStart + this.group.rank * slice, chunk.hostStart + (this.group.rank + 1) * slice);
    const read = this.ctx.transfers.readbackPieces(
      this.ddp.buffers[r.buffer]!.params,
      [chunk.pieces[this.group.rank]!],
      new Uint8Array(mine.buffer, mine.byteOffset, mine.byteLength),
    );
    read.catch(() => undefined); // awaited in gatherBucket, unless an earlier chunk fails
    return read;
  }

  /** Queue the readbacks of all this rank's slices of a bucket (the copies are submitted at the call). */
  private readShard(r: ShardRange): Promise<void>[] {
    return this.gatherChunks[this.ranges.indexOf(r)]!.map((_, k) => this.readSlice(r, k));
  }

  private async gatherBucket(r: ShardRange, early: Promise<void>[] | null): Promise<void> {
    const buffer = this.ddp.buffers[r.buffer]!;
    const chunks = this.gatherChunks[this.ranges.indexOf(r)]!;
    const { params } = this.hostShard(r);
    const { rank, worldSize: d } = this.group;
    const phases = this.ddp.phases;
    const reads = early ?? [];
    for (let k = 0; k < chunks.length; k++) {
      for (let next = k; next < Math.min(chunks.length, k + READS_AHEAD); next++) reads[next] ??= this.readSlice(r, next);
      await phases.time('param readback', () => reads[k]!);
      const chunk = chunks[k]!;
      const data = params.subarray(chunk.hostStart, chunk.hostStart + chunk.length);
      await phases.time('all-gather', () => this.group.allGather(data));
      // The other ranks' slices; this rank's is in the buffer already. The queue runs the uploads
      // before anything submitted after them (the next forward): no wait.
      const slice = chunk.length / d;
      await phases.time('param upload', async () => {
        for (let other = 0; other < d; other++) {
          if (other === rank) continue;
          this.ctx.transfers.upload(buffer.params, data.subarray(other * slice, (other + 1) * slice), chunk.pieces[other]!.offset);
        }
      });
    }
  }
}
