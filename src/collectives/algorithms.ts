/**
 * The ring algorithms, as frame expectations and sends on one op's context: pipelined
 * reduce-scatter, all-gather and all-reduce (reduce-scatter whose finished segments feed the
 * all-gather at once), a pipelined broadcast along the ring, and a dissemination barrier. The
 * process group owns the op machinery (sequence numbers, routing, timeouts, failures).
 */
import type { CollectiveData } from './process-group.js';
import { float32ToWords, reduceBf16Into, scale, wordsToFloat32, type ReduceOp } from './reduce.js';
import { allGatherStep, barrierRounds, chunkRange, mod, reduceScatterStep, segments, type Range } from './ring.js';
import { reduceBytesInto, scratchFor } from './simd.js';
import type { FrameSink } from './transport.js';

/** What an algorithm may do within one op. */
export interface OpContext {
  /** Expect frame `chunk` from `peer`; its body goes to `sink`. */
  expect(peer: number, chunk: number, sink: FrameSink): void;
  send(peer: number, chunk: number, body?: Uint8Array): void;
}

export function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** How reductions travel: fp32, or bf16 words (summed in fp32 on arrival, rounded when sent on). */
export type WireFormat = 'float32' | 'bfloat16';

const WIRE_BYTES: Record<WireFormat, number> = { float32: 4, bfloat16: 2 };

/** Values as they go on the wire: their own bytes in fp32, new bf16 words (round to nearest even) otherwise. */
function onWire(values: Float32Array, wire: WireFormat): Uint8Array {
  if (wire === 'float32') return bytesOf(values);
  const words = new Uint16Array(values.length);
  float32ToWords(values, 'bfloat16', words);
  return bytesOf(words);
}

/**
 * Reduces a frame body into dst[range] as it arrives. The socket reads straight into a scratch (the
 * WASM scratch beside a host buffer, so the SIMD kernel needs no copy). Bytes of a partial element
 * wait at the scratch's start and the next read lands right after them, so the scratch always holds
 * whole elements from its first byte on.
 */
class ReduceSink implements FrameSink {
  private carried = 0;
  private readonly scratchBytes: Uint8Array;
  private readonly elementBytes: number;
  readonly bytes: number;

  constructor(
    private readonly dst: Float32Array,
    private readonly range: Range,
    private readonly op: ReduceOp,
    private readonly scratch: () => Float32Array,
    private readonly onEnd: () => void,
    private readonly wire: WireFormat,
  ) {
    this.scratchBytes = scratchFor(dst) ?? bytesOf(scratch());
    this.elementBytes = WIRE_BYTES[wire];
    this.bytes = (range.end - range.start) * this.elementBytes;
  }

  target(_offset: number, max: number): Uint8Array {
    const s = this.scratchBytes;
    return s.subarray(this.carried, this.carried + Math.min(max, s.byteLength - this.carried));
  }

  piece(bytes: Uint8Array, offset: number): void {
    const s = this.scratchBytes;
    if (bytes.buffer !== s.buffer || bytes.byteOffset !== s.byteOffset + this.carried) {
      // Bytes that arrived elsewhere (a frame buffered early): pass them through the scratch.
      for (let at = 0; at < bytes.byteLength; ) {
        const t = this.target(offset + at, bytes.byteLength - at);
        t.set(bytes.subarray(at, at + t.byteLength));
        this.piece(t, offset + at);
        at += t.byteLength;
      }
      return;
    }
    const e = this.elementBytes;
    const total = this.carried + bytes.byteLength;
    const whole = Math.floor(total / e);
    if (whole > 0) {
      const element = this.range.start + (offset - this.carried) / e;
      const dst = this.dst.subarray(element, element + whole);
      if (this.wire === 'float32') reduceBytesInto(dst, s.subarray(0, whole * 4), this.op, this.scratch);
      else reduceBf16Into(dst, new Uint16Array(s.buffer, s.byteOffset, whole), this.op);
    }
    this.carried = total - whole * e;
    if (this.carried > 0) s.copyWithin(0, whole * e, total);
  }

