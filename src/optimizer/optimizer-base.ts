/**
 * What both optimizers share: the interface, the step sequence, grad norm and clipping, 16-bit
 * set-up, and the update each runs on the params it owns: Adam (AdamW by default), SGD or Lion
 * (Megatron's --optimizer).
 */
import { GpuError } from '../gpu/errors.js';
import { ConfigError } from '../errors.js';
import type { Collectives } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { AdamKernel, type StateDtype, type StateOperand } from './adam.js';
import { BYTES, type ParamDtype } from '../ddp/layout.js';
import { HalfCast, type CastRange } from './cast.js';
import { DynamicLossScaler, type LossScalerConfig, type LossScalerState } from './loss-scaler.js';
import { Unscale, type UnscaleRange } from './unscale.js';
import { checkHyperParams, type AdamHyperParams } from './adam-math.js';
import { SumOfSquares } from './sumsq.js';
import { MomentumKernel } from './momentum.js';
import { checkMomentumHyperParams, LION_BETAS, type MomentKind, momentKinds, type OptimizerName, SGD_MOMENTUM } from './momentum-math.js';
import type { Float32Operand } from './windowed.js';

export interface OptimizerConfig {
  /** Adam's hyper-parameters; SGD and Lion take the learning rate, weight decay and `maximize` from them. */
  hyper: AdamHyperParams;
  /** Megatron's --optimizer (default 'adam'; `hyper.decoupled` chooses AdamW). */
  optimizer?: OptimizerName;
  /** SGD's momentum (Megatron's --sgd-momentum, default 0.9); 0 keeps no state. */
  sgdMomentum?: number;
  /** Lion's beta1 and beta2 (Megatron's --lion-beta1, --lion-beta2; default 0.95, 0.98). */
  lionBetas?: [number, number];
  /**
   * Param groups: whether a param gets weight decay (default: every param). Megatron's default
   * leaves biases and 1-D params (norms) out: `megatronWeightDecay`.
   */
  weightDecayFor?: (name: string, shape: readonly number[]) => boolean;
  /**
   * The params that take `Optimizer.decoupledLearningRate` instead of `learningRate` (Megatron's
   * --decoupled-lr: the embedding and the output layer). Default: none.
   */
  decoupledLrFor?: (name: string) => boolean;
  /** Clip the global grad norm to this value; 0 or absent: no clipping. */
  clipGrad?: number;
  /**
   * Distributed optimizer: return from `step()` with the param all-gathers still running, in the
   * order the next forward needs the buckets; the forward awaits `ddp.paramsReady(name)`. Until
   * `ddp.finishParamSync()` (or the last `paramsReady`) resolves, issue no other collective on the
   * group: the gathers are issued in the background, and every rank must issue the same order.
   */
  overlapParamGather?: boolean;
  /** fp16 grads: the dynamic loss scaler's settings (Megatron's defaults otherwise). */
  lossScaler?: Partial<LossScalerConfig>;
  /** Count the grads that are exactly zero at each step (Megatron's --log-num-zeros-in-grad): StepResult.numZeros. */
  countZeros?: boolean;
  /**
   * Megatron's precision-aware optimizer (--use-precision-aware-optimizer, distributed optimizer
   * only): how Adam's moments are stored (--exp-avg-dtype, --exp-avg-sq-dtype; default fp32). The
   * kernel widens them to fp32, updates and rounds them back to nearest even.
   */
  stateDtypes?: StateDtypes;
}

/** How the optimizer stores its state (fp32 where absent). */
export interface StateDtypes {
  /**
   * The moments the optimizer keeps per element (default Adam's: exp_avg and exp_avg_sq; see
   * `momentKinds`). What memory estimates count; an optimizer checks it against its own.
   */
  moments?: readonly MomentKind[];
  expAvg?: StateDtype;
  expAvgSq?: StateDtype;
  /**
   * The main params of 16-bit params (--main-params-dtype): fp32, or fp16, rounded to nearest even
   * after each update. fp16 params are then their own main params; bf16 params are cast from them.
   */
  mainParams?: 'float32' | 'float16';
  /**
   * The grads backward accumulates and the grad sync reduces (--main-grads-dtype): fp32, or bf16
   * for bf16 params. The layout decides (its buffers' grad dtype); the optimizer checks they agree.
   */
  mainGrads?: 'float32' | 'bfloat16';
}

