/**
 * The GPU context: one adapter and device per process, the adapter's own limits, optional features,
 * allocation accounting, kernels, transfers, and uncaptured errors turned into thrown ones.
 */
import { adapterModel, isSoftwareAdapter, requireAdapter, type AdapterOptions, type FoundAdapter } from './adapter.js';
import { GpuDeviceError, GpuError } from './errors.js';
import { MemoryAccounting, type MemoryCategory, type MemoryReport } from './memory.js';
import { Kernels } from './kernels.js';
import { gpuPollFor, pollGpuEvery } from './poll.js';
import { DEFAULT_TILES, tuneMatmul, type MatmulTuning } from './matmul-tuner.js';
import { BufferPool } from './pool.js';
import { ScratchTextures } from './scratch.js';
import { Transfers } from './transfers.js';

/** Limits webtron asks for at the adapter's own value (device defaults are far lower). */
const REQUESTED_LIMITS = [
  'maxTextureDimension2D',
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxBindGroups',
  'maxBindingsPerBindGroup',
  // Alignments are "better" when smaller: shards and windows can then start closer together.
  'minStorageBufferOffsetAlignment',
  'minUniformBufferOffsetAlignment',
] as const;

type RequestedLimit = (typeof REQUESTED_LIMITS)[number];

/** Optional features used when present ('subgroups' is newer than @webgpu/types' feature list). */
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = [
  'shader-f16',
  'timestamp-query',
  'subgroups' as GPUFeatureName,
  'chromium-experimental-subgroup-matrix' as GPUFeatureName,
];

interface SubgroupMatrixConfig {
  componentType: unknown;
  resultComponentType: unknown;
  M: unknown;
  N: unknown;
  K: unknown;
}

/** The f16 x f16 -> f32 subgroup-matrix shape (M x N x K) the adapter offers, the tensor cores' shape. */
export interface SubgroupMatrixShape {
  m: number;
  n: number;
  k: number;
}

export interface GpuOptions extends AdapterOptions {
  /** Ask for less than the adapter offers (values above the adapter's are an error). For tests. */
  limits?: Partial<Record<RequestedLimit, number>>;
  /** Leave these optional features off even when the adapter has them. */
  disableFeatures?: GPUFeatureName[];
  /** Rows of C per matmul invocation instead of the adapter's default (`matmulRows`). For tests. */
  matmulRows?: 16 | 32;
  /** The matmul kernel family instead of the adapter's choice (`matmulKernel`). For tests and benchmarks. */
  matmulKernel?: MatmulKernel;
  /** The attention kernel instead of the adapter's choice (`attentionKernel`). For tests and benchmarks. */
  attentionKernel?: AttentionKernel;
  /** The reduction kernels instead of the adapter's choice (`reductionKernel`). For tests and benchmarks. */
  reductionKernel?: ReductionKernel;
  /**
   * Tune the tiled matmul's tile shapes at creation (from the cache when it has this adapter): the
   * default for hardware adapters. `false` keeps the default tiles.
   */
  tuneMatmul?: boolean;
  /** Called with a line per tuned class and per tensor-core workgroup left out, while the matmul is tuned (not when read from the cache). */
  tuneProgress?: (line: string) => void;
}

/**
 * Matmul kernel families: `buffer` reads its operands from storage buffers in place, any layout
 * (shaders/matmul-body.wgsl); `texture` reads copies of them in storage textures, for CPU drivers
 * (shaders/matmul-texture-body.wgsl); `tiled` stages tiles in workgroup memory, for hardware GPUs
 * (shaders/matmul-tiled-body.wgsl).
 */
export type MatmulKernel = 'buffer' | 'texture' | 'tiled';

/**
 * Attention: `fused` (shaders/attention.wgsl, flash-style: no T x T probabilities in memory) or
 * `unfused` (two matmuls and a softmax over a stored [B, H, T, T] tensor).
 */
export type AttentionKernel = 'fused' | 'unfused';

const ATTENTION_KERNELS: readonly AttentionKernel[] = ['fused', 'unfused'];

/** The value of environment variable `name` when set, one of `choices` (else an error). */
function choiceFromEnv<T extends string>(env: NodeJS.ProcessEnv, name: string, choices: readonly T[]): T | undefined {
  const text = env[name];
  if (text === undefined || text === '') return undefined;
  if (!(choices as readonly string[]).includes(text)) throw new GpuError(`${name} must be one of ${choices.join(', ')}, got '${text}'`);
  return text as T;
}

