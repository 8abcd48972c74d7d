/**
 * Adam over the DDP buffers, in two forms behind one interface so that the CLI flag only swaps them:
 *
 * - `DistributedOptimizer` (ZeRO-1, Megatron's --use-distributed-optimizer): after the grads are
 *   reduce-scattered, each rank runs Adam on its own shard of every bucket only (moments for 1/d of
 *   the model; with fp32 params the main params are the param buffer itself), then all-gathers the
 *   updated params bucket by bucket.
 * - `NonDistributedOptimizer`: grads all-reduced, Adam on the whole buffer on every rank, full moments.
 *
 * A step: global grad norm (sum of squares in WGSL over the grads this rank owns, one all-reduce of
 * a scalar) → clip (coeff = max_norm / (norm + 1e-6) when below 1, folded into Adam's grad scale) →
 * Adam → (distributed) param all-gather.
 */
import type { ProcessGroup } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import type { Float32Operand } from './adam.js';
import { AdamKernel } from './adam.js';
import { HalfCast, type CastRange } from './cast.js';
import { DynamicLossScaler, type LossScalerConfig, type LossScalerState } from './loss-scaler.js';
import { Unscale, type UnscaleRange } from './unscale.js';
import { checkHyperParams, type AdamHyperParams } from './adam-math.js';
import { shardRanges, type ShardRange } from './ranges.js';
import { SumOfSquares } from './sumsq.js';

export interface OptimizerConfig {
  hyper: AdamHyperParams;
  /** Clip the global grad norm to this value; 0 or absent: no clipping. */
  clipGrad?: number;
  /**
   * Distributed optimizer: return from `step()` with the param all-gathers still running, in the
   * order the next forward needs the buckets; the forward awaits `ddp.paramsReady(name)`.
   */
  overlapParamGather?: boolean;
  /** fp16 grads: the dynamic loss scaler's settings (Megatron's defaults otherwise). */
  lossScaler?: Partial<LossScalerConfig>;
}

export interface StepResult {
  /** Adam's step count (skipped steps do not count). */
  step: number;
  gradNorm: number;
  /** The factor grads were multiplied by (1 when not clipped). */
  clipCoeff: number;
  /** fp16: an inf or NaN grad on some rank skipped this step. */
  skipped: boolean;
  /** fp16: the loss scale for the next backward pass (null without fp16 grads). */
  lossScale: number | null;
}

/** Adam's moments per param, compact (no padding): what a checkpoint stores. */
export interface OptimizerState {
  expAvg: Map<string, Float32Array>;
  expAvgSq: Map<string, Float32Array>;
  /** fp32 main params, when the model params are 16-bit. */
  main?: Map<string, Float32Array>;
}

export interface Optimizer {
  readonly distributed: boolean;
  readonly stepCount: number;
  /** fp16 grads: the loss scaler (multiply the loss by its scale before backward); null otherwise. */
  readonly scaler: DynamicLossScaler | null;
  step(): Promise<StepResult>;
  /** Collective with the distributed optimizer: every rank must call it. */
  exportState(): Promise<OptimizerState>;
  /** Load moments saved at any data-parallel size, and the step count. */
  importState(state: OptimizerState, step: number): void;
  /** fp16: the loss scaler's state for a checkpoint; null without one. */
  scalerState(): LossScalerState | null;
  destroy(): void;
}

function stateTensor(state: Map<string, Float32Array>, name: string, numel: number, which: string): Float32Array {
  const t = state.get(name);
  if (!t || t.length !== numel) throw new Error(`optimizer state: ${which} of '${name}' needs ${numel} values, got ${t ? t.length : 'none'}`);
  return t;
}

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

abstract class AdamOverBuffers implements Optimizer {
  abstract readonly distributed: boolean;
  protected steps = 0;
  protected readonly owned: DeviceBuffer[] = [];
  protected kernels: AdamKernel[] = [];
  protected norm!: SumOfSquares;
  /** 16-bit params: fp32 main params are cast into the model params after each update. */
  protected casts: HalfCast[] = [];
  /** fp16 grads: unscaled into fp32 main grads, checked for inf/NaN. */
  protected unscale: Unscale | null = null;
  scaler: DynamicLossScaler | null = null;