/** Megatron's names of the state dtypes, as its flags spell them. */
export const STATE_DTYPE_NAMES: Record<'fp32' | 'bf16' | 'fp16', StateDtype> = { fp32: 'float32', bf16: 'bfloat16', fp16: 'float16' };

const SHORT = Object.fromEntries(Object.entries(STATE_DTYPE_NAMES).map(([name, dtype]) => [dtype, name])) as Record<StateDtype, string>;

/** Whether any state is stored narrower than fp32 (the precision-aware optimizer is at work). */
export function narrowState(state: StateDtypes): boolean {
  const { moments: _, ...dtypes } = state;
  return Object.values(dtypes).some((dtype) => dtype !== undefined && dtype !== 'float32');
}

/** 'bf16 exp_avg, fp32 exp_avg_sq' (and the main params' and grads' dtypes where not fp32): for logs and tables. */
export function stateDtypesText(state: StateDtypes): string {
  const main = [
    ...(state.mainParams === 'float16' ? ['fp16 main params'] : []),
    ...(state.mainGrads === 'bfloat16' ? ['bf16 main grads'] : []),
  ];
  return [`${SHORT[state.expAvg ?? 'float32']} exp_avg`, `${SHORT[state.expAvgSq ?? 'float32']} exp_avg_sq`, ...main].join(', ');
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
  /** With `countZeros`: how many elements of the params' grads are exactly zero (as the norm sees them); null otherwise, or skipped. */
  numZeros: number | null;
}

/**
 * The half of a step before anything changes (`prepareStep`): whether fp16 grads overflowed on some
 * rank, else the global grad norm and the zero count. A caller may look at it, throw the grads away and
 * make them again (a rerun of the iteration), then `applyStep` the last one.
 */
export interface PreparedStep {
  foundInf: boolean;
  /** NaN when `foundInf`. */
  gradNorm: number;
  numZeros: number | null;
}

/** The optimizer's moments per param, compact (no padding), on the host; empty for moments it does not keep. */
export interface OptimizerState {
  expAvg: Map<string, Float32Array>;
  expAvgSq: Map<string, Float32Array>;
  /** SGD's momentum buffer. */
  momentumBuffer: Map<string, Float32Array>;
  /** The main params of 16-bit params, as fp32 values (fp32 params, and fp16 params with fp16 main params, are their own). */
  main?: Map<string, Float32Array>;
}

export type StateKind = MomentKind | 'main_params';

/** `OptimizerState`'s name of each moment. */
export const STATE_FIELD: Record<MomentKind, 'expAvg' | 'expAvgSq' | 'momentumBuffer'> = {
  exp_avg: 'expAvg',
  exp_avg_sq: 'expAvgSq',
  momentum_buffer: 'momentumBuffer',
};

/** An empty `OptimizerState`. */
export function emptyOptimizerState(): OptimizerState {
  return { expAvg: new Map(), expAvgSq: new Map(), momentumBuffer: new Map() };
}

/**
 * A contiguous piece of one param's optimizer state on this rank's GPU: elements
 * [range.start, range.end) of the flattened param, at element `offset` of `buffer`, stored as
 * `dtype`. What a checkpoint streams to disk and back, rank by rank.
 */
export interface StatePiece {
  kind: StateKind;
  name: string;
  range: { start: number; end: number };
  buffer: DeviceBuffer;
  offset: number;
  dtype: StateDtype;
}