/** `WEBTRON_ATTENTION` when set: the attention kernel to use instead of the adapter's choice. */
export function attentionKernelFromEnv(env: NodeJS.ProcessEnv = process.env): AttentionKernel | undefined {
  return choiceFromEnv(env, 'WEBTRON_ATTENTION', ATTENTION_KERNELS);
}

/**
 * Row and column reductions (bias and layernorm grads, cross-entropy's log-sum-exp, the token
 * embedding's grad): `lane`, one invocation walks a whole row or column, which suits CPU drivers,
 * whose lanes are SIMD and where spreading a sum only adds passes; `split`, each sum is spread over
 * many invocations (chunks of rows summed in a second pass, a workgroup per row), which hardware
 * GPUs need: a column walked by one invocation leaves a GPU with thousands of cores nearly idle.
 */
export type ReductionKernel = 'lane' | 'split';

const REDUCTION_KERNELS: readonly ReductionKernel[] = ['lane', 'split'];

/** `WEBTRON_REDUCTIONS` when set: the reduction kernels to use instead of the adapter's choice. */
export function reductionKernelFromEnv(env: NodeJS.ProcessEnv = process.env): ReductionKernel | undefined {
  return choiceFromEnv(env, 'WEBTRON_REDUCTIONS', REDUCTION_KERNELS);
}

const MATMUL_KERNELS: readonly MatmulKernel[] = ['buffer', 'texture', 'tiled'];

/** `WEBTRON_MATMUL` when set: the matmul kernel family to use instead of the adapter's choice. */
export function matmulKernelFromEnv(env: NodeJS.ProcessEnv = process.env): MatmulKernel | undefined {
  return choiceFromEnv(env, 'WEBTRON_MATMUL', MATMUL_KERNELS);
}

/** Usage of a storage buffer that can also be copied to and from (what webtron's data buffers need). */
export function storageUsage(): GPUBufferUsageFlags {
  return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
}

/**
 * A GPU buffer with its accounting category. Destroy it through `destroy()` so the count falls.
 *
 * A buffer made with `releasable` can give its memory back (`release()`) and take new memory again
 * (`restore()`, zeroed as WebGPU zeroes every new buffer) while it stays the same object: views of it
 * (a param's grad, a bucket's params) keep pointing at it. Work already submitted that uses the
 * memory finishes first; work recorded but not submitted must be submitted before `release()`.
 */
export class DeviceBuffer {
  private alive = true;
  private memory: GPUBuffer | null;

  constructor(
    gpu: GPUBuffer | null,
    readonly size: number,
    private counted: MemoryCategory,
    private readonly accounting: MemoryAccounting,
    private readonly remake: (() => GPUBuffer) | null = null,
    private readonly name = gpu?.label ?? '',
  ) {
    this.memory = gpu;
  }

  /** The GPU buffer; an error while released. */
  get gpu(): GPUBuffer {
    if (!this.memory) throw new GpuError(`buffer '${this.name}' is released: restore() it before use`);
    return this.memory;
  }

  /** Whether it holds memory now (always, unless released). */
  get resident(): boolean {
    return this.memory !== null;
  }

  get category(): MemoryCategory {
    return this.counted;
  }

  /** Count this buffer's bytes under `category` from now on. */
  recount(category: MemoryCategory): void {
    if (this.memory) this.accounting.moved(this.counted, category, this.size);
    this.counted = category;
  }

  get label(): string {
    return this.name;
  }

  get destroyed(): boolean {
    return !this.alive;
  }

  /** Give the memory back, keeping this object (releasable buffers only; idempotent). */
  release(): void {
    if (!this.remake) throw new GpuError(`buffer '${this.name}' was not made releasable`);
    if (!this.alive || !this.memory) return;
    this.memory.destroy();
    this.memory = null;
    this.accounting.freed(this.counted, this.size);
  }

  /** Take new, zeroed memory after `release()` (idempotent while resident). */
  restore(): void {
    if (!this.remake) throw new GpuError(`buffer '${this.name}' was not made releasable`);
    if (!this.alive) throw new GpuError(`buffer '${this.name}' is destroyed`);
    if (this.memory) return;
    this.memory = this.remake();
    this.accounting.allocated(this.counted, this.size);
  }

  /** Idempotent. */
  destroy(): void {
    if (!this.alive) return;
    this.alive = false;
    if (!this.memory) return;
    this.memory.destroy();
    this.memory = null;
    this.accounting.freed(this.counted, this.size);
  }
}