  constructor(
    protected readonly ctx: GpuContext,
    protected readonly group: ProcessGroup,
    protected readonly ddp: DistributedDataParallel,
    protected readonly config: OptimizerConfig,
  ) {
    checkHyperParams(config.hyper);
    if (ddp.layout.buffers.some((b) => b.paramDtype === 'float16') && !ctx.hasF16) {
      throw new Error(`fp16 params need the shader-f16 feature, which adapter '${ctx.adapterName}' does not offer; use bf16 (--bf16) or fp32 instead`);
    }
    if (config.clipGrad !== undefined && !(config.clipGrad >= 0)) throw new RangeError(`--clip-grad must be >= 0, got ${config.clipGrad}`);
  }

  protected moments(label: string, elements: number, category: 'optimizer-state' | 'main-params' | 'grads' = 'optimizer-state'): DeviceBuffer {
    const buffer = this.ctx.createBuffer({ label, size: elements * 4, usage: STORAGE(), category });
    this.ctx.device.queue.writeBuffer(buffer.gpu, 0, new Float32Array(Math.ceil(buffer.size / 4)));
    this.owned.push(buffer);
    return buffer;
  }

  /** Sum of squares of the grads this rank owns, added over the ranks that share the work. */
  protected abstract globalSumOfSquares(local: number): Promise<number>;

  /** After Adam: make every rank's params whole again. */
  protected abstract afterUpdate(): Promise<void>;

  /** Whether any rank found an inf or NaN grad. */
  protected abstract anyRank(foundInf: boolean): Promise<boolean>;

  /** Casts for 16-bit params (main params start as the model params) and unscaling for fp16 grads. */
  protected setUpHalves(casts: Record<'bfloat16' | 'float16', CastRange[]>, unscaleRanges: UnscaleRange[]): void {
    for (const dtype of ['bfloat16', 'float16'] as const) {
      if (casts[dtype].length === 0) continue;
      const cast = new HalfCast(this.ctx, casts[dtype], dtype);
      cast.toMain(); // queued before any step
      this.casts.push(cast);
    }
    if (unscaleRanges.length > 0) {
      this.unscale = new Unscale(this.ctx, unscaleRanges);
      this.scaler = new DynamicLossScaler(this.config.lossScaler);
    }
  }

  async step(): Promise<StepResult> {
    const phases = this.ddp.phases;
    if (this.unscale && this.scaler) {
      const scaler = this.scaler;
      const local = await phases.time('unscale', () => this.unscale!.run(scaler.scale));
      const foundInf = await phases.time('unscale', () => this.anyRank(local));
      scaler.update(foundInf);
      if (foundInf) return { step: this.steps, gradNorm: NaN, clipCoeff: 1, skipped: true, lossScale: scaler.scale };
    }
    this.steps += 1;
    const local = await phases.time('grad norm', () => this.norm.run());
    const gradNorm = Math.sqrt(await phases.time('grad norm', () => this.globalSumOfSquares(local)));
    const clip = this.config.clipGrad ?? 0;
    const clipCoeff = clip > 0 && clip / (gradNorm + 1e-6) < 1 ? clip / (gradNorm + 1e-6) : 1;
    await phases.time('adam', async () => {
      for (const kernel of this.kernels) kernel.step(this.config.hyper, this.steps, clipCoeff);
      for (const cast of this.casts) cast.toModel();
      await this.ctx.sync();
    });
    await this.afterUpdate();
    await this.ctx.sync();
    return { step: this.steps, gradNorm, clipCoeff, skipped: false, lossScale: this.scaler?.scale ?? null };
  }

  scalerState(): LossScalerState | null {
    return this.scaler?.stateDict() ?? null;
  }

  get stepCount(): number {
    return this.steps;
  }

  abstract exportState(): Promise<OptimizerState>;
  abstract importState(state: OptimizerState, step: number): void;