export interface Optimizer {
  readonly distributed: boolean;
  /** Which update it runs (Megatron's --optimizer). */
  readonly name: OptimizerName;
  /** The moments it keeps per element. */
  readonly moments: readonly MomentKind[];
  readonly stepCount: number;
  /** The learning rate of the next step (a schedule sets it before each step). */
  learningRate: number;
  /** The weight decay of the next step, for the params that decay (a schedule may set it before each step). */
  weightDecay: number;
  /**
   * The learning rate of the next step for the params of `decoupledLrFor` (a schedule sets it
   * before each step); null: they take `learningRate` too.
   */
  decoupledLearningRate: number | null;
  /** fp16 grads: the loss scaler (multiply the loss by its scale before backward); null otherwise. */
  readonly scaler: DynamicLossScaler | null;
  /** `applyStep(await prepareStep())`. */
  step(): Promise<StepResult>;
  /**
   * The grad norm of the grads as they are (fp16: unscaled, and whether some rank overflowed); changes
   * neither the params, the step count nor the loss scale. Collective: every rank must call it.
   */
  prepareStep(): Promise<PreparedStep>;
  /** The step for the grads `prepared` measured: the loss scale's update, clipping, the update, the param sync. */
  applyStep(prepared: PreparedStep): Promise<StepResult>;
  /**
   * The L2 norm of the main params (Megatron's params norm: the params the optimizer updates, fp32
   * or its 16-bit main params). Collective with the distributed optimizer: every rank must call it.
   */
  paramsNorm(): Promise<number>;
  /** Collective with the distributed optimizer: every rank must call it. */
  exportState(): Promise<OptimizerState>;
  /**
   * The state this rank holds, as pieces: its shards with the distributed optimizer, every param's
   * otherwise. Main params are fresh (they follow any write to the model params).
   */
  statePieces(): StatePiece[];
  /** After writing `statePieces()` buffers directly (a checkpoint load): the step count, and the main params are current. */
  stateLoaded(step: number): void;
  /** fp16: the loss scaler's state for a checkpoint; null without one. */
  scalerState(): LossScalerState | null;
  destroy(): void;
}

/** Megatron's default param groups: weight decay on every param of two or more dims that is not a bias. */
export function megatronWeightDecay(name: string, shape: readonly number[]): boolean {
  return shape.length > 1 && !name.endsWith('.bias');
}

/** A param group: whether its params get weight decay, and whether they take the decoupled learning rate. */
export interface ParamGroup {
  decay: boolean;
  decoupled: boolean;
}

/**
 * Where one optimizer range splits into runs of params of the same group, pure: `params` are the
 * params' starts in the range's coordinates (ascending), the range is [0, length). A run starts
 * where a param of another group starts (padding before it goes with it), so every boundary is a
 * param start, a multiple of 4 in both layouts.
 */
export function groupRuns(
  params: readonly ({ start: number } & ParamGroup)[],
  length: number,
): ({ start: number; end: number } & ParamGroup)[] {
  const runs: ({ start: number; end: number } & ParamGroup)[] = [];
  for (const p of params) {
    const last = runs.at(-1);
    if (last && last.decay === p.decay && last.decoupled === p.decoupled) continue;
    if (last) last.end = Math.max(last.start, p.start);
    runs.push({ start: last ? Math.max(last.start, p.start) : 0, end: length, decay: p.decay, decoupled: p.decoupled });
  }
  if (runs.length === 0) runs.push({ start: 0, end: length, decay: true, decoupled: false });
  return runs.filter((r) => r.end > r.start);
}

/** The update of a run of params of one group. */
type UpdateKernel = AdamKernel | MomentumKernel;

export abstract class OptimizerOverBuffers implements Optimizer {
  abstract readonly distributed: boolean;
  readonly name: OptimizerName;
  readonly moments: readonly MomentKind[];
  protected steps = 0;
  protected readonly owned: DeviceBuffer[] = [];
  /** The update over runs of params of one group each. */
  protected kernels: ({ kernel: UpdateKernel } & ParamGroup)[] = [];
  /** A copy of the config's hyper-parameters: the learning rate changes step by step. */
  protected readonly hyper: AdamHyperParams;
  private decoupledLr: number | null = null;
  protected norm!: SumOfSquares;
  /** Elements of the norm's ranges that are padding, not params (zero always): the zero count leaves them out. */
  protected normPadding = 0;
  /** The params the Adam kernels update, for `paramsNorm` (made at its first call). */
  private paramsSumsq: SumOfSquares | null = null;
  /** 16-bit params: fp32 main params are cast into the model params after each update. */
  protected casts: HalfCast[] = [];
  /** fp16 grads: unscaled into fp32 main grads, checked for inf/NaN. */
  protected unscale: Unscale | null = null;
  scaler: DynamicLossScaler | null = null;
  /** The DDP params version the fp32 main params were last taken from (or written for). */
  private mainVersion = -1;

