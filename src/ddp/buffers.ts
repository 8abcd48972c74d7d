/**
 * The contiguous param and grad buffers of one (param dtype, grad dtype) pair, on the GPU, laid out
 * by `computeLayout`. Every model param is a view (buffer + element offset) into them; grads are
 * written or accumulated straight into the grad buffer, never into per-param copies.
 *
 * With Megatron-FSDP's sharding strategies a bucket's grads (`optim_grads`), and also its params
 * (`optim_grads_params`), are whole only while they are used: each bucket has a buffer of its own
 * that gives its memory back between uses (a releasable DeviceBuffer, so the views stay valid), and
 * this rank keeps only its shard of every bucket, in one buffer: bucket k's shard at element
 * buckets[k].start / d.
 */
import { DdpError } from './ddp.js';
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { BYTES, type BufferLayout, type IndexRange, type ParamPlacement } from './layout.js';

/** A param's (or its grad's) place: a buffer and an element range in it. */
export interface BufferView {
  buffer: DeviceBuffer;
  /** First element. */
  offset: number;
  numel: number;
  shape: readonly number[];
}

/** An array's place: a buffer and the element where it starts. */
export interface Place {
  buffer: DeviceBuffer;
  offset: number;
}

/** What each rank keeps only its shard of (Megatron-FSDP's strategies: optim_grads, optim_grads_params). */
export interface BufferSharding {
  rank: number;
  d: number;
  grads: boolean;
  params: boolean;
}

export class ParamAndGradBuffer {
  private readonly wholeParams: DeviceBuffer | null;
  private readonly wholeGrads: DeviceBuffer | null;
  /** Sharded params: one releasable buffer per bucket, whole between a gather and its release. */
  readonly bucketParams: DeviceBuffer[] = [];
  /** Sharded grads: one releasable buffer per bucket, whole from the first write of a backward to its sync. */
  readonly bucketGrads: DeviceBuffer[] = [];
  /** Sharded params: this rank's shard of every bucket. */
  readonly paramShard: DeviceBuffer | null = null;
  /** Sharded grads: this rank's shard of every bucket's reduced grads. */
  readonly gradShard: DeviceBuffer | null = null;
  private readonly placements: Map<string, ParamPlacement>;

  constructor(
    readonly ctx: GpuContext,
    readonly layout: BufferLayout,
    readonly index: number,
    readonly sharding: BufferSharding | null = null,
  ) {
    const label = `${layout.paramDtype}/${layout.gradDtype}#${index}`;
    const words = (elements: number, bytes: number) => Math.ceil((elements * bytes) / 4) * 4;
    const make = (what: string, elements: number, bytes: number, category: 'params' | 'grads', releasable = false) =>
      ctx.createBuffer({
        label: `${what} ${label}`,
        size: words(elements, bytes),
        usage: storageUsage(),
        category,
        ...(releasable ? { releasable: { resident: false } } : {}),
      });
    const pb = BYTES[layout.paramDtype];
    const gb = BYTES[layout.gradDtype];
    if (sharding && layout.buckets.some((b) => (b.end - b.start) % sharding.d !== 0))
      throw new DdpError(
        `buffer ${index}: sharded buckets must split into ${sharding.d} equal shards (use the distributed optimizer's layout)`,
      );
    const shardElements = sharding ? layout.numel / sharding.d : 0;
    const bucketsOf = (what: string, bytes: number, category: 'params' | 'grads') =>
      layout.buckets.map((b) => make(`${what} bucket ${b.index}`, b.end - b.start, bytes, category, true));
    if (sharding?.params) {
      this.wholeParams = null;
      this.bucketParams = bucketsOf('params', pb, 'params');
      this.paramShard = make('params shard', shardElements, pb, 'params');
    } else {
      this.wholeParams = make('params', layout.numel, pb, 'params');
    }
    if (sharding?.grads) {
      this.wholeGrads = null;
      this.bucketGrads = bucketsOf('grads', gb, 'grads');
      this.gradShard = make('grads shard', shardElements, gb, 'grads');
    } else {
      this.wholeGrads = make('grads', layout.numel, gb, 'grads');
    }
    this.placements = new Map(layout.params.map((p) => [p.name, p]));
  }

  /** The whole param buffer (an error with sharded params: use `bucketParamPlace`). */
  get params(): DeviceBuffer {
    if (!this.wholeParams) throw new DdpError(`buffer ${this.index}: params are sharded (optim_grads_params); no rank holds them whole`);
    return this.wholeParams;
  }