  protected setStep(step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`optimizer step must be a non-negative integer, got ${step}`);
    this.steps = step;
  }

  destroy(): void {
    this.unscale?.destroy();
    for (const c of this.casts) c.destroy();
    for (const k of this.kernels) k.destroy();
    this.norm.destroy();
    for (const b of this.owned) b.destroy();
  }
}

export class DistributedOptimizer extends AdamOverBuffers {
  readonly distributed = true;
  private readonly ranges: ShardRange[];
  private readonly expAvg: DeviceBuffer;
  private readonly expAvgSq: DeviceBuffer;
  private readonly main: DeviceBuffer | null;

  constructor(ctx: GpuContext, group: ProcessGroup, ddp: DistributedDataParallel, config: OptimizerConfig) {
    super(ctx, group, ddp, config);
    if (!ddp.layout.distributedOptimizer) throw new Error('DistributedOptimizer needs a layout made for the distributed optimizer');
    this.ranges = shardRanges(ddp.layout, group.rank);
    const shardElements = this.ranges.reduce((n, r) => n + (r.gbufLocal.end - r.gbufLocal.start), 0);
    const expAvg = this.moments('exp_avg (shard)', shardElements);
    const expAvgSq = this.moments('exp_avg_sq (shard)', shardElements);
    this.expAvg = expAvg;
    this.expAvgSq = expAvgSq;
    const layoutOf = (r: ShardRange) => ddp.buffers[r.buffer]!.layout;
    // fp32 params: the main params are the param buffer's shard itself; 16-bit: an fp32 copy.
    const main = this.ranges.some((r) => layoutOf(r).paramDtype !== 'float32') ? this.moments('main params (shard)', shardElements, 'main-params') : null;
    // fp16 grads: Adam reads fp32 main grads, unscaled from the shard (counted as grads).
    const mainGrads = this.ranges.some((r) => layoutOf(r).gradDtype === 'float16') ? this.moments('main grads (shard)', shardElements, 'grads') : null;
    this.main = main;
    const casts: Record<'bfloat16' | 'float16', CastRange[]> = { bfloat16: [], float16: [] };
    const unscaleRanges: UnscaleRange[] = [];
    const normRanges: { operand: Float32Operand; length: number }[] = [];
    let at = 0;
    for (const r of this.ranges) {
      const buffer = ddp.buffers[r.buffer]!;
      const { paramDtype, gradDtype } = buffer.layout;
      const length = r.gbufLocal.end - r.gbufLocal.start;
      const shardOf = (b: DeviceBuffer) => ({ buffer: b, offset: r.gbufWorld.start });
      const param = paramDtype === 'float32' ? shardOf(buffer.params) : { buffer: main!, offset: at };
      if (paramDtype !== 'float32') casts[paramDtype].push({ wide: param, narrow: shardOf(buffer.params), length });
      const grad = gradDtype === 'float16' ? { buffer: mainGrads!, offset: at } : shardOf(buffer.grads);
      if (gradDtype === 'float16') unscaleRanges.push({ narrow: shardOf(buffer.grads), wide: grad, length });
      normRanges.push({ operand: grad, length });
      this.kernels.push(new AdamKernel(ctx, { param, grad, expAvg: { buffer: expAvg, offset: at }, expAvgSq: { buffer: expAvgSq, offset: at }, length }));
      at += length;
    }
    this.setUpHalves(casts, unscaleRanges);
    this.norm = new SumOfSquares(ctx, normRanges);
  }

  protected async anyRank(foundInf: boolean): Promise<boolean> {
    const flag = new Float32Array([foundInf ? 1 : 0]);
    await this.group.allReduce(flag, 'max');
    return flag[0]! > 0;
  }

