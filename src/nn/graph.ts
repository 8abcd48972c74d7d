/**
 * Tape autograd. Ops record a backward closure as they run forward; `backward(loss)` runs them in
 * reverse. Every backward kernel accumulates (+=) into its inputs' grads, so fan-out (residuals,
 * a tied embedding) needs nothing special: activation grads are fresh zeroed buffers made on first
 * use (or, through `shareGrad`, the buffer of a grad that is no longer needed: a residual add passes
 * its output's grad on to its input), and param grads go straight into their views of the grad
 * buffer. So after backward only the grads of a graph's inputs and params are certain to be theirs.
 * Params with fp16 grads accumulate in an fp32 buffer first and are added to the fp16 grad once,
 * rounded once.
 *
 * A graph owns its activation buffers until `release()`; one graph per step (or micro-batch).
 * Activation recomputation runs a span of the model in a child graph (`child()`): it shares its
 * parent's runner, and its buffers go back to the parent's spares when it is released, for the next
 * child to take by exact size, and to the pool with the parent's.
 */
import { WebtronError } from '../errors.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { numel, Tensor } from './tensor.js';
import { Runner } from './runner.js';
import { type Documents, NO_DOCUMENTS } from './documents.js';

interface TapeEntry {
  op: string;
  params: Tensor[];
  backward: () => void;
}

export interface BackwardOptions {
  /** Called (after the work is submitted) once a param's grad is final for this graph. */
  onParamGrad?: (name: string) => void;
  /**
   * Called before each op's backward with the params it reads or whose grads it writes (sharded
   * params are gathered, sharded grads take memory); `backwardAwaiting` waits for a promise it
   * returns. It runs before the recorded work is submitted: one that frees memory flushes first.
   */
  beforeParams?: (names: string[]) => void | Promise<void>;
}

/** Bytes of a graph buffer of `elements` fp32 values: whole vec4s, at least one. */
export function scratchBytes(elements: number): number {
  return Math.ceil(Math.max(1, elements) / 4) * 16;
}

export class GraphError extends WebtronError {
  override name = 'GraphError';
  override readonly code: string = 'ERR_GRAPH';
}

export class Graph {
  readonly runner: Runner;
  private readonly tape: TapeEntry[] = [];
  private readonly owned: DeviceBuffer[] = [];
  /** Activation grads by the activation's buffer. */
  private readonly grads = new Map<DeviceBuffer, Tensor>();
  /** fp32 accumulators of fp16-grad params, by param name. */
  private readonly wideGrads = new Map<string, Tensor>();
  /**
   * fp32 scratches of 16-bit-grad params whose grads are final, by byte size: the next param's
   * scratch of that size reuses one (zeroed again), so that a pass holds only the scratches of the
   * params in progress at once, not one per param.
   */
  private readonly spareWide = new Map<number, DeviceBuffer[]>();
  private readonly ownsRunner: boolean;
  /** The values of this graph's uint32 inputs, by tensor (`integerInput`). */
  private readonly integerInputs = new WeakMap<Tensor, Uint32Array>();
  /** Dropout calls made on this graph so far: each gets its own RNG stream (see ops.dropoutSeed). */
  dropoutCalls = 0;
  /** The graph whose spares a child takes and gives back, and whose release returns them to the pool; itself for a top graph. */
  private readonly root: Graph;
  /** A top graph's: buffers its released children used, by size, for the next child. */
  private readonly spares = new Map<number, DeviceBuffer[]>();
  /** The buffers this graph took for itself (a top graph's `owned` also holds its children's, to give back to the pool). */
  private readonly own = new Set<DeviceBuffer>();

  constructor(
    readonly ctx: GpuContext,
    options: {
      runner?: Runner;
      training?: boolean;
      seed?: number;
      samples?: { first: number; count: number };
      /** Texture copies of params live as long as the graph (default); false: like any other tensor's (sharded params). */
      pinParamCopies?: boolean;
      /** The graph this one is a child of (`child()`). */
      parent?: Graph;
    } = {},
  ) {
    this.root = options.parent?.root ?? this;
    this.ownsRunner = !options.runner;
    this.runner = options.runner ?? new Runner(ctx);
    if (options.pinParamCopies === false) this.runner.pinParams = false;
    this.training = options.training ?? true;
    this.seed = options.seed ?? 0;
    this.samples = options.samples ?? { first: 0, count: 1 };
    if (
      !Number.isInteger(this.samples.first) ||
      this.samples.first < 0 ||
      !Number.isInteger(this.samples.count) ||
      this.samples.count < 1
    ) {
      throw new GraphError(`graph samples must be a non-negative first index and a positive count, got ${JSON.stringify(this.samples)}`);
    }
  }