  constructor(
    protected readonly ctx: GpuContext,
    protected readonly group: Collectives,
    protected readonly ddp: DistributedDataParallel,
    protected readonly config: OptimizerConfig,
  ) {
    checkHyperParams(config.hyper);
    this.hyper = { ...config.hyper };
    this.name = config.optimizer ?? 'adam';
    this.moments = momentKinds(this.name, this.sgdMomentum);
    if (this.name !== 'adam') {
      checkMomentumHyperParams(this.name, this.momentumHyper(config.hyper.lr, config.hyper.weightDecay));
      // bf16 grads the update reads as they are; the rest of the precision-aware optimizer is Adam's.
      if (narrowState({ ...config.stateDtypes, mainGrads: undefined }))
        throw new ConfigError(
          `the precision-aware optimizer's 16-bit state is Adam's; ${this.name === 'sgd' ? 'SGD' : 'Lion'} keeps fp32 state and main params`,
          'stateDtypes',
        );
    }
    const asked = config.stateDtypes?.moments;
    if (asked && asked.join() !== this.moments.join())
      throw new ConfigError(
        `stateDtypes.moments [${asked.join(', ')}] is not what ${this.name} keeps: [${this.moments.join(', ')}]`,
        'stateDtypes',
      );
    if (ddp.layout.buffers.some((b) => b.paramDtype === 'float16') && !ctx.hasF16) {
      throw new GpuError(
        `fp16 params need the shader-f16 feature, which adapter '${ctx.adapterName}' does not offer; use bf16 (--bf16) or fp32 instead`,
      );
    }
    if (config.clipGrad !== undefined && !(config.clipGrad >= 0))
      throw new ConfigError(`clipGrad must be >= 0, got ${config.clipGrad}`, 'clipGrad');
    const bf16Grads = ddp.layout.buffers.some((b) => b.gradDtype === 'bfloat16');
    if (bf16Grads !== (config.stateDtypes?.mainGrads === 'bfloat16')) {
      throw new ConfigError(
        bf16Grads
          ? "the grad buffer holds bf16 grads: say so with stateDtypes.mainGrads 'bfloat16' (--main-grads-dtype bf16)"
          : "stateDtypes.mainGrads 'bfloat16' needs a layout of bf16 grads (params with gradDtype 'bfloat16')",
        'stateDtypes',
      );
    }
    if (this.mainParamsDtype === 'float16' && ddp.layout.buffers.some((b) => b.paramDtype === 'float32')) {
      throw new ConfigError(
        "stateDtypes.mainParams 'float16' needs 16-bit params (--bf16 or --fp16); fp32 params are their own main params",
        'stateDtypes',
      );
    }
  }

  private get sgdMomentum(): number {
    return this.config.sgdMomentum ?? SGD_MOMENTUM;
  }

  /** SGD's or Lion's hyper-parameters at this learning rate and weight decay. */
  private momentumHyper(lr: number, weightDecay: number) {
    if (this.name === 'sgd') return { lr, momentum: this.sgdMomentum, weightDecay };
    const [beta1, beta2] = this.config.lionBetas ?? LION_BETAS;
    return { lr, beta1, beta2, weightDecay };
  }

  /** How a moment is stored (the precision-aware optimizer narrows Adam's). */
  protected momentDtype(kind: MomentKind): StateDtype {
    if (kind === 'exp_avg') return this.config.stateDtypes?.expAvg ?? 'float32';
    if (kind === 'exp_avg_sq') return this.config.stateDtypes?.expAvgSq ?? 'float32';
    return 'float32';
  }

  /** How the main params of 16-bit params are stored (fp16 params in fp16 are their own). */
  protected get mainParamsDtype(): 'float32' | 'float16' {
    return this.config.stateDtypes?.mainParams ?? 'float32';
  }

  /** Whether params of `dtype` have main params apart from themselves. */
  protected hasMainParams(dtype: ParamDtype): boolean {
    return dtype !== 'float32' && dtype !== this.mainParamsDtype;
  }

  get learningRate(): number {
    return this.hyper.lr;
  }

  set learningRate(lr: number) {
    if (!(lr >= 0) || !Number.isFinite(lr)) throw new ConfigError(`lr must be a finite number >= 0, got ${lr}`, 'lr');
    this.hyper.lr = lr;
  }

  get decoupledLearningRate(): number | null {
    return this.decoupledLr;
  }

  set decoupledLearningRate(lr: number | null) {
    if (lr !== null && (!(lr >= 0) || !Number.isFinite(lr)))
      throw new ConfigError(`decoupled lr must be a finite number >= 0, got ${lr}`, 'decoupledLearningRate');
    this.decoupledLr = lr;
  }

