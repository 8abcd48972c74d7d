/**
 * The ProcessGroup API: reduceScatter, allGather, allReduce, broadcast and barrier over the
 * transport, each returning a Promise. Ops run one after another in issue order; each carries a
 * sequence number in every frame, so data of another op is an error rather than mixed in. The
 * first failure (a dead peer, a timeout, a mismatched op) rejects the op in flight and every later
 * one, and closes the group.
 *
 * Contracts (like torch.distributed's *_tensor variants, in place):
 * - `reduceScatter(data)`: data.length must be a multiple of the world size s; afterwards this
 *   rank's shard data[r·len/s, (r+1)·len/s) holds the reduction and is returned as a view; the rest
 *   of `data` is scratch.
 * - `allGather(data)`: data.length a multiple of s; this rank's shard is the input; afterwards every
 *   shard holds its rank's input.
 * - `allReduce(data)`: any length. `broadcast(data, root)`: any length.
 * - Float32Array data, or Uint16Array of fp16 / bf16 words ({ dtype }), reduced in fp32: partial
 *   sums travel as fp32 and are rounded to 16 bits once, at the end.
 * - `{ wire: 'bfloat16' }` (Float32Array reductions): values travel as bf16 words, half the bytes,
 *   and are summed in fp32 where they arrive (Megatron-LM's --grad-reduce-in-bf16, fp32 accumulation).
 *   A reduce-scatter's shard is an fp32 sum of bf16-rounded partials; an all-reduce's result is
 *   rounded to bf16 on every rank alike.
 */
import { CollectiveError, CollectiveOpError } from './errors.js';
import type { FrameHeader, OpName, WireDtype, WireReduceOp } from './frame.js';
import { bytesOf, Ring, type OpContext, type WireFormat } from './algorithms.js';
import { float32ToWords, scale, wordsToFloat32, type HalfDtype, type ReduceOp } from './reduce.js';
import { hostFloat32 } from './simd.js';
import type { FrameSink, Transport } from './transport.js';

export type CollectiveData = Float32Array | Uint16Array;

export interface OpOptions {
  /** This op's timeout instead of the group's (e.g. a checkpoint save's generous deadline). */
  timeoutMs?: number;
}

export interface DataOptions extends OpOptions {
  /** Required for Uint16Array data in reductions. */
  dtype?: HalfDtype;
  /** How Float32Array reductions travel: fp32 (default) or bf16 words summed in fp32. */
  wire?: WireFormat;
}

/**
 * What DDP and the optimizers need of a process group: `ProcessGroup` over TCP, or a simulation of
 * d ranks inside one process (tests).
 */
export interface Collectives {
  readonly rank: number;
  readonly worldSize: number;
  allReduce(data: CollectiveData, op?: ReduceOp, options?: DataOptions): Promise<void>;
  reduceScatter<T extends CollectiveData>(data: T, op?: ReduceOp, options?: DataOptions): Promise<T>;
  allGather(data: CollectiveData, options?: OpOptions): Promise<void>;
  broadcast(data: CollectiveData, root?: number, options?: OpOptions): Promise<void>;
  barrier(options?: OpOptions): Promise<void>;
  /** Payload bytes this rank has sent to its peers so far (frame bodies), where the group counts them. */
  readonly sentBytes?: number;
}

/**
 * Every rank's `text` in rank order, up to `width` - 1 UTF-16 code units each (longer text is cut):
 * one all-gather of a fixed-size message per rank. Every rank must call it.
 */
export async function allGatherText(group: Collectives, text: string, width: number): Promise<string[]> {
  const all = new Uint16Array(width * group.worldSize);
  const mine = text.slice(0, width - 1);
  for (let i = 0; i < mine.length; i++) all[group.rank * width + i] = mine.charCodeAt(i);
  await group.allGather(all);
  return Array.from({ length: group.worldSize }, (_, r) =>
    String.fromCharCode(...all.subarray(r * width, (r + 1) * width)).replace(/\0+$/, ''),
  );
}

export interface ProcessGroupOptions {
  /** Per-op timeout (default 30 s). */
  timeoutMs?: number;
  /** Pipelining segment (default 1 MiB); every rank must use the same (init checks it). */
  segmentBytes?: number;
}