  /** The whole grad buffer (an error with sharded grads: use `bucketGradPlace`). */
  get grads(): DeviceBuffer {
    if (!this.wholeGrads) throw new DdpError(`buffer ${this.index}: grads are sharded (optim_grads); no rank holds them whole`);
    return this.wholeGrads;
  }

  private placement(name: string): ParamPlacement {
    const p = this.placements.get(name);
    if (!p) throw new DdpError(`param '${name}' is not in buffer ${this.index} (${this.layout.paramDtype}/${this.layout.gradDtype})`);
    return p;
  }

  paramView(name: string): BufferView {
    return this.viewIn(name, (k) => this.bucketParamPlace(k));
  }

  gradView(name: string): BufferView {
    return this.viewIn(name, (k) => this.bucketGradPlace(k));
  }

  /** Param `name` where its bucket is whole (`placeOf` the bucket). */
  private viewIn(name: string, placeOf: (bucket: number) => Place): BufferView {
    const p = this.placement(name);
    const at = placeOf(p.bucket);
    return { buffer: at.buffer, offset: at.offset + p.start - this.layout.buckets[p.bucket]!.start, numel: p.numel, shape: p.shape };
  }

  /**
   * The part of param `name` in this rank's shard of its bucket (`rank` of `d`): elements
   * [from, to) of the buffer, the first of them at `place` (in the shard buffer of `which`, or in
   * the whole buffer); null when the shard holds none of it.
   */
  shardPart(name: string, which: 'params' | 'grads', rank: number, d: number): { from: number; to: number; place: Place } | null {
    const p = this.placement(name);
    const bucket = this.layout.buckets[p.bucket]!;
    const size = (bucket.end - bucket.start) / d;
    const first = bucket.start + rank * size;
    const from = Math.max(p.start, first);
    const to = Math.min(p.end, first + size);
    if (from >= to) return null;
    const shard = which === 'params' ? this.paramShardPlace(p.bucket, rank, d) : this.gradShardPlace(p.bucket, rank, d);
    return { from, to, place: { buffer: shard.buffer, offset: shard.offset + from - first } };
  }

  /** Where bucket k's params are whole: its own buffer (sharded params) or the param buffer. */
  bucketParamPlace(k: number): Place {
    return this.sharding?.params
      ? { buffer: this.bucketParams[k]!, offset: 0 }
      : { buffer: this.params, offset: this.layout.buckets[k]!.start };
  }

  /** Where bucket k's grads are whole: its own buffer (sharded grads) or the grad buffer. */
  bucketGradPlace(k: number): Place {
    return this.sharding?.grads
      ? { buffer: this.bucketGrads[k]!, offset: 0 }
      : { buffer: this.grads, offset: this.layout.buckets[k]!.start };
  }

  /** Where this rank's shard of bucket k's params is (`rank` of `d`): the shard buffer, or its place in the param buffer. */
  paramShardPlace(k: number, rank: number, d: number): Place {
    const b = this.layout.buckets[k]!;
    if (this.sharding?.params) return { buffer: this.paramShard!, offset: b.start / d };
    return { buffer: this.params, offset: b.start + (rank * (b.end - b.start)) / d };
  }

  /** Where this rank's shard of bucket k's reduced grads is. */
  gradShardPlace(k: number, rank: number, d: number): Place {
    const b = this.layout.buckets[k]!;
    if (this.sharding?.grads) return { buffer: this.gradShard!, offset: b.start / d };
    return { buffer: this.grads, offset: b.start + (rank * (b.end - b.start)) / d };
  }

  /** Bytes of an element range of the grad buffer. */
  gradBytes(range: IndexRange): { offset: number; size: number } {
    const b = BYTES[this.layout.gradDtype];
    return { offset: range.start * b, size: (range.end - range.start) * b };
  }

  paramBytes(range: IndexRange): { offset: number; size: number } {
    const b = BYTES[this.layout.paramDtype];
    return { offset: range.start * b, size: (range.end - range.start) * b };
  }

  /** Queue a zeroing of the grads (padding included): the whole buffer, or the buckets that hold memory. */
  zeroGrads(encoder: GPUCommandEncoder): void {
    if (this.wholeGrads) encoder.clearBuffer(this.wholeGrads.gpu);
    for (const b of this.bucketGrads) if (b.resident) encoder.clearBuffer(b.gpu);
  }

  destroy(): void {
    for (const b of [this.wholeParams, this.wholeGrads, this.paramShard, this.gradShard, ...this.bucketParams, ...this.bucketGrads])
      b?.destroy();
  }
}