/** Bytes per texel of the texture formats webtron allocates. */
const TEXEL_BYTES: Partial<Record<GPUTextureFormat, number>> = { rgba32float: 16, rgba16float: 8, rgba16uint: 8 };

/** A 2-D GPU texture with its accounting category (kernels' scratch copies of operands). */
export class DeviceTexture {
  private alive = true;
  readonly view: GPUTextureView;

  constructor(
    readonly gpu: GPUTexture,
    readonly size: number,
    readonly category: MemoryCategory,
    private readonly onDestroy: (texture: DeviceTexture) => void,
  ) {
    this.view = gpu.createView();
  }

  get width(): number {
    return this.gpu.width;
  }

  get height(): number {
    return this.gpu.height;
  }

  get format(): GPUTextureFormat {
    return this.gpu.format;
  }

  get destroyed(): boolean {
    return !this.alive;
  }

  /** Idempotent. */
  destroy(): void {
    if (!this.alive) return;
    this.alive = false;
    this.gpu.destroy();
    this.onDestroy(this);
  }
}

export interface TextureRequest {
  label: string;
  width: number;
  height: number;
  format: 'rgba32float' | 'rgba16float' | 'rgba16uint';
  usage: GPUTextureUsageFlags;
  category: MemoryCategory;
}

export interface BufferRequest {
  label: string;
  /** Bytes; rounded up to a multiple of 4 (what WebGPU copies and writes need). */
  size: number;
  usage: GPUBufferUsageFlags;
  category: MemoryCategory;
  /** Mapped for writing from the start (upload staging). */
  mappedAtCreation?: boolean;
  /**
   * Its memory can be given back and taken again (`DeviceBuffer.release`/`restore`); `resident`
   * false: made released, holding no memory until the first `restore()`.
   */
  releasable?: { resident: boolean };
}

export class GpuContext {
  readonly memory = new MemoryAccounting();
  readonly kernels: Kernels;
  readonly transfers: Transfers;
  readonly scratch: ScratchTextures;
  readonly pool: BufferPool;
  /** The tiled matmul's tile shapes by shape class, and where they came from. */
  matmulTuning: MatmulTuning = { tiles: { ...DEFAULT_TILES }, gflops: {}, source: 'default', cachePath: null };
  /**
   * Products of a few rows (a decoder's step) run on the few-rows kernel (src/nn/matmul-rows.ts);
   * false runs them on the family's kernel, as the decode bench does for its comparison.
   */
  fewRowsMatmul = true;
  /**
   * At most this many tokens per window where a token table is read in windows because it passes
   * the storage binding limit (src/nn/vocab-windows.ts); below the table's size, even a table that
   * fits is read in windows. For tests; by default, as many as one binding holds.
   */
  vocabWindowTokens = Number.POSITIVE_INFINITY;
  private readonly pendingErrors: GPUError[] = [];
  private lostInfo: GPUDeviceLostInfo | null = null;

  private constructor(
    readonly found: FoundAdapter,
    readonly device: GPUDevice,
    private readonly matmulRowsOption?: 16 | 32,
    private readonly matmulKernelOption?: MatmulKernel,
    private readonly attentionKernelOption?: AttentionKernel,
    private readonly reductionKernelOption?: ReductionKernel,
  ) {
    device.onuncapturederror = (event) => {
      this.pendingErrors.push(event.error);
    };
    void device.lost.then((info) => {
      this.lostInfo = info;
    });
    this.kernels = new Kernels(this);
    this.transfers = new Transfers(this);
    this.scratch = new ScratchTextures(this);
    this.pool = new BufferPool(this);
  }