/** The segment size a group really uses for a requested one: a multiple of 4 bytes, at least 64. */
export function effectiveSegmentBytes(requested = 1 << 20): number {
  return Math.max(64, Math.floor(requested / 4) * 4);
}

interface OpState {
  seq: number;
  op: OpName;
  /** Bytes of the user's data (for errors and benchmarks). */
  bytes: number;
  wireDtype: WireDtype;
  reduce: WireReduceOp;
  /** Bytes the op moves per rank on the wire, the same on every rank (checked on every frame). */
  wireBytes: number;
  sinks: Map<string, FrameSink>;
  remaining: number;
  sends: Promise<void>[];
  waitingOn: number | undefined;
  finish: () => void;
  fail: (error: Error) => void;
}

interface RunOptions extends OpOptions {
  reduce?: WireReduceOp;
}

export class ProcessGroup implements Collectives {
  readonly timeoutMs: number;
  readonly segmentBytes: number;
  /** Bytes of payload this rank has sent to its peers, all ops together (frame bodies; headers not counted). */
  sentBytes = 0;
  private nextSeq = 1;
  private completedSeq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private current: OpState | null = null;
  private failure: { peer: number | undefined; reason: string } | null = null;
  /** Peers whose connection ended; an error only for an op that still needs them. */
  private readonly gone = new Map<number, string>();
  private readonly ring: Ring;

  constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly transport: Transport | null,
    options: ProcessGroupOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.segmentBytes = effectiveSegmentBytes(options.segmentBytes);
    const scratch = new Float32Array(1 << 14);
    this.ring = new Ring(rank, worldSize, this.segmentBytes, () => scratch);
    if (transport) {
      transport.router = {
        route: (peer, header) => this.route(peer, header),
        failed: (peer, reason, fatal) => this.peerGone(peer, reason, fatal),
      };
    }
  }

  /** Why the group is unusable, or null while it is healthy. */
  get failed(): string | null {
    return this.failure?.reason ?? null;
  }

  // ---------------------------------------------------------------- public ops

  allReduce(data: CollectiveData, op: ReduceOp = 'sum', options: DataOptions = {}): Promise<void> {
    return this.reduction('allReduce', data, op, options, (values, wire) => this.ring.allReduce(values, op, wire));
  }

  /** Returns this rank's reduced shard, a view into `data`. */
  reduceScatter<T extends CollectiveData>(data: T, op: ReduceOp = 'sum', options: DataOptions = {}): Promise<T> {
    const s = this.worldSize;
    if (data.length % s !== 0)
      return this.contract('reduceScatter', data, `${data.length} elements do not split into ${s} equal shards; pad to a multiple of ${s}`);
    const shard = data.length / s;
    const view = data.subarray(this.rank * shard, (this.rank + 1) * shard) as T;
    return this.reduction('reduceScatter', data, op, options, (values, wire) => this.ring.reduceScatter(values, op, wire)).then(() => view);
  }

  allGather(data: CollectiveData, options: OpOptions = {}): Promise<void> {
    const s = this.worldSize;
    if (data.length % s !== 0)
      return this.contract('allGather', data, `${data.length} elements do not split into ${s} equal shards; pad to a multiple of ${s}`);
    return this.run(
      'allGather',
      data.byteLength,
      'bytes',
      data.byteLength,
      (ctx) => {
        this.ring.allGather(ctx, bytesOf(data), (c) => this.ring.byteChunk(data, c), 0, data.BYTES_PER_ELEMENT);
      },
      options,
    );
  }

  broadcast(data: CollectiveData, root = 0, options: OpOptions = {}): Promise<void> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      return this.contract('broadcast', data, `root ${root} is not a rank of this world of ${this.worldSize}`);
    }
    return this.run(
      'broadcast',
      data.byteLength,
      'bytes',
      data.byteLength,
      (ctx) => this.ring.broadcast(ctx, bytesOf(data), root),
      options,
    );
  }

  barrier(options: OpOptions = {}): Promise<void> {
    return this.run('barrier', 0, 'bytes', 0, (ctx) => this.ring.barrier(ctx), options);
  }

  /** Close the group (after the ops in flight). Peers see the connections close. */
  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
    this.failure ??= { peer: undefined, reason: 'process group closed' };
    await this.transport?.close();
  }

  // ---------------------------------------------------------------- algorithms

  private reduction(
    op: OpName,
    data: CollectiveData,
    reduceOp: ReduceOp,
    options: DataOptions,
    ring: (values: Float32Array, wire: WireFormat) => (ctx: OpContext) => void,
  ): Promise<void> {
    const wire = options.wire ?? 'float32';
    if (wire !== 'float32' && wire !== 'bfloat16')
      return this.contract(op, data, `unknown wire format '${String(wire)}'; use float32 or bfloat16`);
    if (wire !== 'float32' && !(data instanceof Float32Array))
      return this.contract(op, data, `{ wire: '${wire}' } needs Float32Array data; 16-bit words are reduced in fp32 on the wire`);
    let values: Float32Array;
    if (data instanceof Float32Array) {
      values = data;
    } else if (data instanceof Uint16Array && (options.dtype === 'float16' || options.dtype === 'bfloat16')) {
      values = wordsToFloat32(data, options.dtype, hostFloat32(data.length));
    } else {
      return this.contract(op, data, 'Uint16Array data needs { dtype: "float16" | "bfloat16" }; other arrays are not supported');
    }
    const finish = () => {
      if (reduceOp === 'avg' && this.worldSize > 1 && op === 'reduceScatter') {
        const shard = values.length / this.worldSize;
        scale(values.subarray(this.rank * shard, (this.rank + 1) * shard), 1 / this.worldSize);
      }
      if (data instanceof Uint16Array) float32ToWords(values, options.dtype!, data);
    };
    const wireBytes = wire === 'bfloat16' ? values.length * 2 : values.byteLength;
    return this.run(op, data.byteLength, wire, wireBytes, ring(values, wire), {
      reduce: reduceOp,
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
    }).then(finish);
  }

  // ---------------------------------------------------------------- op machinery

  private contract<T>(op: OpName, data: CollectiveData, what: string): Promise<T> {
    return Promise.reject(new CollectiveError(`${op} of ${data.byteLength} B on rank ${this.rank}: ${what}`));
  }

  /** Queue an op; it runs after every op issued before it. */
  private run(
    op: OpName,
    bytes: number,
    wireDtype: WireDtype,
    wireBytes: number,
    setup: (ctx: OpContext) => void,
    options: RunOptions = {},
  ): Promise<void> {
    const seq = this.nextSeq++;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    if (!(timeoutMs > 0))
      return Promise.reject(new CollectiveError(`${op} on rank ${this.rank}: timeoutMs must be positive, got ${timeoutMs}`));
    const result = this.queue.then(() => {
      if (this.worldSize > 1) return this.execute(seq, op, bytes, wireDtype, wireBytes, setup, options.reduce ?? 'none', timeoutMs);
      if (this.failure) throw this.opError(op, bytes, this.failure.peer, this.failure.reason);
      this.completedSeq = seq; // a world of one: nothing to exchange
      return undefined;
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  private opError(op: OpName, bytes: number, peer: number | undefined, reason: string): CollectiveOpError {
    return new CollectiveOpError(op, bytes, this.rank, peer, reason);
  }

  private async execute(
    seq: number,
    op: OpName,
    bytes: number,
    wireDtype: WireDtype,
    wireBytes: number,
    setup: (ctx: OpContext) => void,
    reduce: WireReduceOp,
    timeoutMs: number,
  ): Promise<void> {
    if (this.failure) {
      throw this.opError(op, bytes, this.failure.peer, `process group is closed after an earlier failure: ${this.failure.reason}`);
    }
    let finish!: () => void;
    let fail!: (e: Error) => void;
    const done = new Promise<void>((resolve, reject) => {
      finish = resolve;
      fail = reject;
    });
    const state: OpState = {
      seq,
      op,
      bytes,
      wireDtype,
      reduce,
      wireBytes,
      sinks: new Map(),
      remaining: 0,
      sends: [],
      waitingOn: undefined,
      finish,
      fail,
    };
    this.current = state;
    const timer = setTimeout(() => {
      const peer = state.waitingOn;
      this.fail(peer, `timed out after ${timeoutMs} ms${peer === undefined ? '' : ` waiting for rank ${peer}`}`);
    }, timeoutMs);
    try {
      const ctx: OpContext = {
        expect: (peer, chunk, sink) => {
          const gone = this.gone.get(peer);
          if (gone !== undefined) this.fail(peer, gone);
          state.remaining += 1;
          state.waitingOn ??= peer;
          state.sinks.set(`${peer}/${chunk}`, {
            bytes: sink.bytes,
            ...(sink.target ? { target: (o: number, max: number) => sink.target!(o, max) } : {}),
            piece: (b, o) => sink.piece(b, o),
            end: () => {
              state.sinks.delete(`${peer}/${chunk}`);
              state.remaining -= 1;
              sink.end();
              this.checkDone(state);
            },
          });
          // Dial the peer now: it sends on this connection, and a peer that never answers times out by name.
          this.transport!.receiveFrom(peer).catch((e: Error) => this.fail(peer, e.message));
        },
        send: (peer, chunk, body) => {
          const gone = this.gone.get(peer);
          if (gone !== undefined) this.fail(peer, gone);
          const header: FrameHeader = { op, dtype: wireDtype, reduce, seq, chunk, length: body?.byteLength ?? 0, totalBytes: wireBytes };
          this.sentBytes += header.length;
          const sent = this.transport!.sendTo(peer).then((link) => link.send(header, body));
          sent.catch((e: Error) => this.fail(peer, e.message));
          state.sends.push(sent);
        },
      };
      setup(ctx);
      // Frames of this op that arrived before it started wait in their connections: read them now.
      this.transport!.retryHeld();
      this.checkDone(state);
      await done;
      // The op is done only when its sends have left: the caller may overwrite the data next.
      await Promise.all(state.sends).catch((error: Error & { peer?: number }) => {
        throw this.opError(op, bytes, error.peer, error.message);
      });
      this.completedSeq = seq;
    } finally {
      clearTimeout(timer);
      this.current = null;
    }
  }

  private checkDone(state: OpState): void {
    if (state.remaining === 0) state.finish();
    else state.waitingOn = Number(state.sinks.keys().next().value?.split('/')[0] ?? state.waitingOn);
  }

  private sinkFor(state: OpState, peer: number, header: FrameHeader): FrameSink {
    if (
      header.op !== state.op ||
      header.totalBytes !== state.wireBytes % 2 ** 32 ||
      header.dtype !== state.wireDtype ||
      header.reduce !== state.reduce
    ) {
      const reduce = (r: WireReduceOp) => (r === 'none' ? '' : `, ${r}`);
      throw new CollectiveError(
        `collective mismatch at op #${state.seq}: rank ${peer} runs ${header.op} of ${header.totalBytes} B (${header.dtype}${reduce(header.reduce)}), this rank ${state.op} of ${state.wireBytes} B (${state.wireDtype}${reduce(state.reduce)})`,
      );
    }
    const sink = state.sinks.get(`${peer}/${header.chunk}`);
    if (!sink) throw new CollectiveError(`unexpected chunk ${header.chunk} of op #${state.seq} (${state.op}) from rank ${peer}`);
    return sink;
  }

  /**
   * Transport callback: where the body of this frame goes. Throwing drops the peer; null holds the
   * frame in its connection (a peer running ahead) until this rank starts that op.
   */
  private route(peer: number, header: FrameHeader): FrameSink | null {
    if (this.failure) throw new CollectiveError(`process group is closed: ${this.failure.reason}`);
    if (header.seq <= this.completedSeq) {
      throw new CollectiveError(`frame of op #${header.seq} (${header.op}) from rank ${peer} arrived after this rank finished that op`);
    }
    if (this.current && header.seq === this.current.seq) return this.sinkFor(this.current, peer, header);
    return null;
  }

  /**
   * A connection ended. Garbage on the wire fails the group at once; an ended connection fails the
   * op in flight only if it still waits for that peer, and any later op that needs it.
   */
  private peerGone(peer: number, reason: string, fatal: boolean): void {
    const described = `connection to rank ${peer} lost: ${reason}`;
    this.gone.set(peer, described);
    const state = this.current;
    const needed = state !== null && [...state.sinks.keys()].some((key) => key.startsWith(`${peer}/`));
    if (fatal || needed) this.fail(peer, described);
  }

  /** The first failure rejects the op in flight and closes the group; later ops reject at once. */
  private fail(peer: number | undefined, reason: string): void {
    if (this.failure) return;
    this.failure = { peer, reason };
    const state = this.current;
    if (state) state.fail(this.opError(state.op, state.bytes, peer, reason));
    // Dropping every connection tells the other ranks at once, instead of at their timeouts.
    void this.transport?.close(false);
  }
}