  get weightDecay(): number {
    return this.hyper.weightDecay;
  }

  set weightDecay(wd: number) {
    if (!(wd >= 0) || !Number.isFinite(wd)) throw new ConfigError(`weightDecay must be a finite number >= 0, got ${wd}`, 'weightDecay');
    this.hyper.weightDecay = wd;
  }

  /** Whether param `name` (of `shape`) gets weight decay. */
  protected decays(name: string, shape: readonly number[]): boolean {
    return this.config.weightDecayFor?.(name, shape) ?? true;
  }

  /** Update kernels over a range of the buffers, one per run of params of one group; `moments` holds each of `this.moments`. */
  protected addKernels(
    operands: { param: StateOperand; grad: StateOperand; moments: Partial<Record<MomentKind, StateOperand>> },
    length: number,
    params: readonly { name: string; shape: readonly number[]; start: number }[],
  ): void {
    const at = <T extends Float32Operand>(o: T, k: number): T => ({ ...o, offset: (o.offset ?? 0) + k });
    for (const run of groupRuns(
      params.map((p) => ({
        start: p.start,
        decay: this.decays(p.name, p.shape),
        decoupled: this.config.decoupledLrFor?.(p.name) ?? false,
      })),
      length,
    )) {
      const moment = (kind: MomentKind) => at(operands.moments[kind]!, run.start);
      const param = at(operands.param, run.start);
      const grad = at(operands.grad, run.start);
      const n = run.end - run.start;
      const kernel =
        this.name === 'adam'
          ? new AdamKernel(this.ctx, { param, grad, expAvg: moment('exp_avg'), expAvgSq: moment('exp_avg_sq'), length: n })
          : new MomentumKernel(this.ctx, this.name, {
              param,
              grad,
              state: this.moments.length === 0 ? null : moment(this.moments[0]!),
              length: n,
            });
      this.kernels.push({ kernel, decay: run.decay, decoupled: run.decoupled });
    }
  }

  /** A zeroed fp32 buffer the optimizer owns (moments, main params, main grads). */
  protected fp32Buffer(
    label: string,
    elements: number,
    category: 'optimizer-state' | 'main-params' | 'grads' = 'optimizer-state',
  ): DeviceBuffer {
    return this.stateBuffer(label, elements, 'float32', category);
  }

  /** A zeroed buffer of `elements` stored as `dtype` (16-bit: whole words). */
  protected stateBuffer(
    label: string,
    elements: number,
    dtype: StateDtype,
    category: 'optimizer-state' | 'main-params' | 'grads' = 'optimizer-state',
  ): DeviceBuffer {
    const size = Math.ceil((elements * BYTES[dtype]) / 4) * 4;
    const buffer = this.ctx.createBuffer({ label, size, usage: storageUsage(), category });
    this.ctx.device.queue.writeBuffer(buffer.gpu, 0, new Float32Array(Math.ceil(buffer.size / 4)));
    this.owned.push(buffer);
    return buffer;
  }

  /** Sums this rank made over the grads or params it owns (sums of squares, zero counts), added over the ranks that share the work. */
  protected abstract globalSums(local: number[]): Promise<number[]>;

  /** After Adam: make every rank's params whole again. */
  protected abstract afterUpdate(): Promise<void>;

  /** Whether any rank found an inf or NaN grad. */
  protected abstract anyRank(foundInf: boolean): Promise<boolean>;

  /** Casts for 16-bit params (main params start as the model params) and unscaling for fp16 grads. */
  protected setUpHalves(casts: Record<'bfloat16' | 'float16', CastRange[]>, unscaleRanges: UnscaleRange[]): void {
    for (const dtype of ['bfloat16', 'float16'] as const) {
      if (casts[dtype].length === 0) continue;
      // Params with main params apart from themselves: fp16 main params only ever serve bf16 ones.
      this.casts.push(new HalfCast(this.ctx, casts[dtype], dtype, this.mainParamsDtype));
    }
    this.refreshMainParams();
    if (unscaleRanges.length > 0) {
      this.unscale = new Unscale(this.ctx, unscaleRanges);
      this.scaler = new DynamicLossScaler(this.config.lossScaler);
    }
  }

