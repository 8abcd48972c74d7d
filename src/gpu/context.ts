/**
 * The GPU context: one adapter and device per process, the adapter's own limits, optional features,
 * allocation accounting, kernels, transfers, and uncaptured errors turned into thrown ones.
 */
import { isSoftwareAdapter, requireAdapter, type AdapterOptions, type FoundAdapter } from './adapter.js';
import { GpuDeviceError, GpuError } from './errors.js';
import { MemoryAccounting, type MemoryCategory, type MemoryReport } from './memory.js';
import { Kernels } from './kernels.js';
import { gpuPollFor, pollGpuEvery } from './poll.js';
import { Transfers } from './transfers.js';

/** Limits webtron asks for at the adapter's own value (device defaults are far lower). */
const REQUESTED_LIMITS = [
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
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ['shader-f16', 'timestamp-query', 'subgroups' as GPUFeatureName];

export interface GpuOptions extends AdapterOptions {
  /** Ask for less than the adapter offers (values above the adapter's are an error). For tests. */
  limits?: Partial<Record<RequestedLimit, number>>;
  /** Leave these optional features off even when the adapter has them. */
  disableFeatures?: GPUFeatureName[];
  /** Rows of C per matmul invocation instead of the adapter's default (`matmulRows`). For tests. */
  matmulRows?: 16 | 32;
}

/** Usage of a storage buffer that can also be copied to and from (what webtron's data buffers need). */
export function storageUsage(): GPUBufferUsageFlags {
  return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
}

/** A GPU buffer with its accounting category. Destroy it through `destroy()` so the count falls. */
export class DeviceBuffer {
  private alive = true;

  constructor(
    readonly gpu: GPUBuffer,
    readonly size: number,
    readonly category: MemoryCategory,
    private readonly onDestroy: (buffer: DeviceBuffer) => void,
  ) {}

  get label(): string {
    return this.gpu.label;
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

export interface BufferRequest {
  label: string;
  /** Bytes; rounded up to a multiple of 4 (what WebGPU copies and writes need). */
  size: number;
  usage: GPUBufferUsageFlags;
  category: MemoryCategory;
  /** Mapped for writing from the start (upload staging). */
  mappedAtCreation?: boolean;
}

export class GpuContext {
  readonly memory = new MemoryAccounting();
  readonly kernels: Kernels;
  readonly transfers: Transfers;
  private readonly pendingErrors: GPUError[] = [];
  private lostInfo: GPUDeviceLostInfo | null = null;

  private constructor(
    readonly found: FoundAdapter,
    readonly device: GPUDevice,
    private readonly matmulRowsOption?: 16 | 32,
  ) {
    device.onuncapturederror = (event) => {
      this.pendingErrors.push(event.error);
    };
    void device.lost.then((info) => {
      this.lostInfo = info;
    });
    this.kernels = new Kernels(this);
    this.transfers = new Transfers(this);
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
    return new GpuContext(found, device, options.matmulRows);
  }

  get adapterName(): string {
    return this.found.info.description || this.found.info.device || this.found.info.vendor;
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

  /** Allocate a buffer counted under `category`. */
  createBuffer(request: BufferRequest): DeviceBuffer {
    this.throwIfLost();
    const size = Math.max(4, Math.ceil(request.size / 4) * 4);
    if (size > this.limits.maxBufferSize) {
      throw new GpuError(
        `buffer '${request.label}' needs ${size} B but this device's maxBufferSize is ${this.limits.maxBufferSize} B; split it`,
      );
    }
    const gpu = this.device.createBuffer({
      label: request.label,
      size,
      usage: request.usage,
      mappedAtCreation: request.mappedAtCreation ?? false,
    });
    this.memory.allocated(request.category, size);
    return new DeviceBuffer(gpu, size, request.category, (b) => this.memory.freed(b.category, b.size));
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