  end(): void {
    this.onEnd();
  }
}

/** Writes a frame body into dst at `start` bytes: the socket reads it straight into place. */
function copySink(dst: Uint8Array, start: number, end: number, onEnd: () => void): FrameSink {
  return {
    bytes: end - start,
    target: (offset, max) => dst.subarray(start + offset, start + offset + max),
    piece: (bytes, offset) => {
      if (bytes.buffer !== dst.buffer || bytes.byteOffset !== dst.byteOffset + start + offset) dst.set(bytes, start + offset);
    },
    end: onEnd,
  };
}

/** A rank's view of the ring: who it is, how many there are, how data is segmented. */
export class Ring {
  constructor(
    readonly rank: number,
    readonly worldSize: number,
    readonly segmentBytes: number,
    private readonly scratch: () => Float32Array,
  ) {}

  segmentElements(bytesPerElement: number): number {
    return Math.max(1, Math.floor(this.segmentBytes / bytesPerElement));
  }

  byteChunk(data: CollectiveData, c: number): Range {
    const r = chunkRange(data.length, this.worldSize, c);
    return { start: r.start * data.BYTES_PER_ELEMENT, end: r.end * data.BYTES_PER_ELEMENT };
  }

  /** Chunk ids per ring step: the most segments any chunk has, the same on every rank. */
  segmentsPerStep(length: number, bytesPerElement: number): number {
    return Math.max(1, Math.ceil(Math.ceil(length / this.worldSize) / this.segmentElements(bytesPerElement)));
  }

  /**
   * Ring reduce-scatter of `values`; with the bf16 wire, what a rank sends on is its fp32 partial sum
   * rounded to bf16, and its own shard ends as an fp32 sum of bf16 words and its own fp32 values.
   */
  reduceScatter(values: Float32Array, op: ReduceOp, wire: WireFormat = 'float32', onShardSegment?: (seg: Range, j: number) => void) {
    return (ctx: OpContext) => {
      const n = this.worldSize;
      const r = this.rank;
      const right = mod(r + 1, n);
      const left = mod(r - 1, n);
      const segElems = this.segmentElements(4);
      const S = this.segmentsPerStep(values.length, 4);
      const segs = (c: number) => segments(chunkRange(values.length, n, c), segElems);
      for (let k = 0; k < n - 1; k++) {
        segs(reduceScatterStep(r, n, k).recv).forEach((seg, j) => {
          const onEnd = () => {
            if (k < n - 2) ctx.send(right, (k + 1) * S + j, onWire(values.subarray(seg.start, seg.end), wire));
            else onShardSegment?.(seg, j);
          };
          ctx.expect(left, k * S + j, new ReduceSink(values, seg, op, this.scratch, onEnd, wire));
        });
      }
      for (const [j, seg] of segs(reduceScatterStep(r, n, 0).send).entries())
        ctx.send(right, j, onWire(values.subarray(seg.start, seg.end), wire));
    };
  }