  /** Gathers every bucket's moments through its host staging: every rank must call it. */
  async exportState(): Promise<OptimizerState> {
    await this.ddp.finishParamSync(); // the gathers use the same host staging
    const state: OptimizerState = { expAvg: new Map(), expAvgSq: new Map(), ...(this.main ? { main: new Map() } : {}) };
    for (const [which, moments] of this.stateBuffers()) {
      let at = 0;
      for (const r of this.ranges) {
        const bucket = this.ddp.buffers[r.buffer]!.layout.buckets[r.bucket]!;
        const host = this.ddp.hostBucket(r.buffer, r.bucket);
        const s = r.gbufLocal.end;
        const mine = host.subarray(this.group.rank * s, (this.group.rank + 1) * s);
        await this.ctx.transfers.readback(moments, at * 4, s * 4, new Uint8Array(mine.buffer, mine.byteOffset, s * 4));
        await this.group.allGather(host);
        for (const p of this.ddp.buffers[r.buffer]!.layout.params) {
          if (p.bucket === r.bucket) state[which]!.set(p.name, host.slice(p.start - bucket.start, p.end - bucket.start));
        }
        at += s;
      }
    }
    return state;
  }

  /** Each rank takes its own slices of every param's moments: works whatever d the state was saved at. */
  private stateBuffers(): ['expAvg' | 'expAvgSq' | 'main', DeviceBuffer][] {
    const buffers: ['expAvg' | 'expAvgSq' | 'main', DeviceBuffer][] = [['expAvg', this.expAvg], ['expAvgSq', this.expAvgSq]];
    if (this.main) buffers.push(['main', this.main]);
    return buffers;
  }

  importState(state: OptimizerState, step: number): void {
    for (const [which, moments] of this.stateBuffers()) {
      // A checkpoint without main params (saved from fp32 params): start them from the model params.
      if (which === 'main' && !state.main) {
        for (const cast of this.casts) cast.toMain();
        continue;
      }
      let at = 0;
      for (const r of this.ranges) {
        const shard = new Float32Array(r.gbufLocal.end);
        for (const p of r.params) {
          const numel = this.ddp.buffers[r.buffer]!.layout.params.find((x) => x.name === p.name)!.numel;
          shard.set(stateTensor(state[which]!, p.name, numel, which).subarray(p.param.start, p.param.end), p.paramLocal.start);
        }
        this.ctx.transfers.upload(moments, shard, at * 4);
        at += shard.length;
      }
    }
    this.setStep(step);
  }

  protected async globalSumOfSquares(local: number): Promise<number> {
    const total = new Float32Array([local]);
    await this.group.allReduce(total, 'sum');
    return total[0]!;
  }

  protected async afterUpdate(): Promise<void> {
    if (!this.config.overlapParamGather) {
      for (const r of this.ranges) await this.gatherBucket(r);
      return;
    }
    // The next forward reads the last bucket first (bucket 0 holds the model's end): gather in that order.
    let chain: Promise<void> = Promise.resolve();
    for (const r of [...this.ranges].reverse()) {
      chain = chain.then(() => this.gatherBucket(r));
      this.ddp.setParamGather(r.buffer, r.bucket, chain);
    }
  }

  private async gatherBucket(r: ShardRange): Promise<void> {
    const buffer = this.ddp.buffers[r.buffer]!;
    const bucket = buffer.layout.buckets[r.bucket]!;
    const params = this.ddp.hostParams(r.buffer, r.bucket).subarray(0, bucket.end - bucket.start);
    const bytes = params.BYTES_PER_ELEMENT;
    const s = r.gbufLocal.end;
    const mine = params.subarray(this.group.rank * s, (this.group.rank + 1) * s);
    const phases = this.ddp.phases;
    await phases.time('param readback', () => this.ctx.transfers.readback(buffer.params, r.gbufWorld.start * bytes, s * bytes, new Uint8Array(mine.buffer, mine.byteOffset, s * bytes)));
    await phases.time('all-gather', () => this.group.allGather(params));
    await phases.time('param upload', async () => {
      this.ctx.transfers.upload(buffer.params, params, bucket.start * bytes);
      await this.ctx.sync();
    });
  }
}

export class NonDistributedOptimizer extends AdamOverBuffers {
  readonly distributed = false;
  private readonly state: { expAvg: DeviceBuffer; expAvgSq: DeviceBuffer; main?: DeviceBuffer }[] = [];