  /**
   * The global indices of the samples this graph computes (first, first + 1, …): dropout masks
   * are keyed by them, so a sample's masks are the same in any micro-batch, on any rank.
   */
  readonly samples: { first: number; count: number };

  /** Dropout is active only while training. */
  readonly training: boolean;
  /** Seed of this graph's dropout masks. */
  readonly seed: number;

  /**
   * The documents inside this graph's samples (--reset-position-ids, --reset-attention-mask): the
   * embedding reads their positions and the attention masks keys outside a query's document. None by
   * default; a child has its parent's.
   */
  documents: Documents = NO_DOCUMENTS;

  /**
   * A buffer of this graph for `elements` 4-byte values, rounded up to 16 bytes so that kernels may
   * read it as vec4s: from the context's pool (src/gpu/pool.ts), zeroed when `zeroed` (a pooled
   * buffer holds what its last graph left).
   */
  private buffer(label: string, elements: number, zeroed: boolean): DeviceBuffer {
    const size = scratchBytes(elements);
    const spare = this.root === this ? undefined : this.root.spares.get(size)?.pop();
    if (spare) spare.gpu.label = label;
    const { buffer, reused } = spare ? { buffer: spare, reused: true } : this.ctx.pool.acquire(label, size);
    if (reused && zeroed) this.runner.clearBuffer(buffer);
    this.owned.push(buffer);
    this.own.add(buffer);
    if (!spare && this.root !== this) this.root.owned.push(buffer);
    return buffer;
  }

  /**
   * A graph for a span of the model to run (again) in: the same runner, seed, samples and mode, its
   * own tape and grads. `release()` gives its buffers to this graph's spares, which the next child
   * takes by exact size; this graph gives them to the pool. Its tensors read this graph's (inputs,
   * params), and `seedGrad` lends it this graph's grads.
   */
  child(): Graph {
    const child = new Graph(this.ctx, {
      runner: this.runner,
      training: this.training,
      seed: this.seed,
      samples: this.samples,
      parent: this,
    });
    child.documents = this.documents;
    return child;
  }

  /** Whether `buffer` is one this graph took for itself (a child's are the child's, not its parent's). */
  owns(buffer: DeviceBuffer): boolean {
    return this.own.has(buffer);
  }

  /** `t`'s grad is `grad` (another graph's, which this graph's backward then accumulates into). `t` must have none yet. */
  seedGrad(t: Tensor, grad: Tensor): void {
    if (this.grads.has(t.buffer)) throw new GraphError(`seedGrad: '${t.buffer.label}' has a grad already`);
    this.grads.set(t.buffer, grad);
  }

  /** `t`'s grad in this graph, if it has one (whole buffer). */
  gradIfAny(t: Tensor): Tensor | undefined {
    return this.grads.get(t.buffer);
  }

  /**
   * `t`'s grad from now on is `grad` (a buffer this graph owns), where `t` has none yet: what
   * `shareGrad` does, across graphs. Returns whether it took it.
   */
  adoptGrad(t: Tensor, grad: Tensor): boolean {
    if (this.grads.has(t.buffer) || !this.owns(grad.buffer) || grad.numel !== t.numel) return false;
    this.grads.set(t.buffer, grad);
    return true;
  }

  /** Run the whole tape backward from the grads seeded into it (`seedGrad`), no param hooks. */
  backwardSeeded(): void {
    const uses = this.paramUses();
    for (let i = this.tape.length - 1; i >= 0; i--) this.backwardEntry(i, uses, {});
    this.runner.flush();
  }

  /** A new fp32 activation (zeroed). */
  tensor(shape: readonly number[], label: string, requiresGrad = false): Tensor {
    return new Tensor(this.buffer(label, numel(shape), true), 0, shape, 'float32', null, requiresGrad);
  }

  /**
   * A new fp32 activation for a kernel that writes every element before anything reads it: not
   * zeroed (a pooled buffer keeps what its last graph left until then), which spares a clear.
   */
  output(shape: readonly number[], label: string, requiresGrad = false): Tensor {
    return new Tensor(this.buffer(label, numel(shape), false), 0, shape, 'float32', null, requiresGrad);
  }