  static async create(options: GpuOptions = {}): Promise<GpuContext> {
    const found = await requireAdapter(options);
    const { adapter } = found;
    // On a CPU driver, waiting for the GPU must not spin on a core the driver's threads need (poll.ts).
    pollGpuEvery(gpuPollFor(isSoftwareAdapter(found.info)));
    const requiredLimits: Record<string, number> = {};
    for (const name of REQUESTED_LIMITS) {
      const offered = adapter.limits[name];
      const asked = options.limits?.[name];
      const better = name.startsWith('min') ? asked !== undefined && asked < offered : asked !== undefined && asked > offered;
      if (better) {
        throw new GpuError(`limit ${name}=${asked} exceeds what adapter '${found.description}' offers (${offered})`);
      }
      requiredLimits[name] = asked ?? offered;
    }
    const disabled = new Set(options.disableFeatures ?? []);
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f) && !disabled.has(f));
    const device = await adapter.requestDevice({
      label: 'webtron',
      requiredLimits,
      requiredFeatures,
    });
    const ctx = new GpuContext(
      found,
      device,
      options.matmulRows,
      options.matmulKernel ?? matmulKernelFromEnv(),
      options.attentionKernel ?? attentionKernelFromEnv(),
      options.reductionKernel ?? reductionKernelFromEnv(),
    );
    if (ctx.matmulKernel === 'tiled' && (options.tuneMatmul ?? !ctx.software) && ctx.hasTimestamps) {
      ctx.matmulTuning = await tuneMatmul(ctx, options.tuneProgress ? { progress: options.tuneProgress } : {});
    }
    return ctx;
  }

  get adapterName(): string {
    return this.found.info.description || this.found.info.device || this.found.info.vendor;
  }

  /** The adapter's description and device id together (see `adapterModel`): what tables of known GPUs match. */
  get adapterModel(): string {
    return adapterModel(this.found.info);
  }

  get backend(): string {
    return this.found.backend;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  get hasF16(): boolean {
    return this.device.features.has('shader-f16');
  }

  get hasTimestamps(): boolean {
    return this.device.features.has('timestamp-query');
  }

  /** Shaders run on the CPU (lavapipe): a workgroup executes a SIMD batch at a time, and compiles are slow. */
  get software(): boolean {
    return isSoftwareAdapter(this.found.info);
  }

  /** The widest subgroup the adapter runs (its SIMD width on a CPU driver); 0 when it does not say. */
  get subgroupMaxSize(): number {
    return this.found.info.subgroupMaxSize ?? 0;
  }

  /**
   * The subgroup-matrix shape the tensor-core matmul for 16-bit params runs with: the adapter's
   * offer, once the tuner's probe saw the kernel compute a right product here (null otherwise, as
   * on lavapipe, which has no subgroup matrices).
   */
  get subgroupMatrix(): SubgroupMatrixShape | null {
    return this.matmulTuning.mma ? this.subgroupMatrixOffered : null;
  }

  /** The f16 -> f32 subgroup-matrix shape the device offers (feature enabled), whether or not it was probed. */
  get subgroupMatrixOffered(): SubgroupMatrixShape | null {
    if (!this.device.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName)) return null;
    const configs = (this.found.info as unknown as { subgroupMatrixConfigs?: SubgroupMatrixConfig[] }).subgroupMatrixConfigs ?? [];
    // Dawn's config objects stringify as {}: read each field by name.
    const f16 = configs.find((c) => String(c.componentType) === 'f16' && String(c.resultComponentType) === 'f32');
    return f16 ? { m: Number(f16.M), n: Number(f16.N), k: Number(f16.K) } : null;
  }

  /** Subgroups of exactly 8 lanes (the texture matmul's workgroup is one subgroup of 8). */
  get subgroupsOfExactly8(): boolean {
    return this.hasSubgroupsOf8 && this.subgroupMaxSize === 8;
  }

  /** Subgroup operations in subgroups of at least 8 lanes (the matmul kernel shares A's rows that way). */
  get hasSubgroupsOf8(): boolean {
    return this.device.features.has('subgroups') && (this.found.info.subgroupMinSize ?? 0) >= 8;
  }

  /**
   * Rows of C per matmul invocation (shaders/matmul-body.wgsl): 32 on a CPU driver, where loads cost
   * more than arithmetic and 32 rows measured 1.3-1.7x as fast as 16; 16 on hardware, sparing registers.
   */
  get matmulRows(): 16 | 32 {
    return this.matmulRowsOption ?? (this.software ? 32 : 16);
  }

  /**
   * The matmul kernel family: `tiled` on hardware; on a CPU driver running subgroups of exactly 8
   * lanes `texture` (its storage-image loads are branch-free gathers, its buffer loads lane by lane;
   * 1.8-2x on GPT shapes on lavapipe), else `buffer`. Shapes the texture kernel cannot take run on
   * `buffer`.
   */
  get matmulKernel(): MatmulKernel {
    if (this.matmulKernelOption) return this.matmulKernelOption;
    if (!this.software) return 'tiled';
    return this.subgroupsOfExactly8 ? 'texture' : 'buffer';
  }

  /**
   * The attention kernel: fused on hardware; unfused on a CPU driver, where the fused kernel's
   * per-row loops over workgroup memory ran 4.5x slower than two matmuls and a softmax (lavapipe,
   * 4 x 128 GPT, T 64: 86 against 19 ms of a forward and backward).
   */
  get attentionKernel(): AttentionKernel {
    return this.attentionKernelOption ?? (this.software ? 'unfused' : 'fused');
  }

  /** The reduction kernels (ReductionKernel): `lane` on a CPU driver, `split` on hardware. */
  get reductionKernel(): ReductionKernel {
    return this.reductionKernelOption ?? (this.software ? 'lane' : 'split');
  }

  /** Allocate a buffer counted under `category`. */
  createBuffer(request: BufferRequest): DeviceBuffer {
    this.throwIfLost();
    const size = Math.max(4, Math.ceil(request.size / 4) * 4);
    if (size > this.limits.maxBufferSize) {
      throw new GpuError(
        `buffer '${request.label}' needs ${size} B but this device's maxBufferSize is ${this.limits.maxBufferSize} B; split it`,
      );
    }
    const make = () =>
      this.device.createBuffer({
        label: request.label,
        size,
        usage: request.usage,
        mappedAtCreation: request.mappedAtCreation ?? false,
      });
    if (request.releasable && !request.releasable.resident) {
      return new DeviceBuffer(null, size, request.category, this.memory, make, request.label);
    }
    const gpu = make();
    this.memory.allocated(request.category, size);
    return new DeviceBuffer(gpu, size, request.category, this.memory, request.releasable ? make : null, request.label);
  }

  /** Allocate a 2-D texture counted under `category` (its texels' bytes). */
  createTexture(request: TextureRequest): DeviceTexture {
    this.throwIfLost();
    const max = this.limits.maxTextureDimension2D;
    if (request.width > max || request.height > max) {
      throw new GpuError(
        `texture '${request.label}' of ${request.width} x ${request.height} texels exceeds this device's ${max} per dimension`,
      );
    }
    const size = request.width * request.height * TEXEL_BYTES[request.format]!;
    const gpu = this.device.createTexture({
      label: request.label,
      size: [request.width, request.height],
      format: request.format,
      usage: request.usage,
    });
    this.memory.allocated(request.category, size);
    return new DeviceTexture(gpu, size, request.category, (t) => this.memory.freed(t.category, t.size));
  }

  /** Live and peak bytes by category. */
  memoryReport(): MemoryReport {
    return this.memory.report();
  }

  submit(commands: GPUCommandBuffer[]): void {
    this.throwIfLost();
    this.device.queue.submit(commands);
  }

  /**
   * Wait for the queue to drain, then throw any error the device reported since the last sync
   * point. Every readback goes through here, so a failed dispatch never reads back as zeros.
   */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    // Dawn delivers uncaptured-error events as tasks; let them land before looking.
    await new Promise((resolve) => setImmediate(resolve));
    this.throwIfErrors();
  }

  /** Throw (and clear) the errors reported so far, without waiting for the queue. */
  throwIfErrors(): void {
    this.throwIfLost();
    if (this.pendingErrors.length === 0) return;
    const errors = this.pendingErrors.splice(0);
    const kind = errorKind(errors[0]!);
    throw new GpuDeviceError(
      kind,
      errors.map((e) => e.message),
    );
  }

  private throwIfLost(): void {
    if (this.lostInfo && this.lostInfo.reason !== 'destroyed') {
      throw new GpuDeviceError('device-lost', [`${this.lostInfo.reason}: ${this.lostInfo.message}`]);
    }
  }

  destroy(): void {
    this.pool.destroy();
    this.scratch.destroy();
    this.transfers.destroy();
    this.device.destroy();
  }
}

function errorKind(error: GPUError): 'validation' | 'out-of-memory' | 'internal' {
  const name = error.constructor?.name ?? '';
  if (name.includes('OutOfMemory')) return 'out-of-memory';
  if (name.includes('Internal')) return 'internal';
  return 'validation';
}

// The one GPU context per process (see ARCHITECTURE.md), created on first use.
let processContext: { key: string; context: Promise<GpuContext> } | null = null;

/**
 * The process's GPU context, created on the first call. A later call with different options is an
 * error rather than a silently different adapter.
 */
export function gpuContext(options: GpuOptions = {}): Promise<GpuContext> {
  const key = JSON.stringify(options);
  if (!processContext) {
    processContext = { key, context: GpuContext.create(options) };
  } else if (processContext.key !== key) {
    throw new GpuError(`the GPU context was already created with ${processContext.key}; cannot switch to ${key} in the same process`);
  }
  return processContext.context;
}