  /**
   * All-gather ring over bytes. `firstChunkId` offsets the frame chunk ids (all-reduce runs this
   * after its reduce-scatter within one op). With `deferFirst`, the caller sends step 0 itself.
   * `segmentOf` sets the elements per segment (all-reduce's reduce-scatter's, whatever the wire
   * format); `onReceived` sees each received segment's byte range once it is in place.
   */
  allGather(
    ctx: OpContext,
    bytes: Uint8Array,
    chunkOf: (c: number) => Range,
    firstChunkId: number,
    bytesPerElement: number,
    options: { deferFirst?: boolean; segmentOf?: number; onReceived?: (seg: Range) => void } = {},
  ): (j: number) => void {
    const n = this.worldSize;
    const r = this.rank;
    const right = mod(r + 1, n);
    const left = mod(r - 1, n);
    const segmentOf = options.segmentOf ?? bytesPerElement;
    const segBytes = this.segmentElements(segmentOf) * bytesPerElement;
    const elements = bytes.byteLength / bytesPerElement;
    const S = this.segmentsPerStep(elements, segmentOf);
    const segs = (c: number) => segments(chunkOf(c), segBytes);
    for (let k = 0; k < n - 1; k++) {
      segs(allGatherStep(r, n, k).recv).forEach((seg, j) => {
        const onEnd = () => {
          options.onReceived?.(seg);
          if (k < n - 2) ctx.send(right, firstChunkId + (k + 1) * S + j, bytes.subarray(seg.start, seg.end));
        };
        ctx.expect(left, firstChunkId + k * S + j, copySink(bytes, seg.start, seg.end, onEnd));
      });
    }
    const own = segs(allGatherStep(r, n, 0).send);
    const sendFirst = (j: number) => ctx.send(right, firstChunkId + j, bytes.subarray(own[j]!.start, own[j]!.end));
    if (!options.deferFirst) for (let j = 0; j < own.length; j++) sendFirst(j);
    return sendFirst;
  }

  /**
   * Ring all-reduce: reduce-scatter, then all-gather of the reduced chunks. With the bf16 wire the
   * chunks are gathered as bf16 words, and every rank (the chunk's owner too) ends with the same
   * bf16-rounded result: data-parallel replicas stay identical.
   */
  allReduce(values: Float32Array, op: ReduceOp, wire: WireFormat = 'float32') {
    return (ctx: OpContext) => {
      const n = this.worldSize;
      const S = this.segmentsPerStep(values.length, 4);
      const e = WIRE_BYTES[wire];
      const words = wire === 'float32' ? null : new Uint16Array(values.length);
      const bytes = words ? bytesOf(words) : bytesOf(values);
      const chunkOf = (c: number) => {
        const r = chunkRange(values.length, n, c);
        return { start: r.start * e, end: r.end * e };
      };
      const widen = (from: number, to: number) => {
        if (words) wordsToFloat32(words.subarray(from, to), 'bfloat16', values.subarray(from, to));
      };
      // Each fully reduced segment of this rank's chunk goes straight into the all-gather.
      const sendGathered = this.allGather(ctx, bytes, chunkOf, (n - 1) * S, e, {
        deferFirst: true,
        segmentOf: 4,
        onReceived: (seg) => widen(seg.start / e, seg.end / e),
      });
      this.reduceScatter(values, op, wire, (seg, j) => {
        if (op === 'avg') scale(values.subarray(seg.start, seg.end), 1 / n);
        if (words) {
          float32ToWords(values.subarray(seg.start, seg.end), 'bfloat16', words.subarray(seg.start, seg.end));
          widen(seg.start, seg.end);
        }
        sendGathered(j);
      })(ctx);
    };
  }

  broadcast(ctx: OpContext, bytes: Uint8Array, root: number): void {
    const n = this.worldSize;
    const right = mod(this.rank + 1, n);
    const left = mod(this.rank - 1, n);
    const segs = segments({ start: 0, end: bytes.byteLength }, this.segmentBytes);
    if (this.rank === root) {
      for (const [j, seg] of segs.entries()) ctx.send(right, j, bytes.subarray(seg.start, seg.end));
      return;
    }
    segs.forEach((seg, j) => {
      const forward = () => right !== root && ctx.send(right, j, bytes.subarray(seg.start, seg.end));
      ctx.expect(left, j, copySink(bytes, seg.start, seg.end, forward));
    });
  }

  barrier(ctx: OpContext): void {
    const rounds = barrierRounds(this.rank, this.worldSize);
    rounds.forEach(({ from }, i) => {
      ctx.expect(from, i, { bytes: 0, piece: () => undefined, end: () => i + 1 < rounds.length && ctx.send(rounds[i + 1]!.to, i + 1) });
    });
    if (rounds.length > 0) ctx.send(rounds[0]!.to, 0);
  }
}