  /** Upload host data as an activation (fp32) or integer input (uint32). */
  input(data: Float32Array | Uint32Array, shape: readonly number[], label = 'input', requiresGrad = false): Tensor {
    if (data.length !== numel(shape))
      throw new GraphError(`input '${label}' has ${data.length} values but shape [${shape.join(', ')}] needs ${numel(shape)}`);
    // Written whole by the upload, which the queue runs before anything recorded since: whatever
    // this graph recorded so far is submitted first.
    const buffer = this.buffer(label, data.length, false);
    this.runner.flush();
    this.ctx.transfers.upload(buffer, data);
    const t = new Tensor(buffer, 0, shape, data instanceof Uint32Array ? 'uint32' : 'float32', null, requiresGrad);
    if (data instanceof Uint32Array) this.integerInputs.set(t, data.slice());
    return t;
  }

  /** A copy of the values of `t`, when it is a uint32 input of this graph (ids, targets). */
  integerInput(t: Tensor): Uint32Array | undefined {
    return this.integerInputs.get(t);
  }

  record(op: string, inputs: Tensor[], backward: () => void): void {
    if (!inputs.some((t) => t.requiresGrad)) return;
    this.tape.push({ op, params: inputs.filter((t) => t.isParam), backward });
  }

  /**
   * The fp32 grad that backward kernels accumulate into for `t`: its view of the grad buffer for an
   * fp32-grad param, an fp32 scratch for a 16-bit-grad param (added to the grad buffer, rounded
   * once, when the param's grad is final), a zeroed buffer for an activation.
   */
  gradOf(t: Tensor): Tensor {
    if (t.param) {
      if (t.param.gradDtype === 'float32') return t.param.grad;
      let wide = this.wideGrads.get(t.param.name);
      if (!wide) {
        // One spare element: the 16-bit add works on element pairs and must add zero past an odd end.
        const spare = this.spareWide.get(scratchBytes(t.numel + 1))?.pop();
        if (spare) this.runner.clearBuffer(spare);
        const buffer = spare ?? this.buffer(`grad32(${t.param.name})`, t.numel + 1, true);
        wide = new Tensor(buffer, 0, t.shape, 'float32');
        this.wideGrads.set(t.param.name, wide);
      }
      return wide;
    }
    const key = t.buffer;
    let g = this.grads.get(key);
    if (!g) {
      g = this.tensor(t.shape, `grad(${t.buffer.label})`);
      this.grads.set(key, g);
    }
    return t.offset === 0 && t.numel === g.numel ? g.reshape(t.shape) : new Tensor(g.buffer, t.offset, t.shape, 'float32');
  }

  /**
   * The grad of whole activation `t` for a kernel that writes every element: a new, unzeroed buffer
   * when `t` has no grad yet (`fresh`), else the grad backward kernels accumulate into.
   */
  gradToWrite(t: Tensor): { grad: Tensor; fresh: boolean } {
    if (t.param || t.offset !== 0 || this.grads.has(t.buffer)) return { grad: this.gradOf(t), fresh: false };
    const grad = this.output(t.shape, `grad(${t.buffer.label})`);
    this.grads.set(t.buffer, grad);
    return { grad, fresh: true };
  }

  /**
   * Give `t` the grad buffer of `from` as its own, instead of a zeroed one that `from`'s grad is then
   * added to (what a residual add's backward would do): the two share one buffer from then on, so
   * whatever later accumulates into t's grad changes from's. Call it only where from's grad is final
   * and read for the last time: in the backward of the op that made `from` (every consumer of `from`
   * ran before it), before any other op's backward. Only for whole activation buffers of one size,
   * `t` without a grad yet. Returns whether it shared; if not, accumulate as usual.
   */
  shareGrad(t: Tensor, from: Tensor): boolean {
    const wholeActivation = (x: Tensor) => !x.param && x.offset === 0 && x.dtype === 'float32';
    if (!wholeActivation(t) || !wholeActivation(from) || t.numel !== from.numel) return false;
    if (t.buffer === from.buffer || t.buffer.size !== from.buffer.size || this.grads.has(t.buffer)) return false;
    const grad = this.grads.get(from.buffer);
    if (!grad) return false;
    this.grads.set(t.buffer, grad);
    return true;
  }

  /** Run the tape backward from a scalar `loss` (d loss = 1). Grads accumulate into what they held. */
  backward(loss: Tensor, options: BackwardOptions = {}): void {
    if (loss.numel !== 1) throw new GraphError(`backward needs a scalar loss, got shape [${loss.shape.join(', ')}]`);
    this.backwardFrom(loss, new Float32Array([1]), options);
  }

  /** Run the tape backward from `output` with the given grad of it (a vector-Jacobian product). */
  backwardFrom(output: Tensor, grad: Float32Array, options: BackwardOptions = {}): void {
    const uses = this.startBackward(output, grad);
    for (let i = this.tape.length - 1; i >= 0; i--) {
      const before = options.beforeParams?.(this.tape[i]!.params.map((p) => p.param!.name));
      if (before instanceof Promise) throw new GraphError('backward: beforeParams returned a promise; use backwardAwaiting');
      this.backwardEntry(i, uses, options);
    }
    this.runner.flush();
  }