  constructor(ctx: GpuContext, group: ProcessGroup, ddp: DistributedDataParallel, config: OptimizerConfig) {
    super(ctx, group, ddp, config);
    const casts: Record<'bfloat16' | 'float16', CastRange[]> = { bfloat16: [], float16: [] };
    const unscaleRanges: UnscaleRange[] = [];
    const normRanges: { operand: Float32Operand; length: number }[] = [];
    for (const buffer of ddp.buffers) {
      const { numel: n, paramDtype, gradDtype } = buffer.layout;
      const moments: { expAvg: DeviceBuffer; expAvgSq: DeviceBuffer; main?: DeviceBuffer } = { expAvg: this.moments(`exp_avg #${buffer.index}`, n), expAvgSq: this.moments(`exp_avg_sq #${buffer.index}`, n) };
      this.state.push(moments);
      let param = { buffer: buffer.params, offset: 0 };
      if (paramDtype !== 'float32') {
        moments.main = this.moments(`main params #${buffer.index}`, n, 'main-params');
        param = { buffer: moments.main, offset: 0 };
        casts[paramDtype].push({ wide: param, narrow: { buffer: buffer.params, offset: 0 }, length: n });
      }
      let grad = { buffer: buffer.grads, offset: 0 };
      if (gradDtype === 'float16') {
        grad = { buffer: this.moments(`main grads #${buffer.index}`, n, 'grads'), offset: 0 };
        unscaleRanges.push({ narrow: { buffer: buffer.grads, offset: 0 }, wide: grad, length: n });
      }
      normRanges.push({ operand: grad, length: n });
      this.kernels.push(new AdamKernel(ctx, { param, grad, expAvg: { buffer: moments.expAvg }, expAvgSq: { buffer: moments.expAvgSq }, length: n }));
    }
    this.setUpHalves(casts, unscaleRanges);
    this.norm = new SumOfSquares(ctx, normRanges);
  }

  /** The grads were all-reduced: every rank holds the same ones and finds the same. */
  protected async anyRank(foundInf: boolean): Promise<boolean> {
    return foundInf;
  }

  async exportState(): Promise<OptimizerState> {
    const state: OptimizerState = { expAvg: new Map(), expAvgSq: new Map() };
    for (const [i, buffer] of this.ddp.buffers.entries()) {
      for (const which of ['expAvg', 'expAvgSq', 'main'] as const) {
        const source = this.state[i]![which];
        if (!source) continue;
        const all = await this.ctx.transfers.readFloat32(source, 0, buffer.layout.numel);
        const into = (state[which] ??= new Map());
        for (const p of buffer.layout.params) into.set(p.name, all.slice(p.start, p.end));
      }
    }
    return state;
  }

  importState(state: OptimizerState, step: number): void {
    for (const [i, buffer] of this.ddp.buffers.entries()) {
      for (const which of ['expAvg', 'expAvgSq', 'main'] as const) {
        const target = this.state[i]![which];
        if (!target) continue;
        const values = state[which];
        if (!values) {
          // No main params in the checkpoint (saved from fp32 params): start them from the model params.
          this.casts.forEach((c) => c.toMain());
          continue;
        }
        const all = new Float32Array(Math.ceil(target.size / 4));
        for (const p of buffer.layout.params) all.set(stateTensor(values, p.name, p.numel, which), p.start);
        this.ctx.transfers.upload(target, all);
      }
    }
    this.setStep(step);
  }

  /** The grads were all-reduced: every rank already holds all of them. */
  protected async globalSumOfSquares(local: number): Promise<number> {
    return local;
  }

  protected async afterUpdate(): Promise<void> {}
}

/** The optimizer the CLI flag chooses. */
export function createOptimizer(ctx: GpuContext, group: ProcessGroup, ddp: DistributedDataParallel, config: OptimizerConfig): Optimizer {
  return ddp.layout.distributedOptimizer ? new DistributedOptimizer(ctx, group, ddp, config) : new NonDistributedOptimizer(ctx, group, ddp, config);
}