  /**
   * 16-bit params: take the fp32 main params from the model params when those were written since
   * (importParams, broadcastParams, paramsWritten), so that the order of set-up calls does not matter.
   */
  protected refreshMainParams(): void {
    if (this.mainVersion === this.ddp.paramsVersion) return;
    for (const cast of this.casts) cast.toMain(); // queued before anything that reads them
    this.mainVersion = this.ddp.paramsVersion;
  }

  abstract statePieces(): StatePiece[];

  stateLoaded(step: number): void {
    this.setStep(step);
    this.mainVersion = this.ddp.paramsVersion; // the main params were just written from a checkpoint
  }

  async step(): Promise<StepResult> {
    return this.applyStep(await this.prepareStep());
  }

  async prepareStep(): Promise<PreparedStep> {
    const phases = this.ddp.phases;
    this.refreshMainParams();
    if (this.unscale && this.scaler) {
      const scaler = this.scaler;
      const local = await phases.time('unscale', () => this.unscale!.run(scaler.scale));
      const foundInf = await phases.time('unscale', () => this.anyRank(local));
      if (foundInf) return { foundInf, gradNorm: NaN, numZeros: null };
    }
    const local = await phases.time('grad norm', () => this.norm.run());
    // One collective for both: the sum of squares, and the zeros of the params' grads.
    const sums = await phases.time('grad norm', () =>
      this.globalSums(local.zeros === null ? [local.sumsq] : [local.sumsq, local.zeros - this.normPadding]),
    );
    return { foundInf: false, gradNorm: Math.sqrt(sums[0]!), numZeros: sums[1] ?? null };
  }

  async applyStep({ foundInf, gradNorm, numZeros }: PreparedStep): Promise<StepResult> {
    const phases = this.ddp.phases;
    if (this.scaler) {
      this.scaler.update(foundInf);
      if (foundInf) return { step: this.steps, gradNorm: NaN, clipCoeff: 1, skipped: true, lossScale: this.scaler.scale, numZeros: null };
    }
    this.steps += 1;
    const clip = this.config.clipGrad ?? 0;
    const clipCoeff = clip > 0 && clip / (gradNorm + 1e-6) < 1 ? clip / (gradNorm + 1e-6) : 1;
    // The timing phase of the update takes the optimizer's name: adam, sgd or lion.
    await phases.time(this.name, async () => {
      // AdamW's and Lion's decoupled decay scales by the group's own rate: p *= 1 - lr·wd.
      const lrOf = (decoupled: boolean) => (decoupled ? (this.decoupledLr ?? this.hyper.lr) : this.hyper.lr);
      const sign = this.hyper.maximize ? -1 : 1;
      for (const { kernel, decay, decoupled } of this.kernels) {
        const [lr, weightDecay] = [lrOf(decoupled), decay ? this.hyper.weightDecay : 0];
        if (kernel instanceof AdamKernel) kernel.step({ ...this.hyper, lr, weightDecay }, this.steps, clipCoeff);
        else kernel.step(this.momentumHyper(lr, weightDecay), sign * clipCoeff);
      }
      for (const cast of this.casts) cast.toModel();
      await this.ctx.sync();
    });
    await this.afterUpdate();
    await this.ctx.sync();
    return { step: this.steps, gradNorm, clipCoeff, skipped: false, lossScale: this.scaler?.scale ?? null, numZeros };
  }

  async paramsNorm(): Promise<number> {
    // After the step's param gathers (--overlap-param-gather issues them bucket by bucket): its sum is a collective.
    await this.ddp.finishParamSync();
    this.refreshMainParams();
    this.paramsSumsq ??= new SumOfSquares(
      this.ctx,
      this.kernels.map(({ kernel }) => ({ operand: kernel.operands.param, length: kernel.operands.length })),
    );
    const [sumsq] = await this.globalSums([(await this.paramsSumsq.run()).sumsq]);
    return Math.sqrt(sumsq!);
  }

  scalerState(): LossScalerState | null {
    return this.scaler?.stateDict() ?? null;
  }

  get stepCount(): number {
    return this.steps;
  }

  abstract exportState(): Promise<OptimizerState>;

  protected setStep(step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new ConfigError(`optimizer step must be a non-negative integer, got ${step}`);
    this.steps = step;
  }

  destroy(): void {
    this.unscale?.destroy();
    for (const c of this.casts) c.destroy();
    for (const { kernel } of this.kernels) kernel.destroy();
    this.norm.destroy();
    this.paramsSumsq?.destroy();
    for (const b of this.owned) b.destroy();
  }
}