  /** The same, waiting before each op for what `beforeParams` returns (the recorded work is submitted first). */
  async backwardAwaiting(output: Tensor, grad: Float32Array, options: BackwardOptions): Promise<void> {
    const uses = this.startBackward(output, grad);
    for (let i = this.tape.length - 1; i >= 0; i--) {
      const before = options.beforeParams?.(this.tape[i]!.params.map((p) => p.param!.name));
      if (before instanceof Promise) {
        this.runner.flush();
        await before;
      }
      this.backwardEntry(i, uses, options);
    }
    this.runner.flush();
  }

  /** Seed the grad of `output`; returns how many ops use each param. */
  private startBackward(output: Tensor, grad: Float32Array): Map<string, number> {
    if (grad.length !== output.numel) throw new GraphError(`backward: grad has ${grad.length} values for an output of ${output.numel}`);
    const g = this.gradOf(output);
    this.runner.flush(); // the zeroing of a pooled grad buffer goes before the upload
    this.ctx.transfers.upload(g.buffer, grad, g.offset * 4);
    return this.paramUses();
  }

  /** How many ops of the tape use each param. */
  private paramUses(): Map<string, number> {
    const uses = new Map<string, number>();
    for (const e of this.tape) for (const p of e.params) uses.set(p.param!.name, (uses.get(p.param!.name) ?? 0) + 1);
    return uses;
  }

  /** One op's backward; the params whose last use it was have their grads final. */
  private backwardEntry(i: number, uses: Map<string, number>, options: BackwardOptions): void {
    const entry = this.tape[i]!;
    entry.backward();
    const done: string[] = [];
    for (const p of entry.params) {
      const name = p.param!.name;
      const left = uses.get(name)! - 1;
      uses.set(name, left);
      if (left === 0) {
        this.finishParamGrad(p);
        done.push(name);
      }
    }
    if (done.length > 0 && options.onParamGrad) {
      this.runner.flush();
      for (const name of done) options.onParamGrad(name);
    }
  }

  private finishParamGrad(p: Tensor): void {
    const wide = this.wideGrads.get(p.param!.name);
    if (!wide) return;
    const grad = p.param!.grad;
    const dst = grad.binding(this.ctx);
    if (grad.offset % 2 !== 0)
      throw new GraphError(
        `16-bit grad of '${p.param!.name}' starts at odd element ${grad.offset}; the layout places 16-bit params at even elements`,
      );
    const src = wide.binding(this.ctx);
    const pairs = Math.ceil(p.numel / 2);
    this.runner.dispatch(
      'accumulate',
      p.param!.gradDtype === 'bfloat16' ? 'add_to_bf16' : 'add_to_f16',
      { WG: 256 },
      { n: pairs, dst_shift: dst.shift / 2, src_shift: src.shift, scale: 1 },
      { src: src.binding, dst16: dst.binding },
      Math.ceil(pairs / 256),
    );
    // Later dispatches on the queue run after this add: the scratch may serve the next param.
    this.wideGrads.delete(p.param!.name);
    const spare = this.spareWide.get(wide.buffer.size) ?? [];
    spare.push(wide.buffer);
    this.spareWide.set(wide.buffer.size, spare);
  }

  /** Host copy of a tensor (fp32 or uint32 activations). */
  async read(t: Tensor): Promise<Float32Array> {
    this.runner.flush();
    if (t.dtype !== 'float32') throw new GraphError(`read: tensor is ${t.dtype}; read params through their model`);
    return this.ctx.transfers.readFloat32(t.buffer, t.offset, t.numel);
  }

  /** Give every activation buffer of this graph back to the pool. Tensors made by it are invalid afterwards. */
  release(): void {
    this.runner.flush();
    if (this.root !== this) {
      // A child's buffers serve the next child; its runner and copies are its parent's.
      for (const buffer of this.owned) {
        const list = this.root.spares.get(buffer.size) ?? [];
        list.push(buffer);
        this.root.spares.set(buffer.size, list);
      }
    } else {
      // Its copies of params (pinned for the graph's life) may be stale once the optimizer steps.
      this.runner.copies.destroy();
      this.ctx.pool.release(this.owned);
      this.spares.clear();
    }
    this.owned.length = 0;
    this.own.clear();
    this.tape.length = 0;
    this.grads.clear();
    this.wideGrads.clear();
    this.spareWide.clear();
    if (this.ownsRunner) this.runner.destroy();
  }
}
