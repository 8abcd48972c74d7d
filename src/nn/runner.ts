/**
 * Records kernel dispatches into one compute pass and submits them together. Each dispatch's
 * uniforms take a 256-byte slot of one uniform buffer, written once per submit; slots are reused
 * only after the submit that read them, so a later write can never change an earlier dispatch.
 */
import { GpuError } from '../gpu/errors.js';
import { DeviceTexture, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import type { UniformValues } from '../gpu/bindings.js';
import type { Binding, ShaderConstants, ShaderDefines } from '../gpu/kernels.js';
import type { GpuTimer } from '../gpu/timer.js';
import { TextureCopies, type TextureRegion } from './texture-copies.js';

const SLOT_BYTES = 256;
const SLOTS = 2048;

/**
 * What a runner holds for its life: the uniform slots (the buffer and its host copy), the dummy
 * bindings and the scratch buffers. Training makes a graph, and so a runner, per micro-batch; a
 * destroyed runner hands these to the next runner of its device, which spares their allocation (the
 * host copy alone, 512 KiB, cost about 1.4 ms a step on this project's 2-vCPU machine) and lets the
 * next step's dispatches find their bind groups in the kernels' cache, since they bind the same
 * buffers. The queue orders the next runner's uniform writes after the work already submitted.
 */
interface RunnerParts {
  uniforms: DeviceBuffer;
  staging: Uint32Array<ArrayBuffer>;
  dummy: DeviceBuffer;
  writableDummy: DeviceBuffer;
  scratch: Map<string, DeviceBuffer>;
}

/** Parts kept per device for runners to come: as many as a device has runners alive at once, about. */
const SPARE_PARTS = 4;
const spareParts = new WeakMap<GpuContext, RunnerParts[]>();

function newParts(ctx: GpuContext): RunnerParts {
  const buffer = (label: string, size: number, usage: number) => ctx.createBuffer({ label, size, usage, category: 'other' });
  return {
    uniforms: buffer('nn.uniforms', SLOTS * SLOT_BYTES, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST),
    staging: new Uint32Array((SLOTS * SLOT_BYTES) / 4),
    dummy: buffer('nn.unused-binding', 16, GPUBufferUsage.STORAGE),
    writableDummy: buffer('nn.unused-writable-binding', 16, GPUBufferUsage.STORAGE),
    scratch: new Map(),
  };
}

function destroyParts(parts: RunnerParts): void {
  for (const b of [parts.uniforms, parts.dummy, parts.writableDummy, ...parts.scratch.values()]) b.destroy();
  parts.scratch.clear();
}

export class Runner {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  /** The uniform slots, dummies and scratch buffers, handed on when this runner is destroyed. */
  private readonly parts: RunnerParts;
  private readonly stagingView: DataView;
  private slots = 0;
  /** Recording into a caller's encoder (recordInto): flushing is not ours to do. */
  private external = false;
  private destroyed = false;

  /** When set, every compute pass this runner begins is timed on the GPU under the timer's current label. */
  timer: GpuTimer | null = null;
  /**
   * With a timer: give every dispatch a pass of its own, timed under its kernel's name
   * (`shader.entry`, and its tag: see dispatch), so that the timer reads GPU time per kernel (the nn
   * bench's GPT profile).
   */
  timePerKernel = false;
  /** Scratch buffers (`scratch`, in parts) that a larger one replaced, destroyed once submitted. */
  private outgrown: DeviceBuffer[] = [];
  /** Tensors copied into textures since the last submit (texture-copies.ts). */
  readonly copies: TextureCopies;

  /**
   * Keep the texture copies of params for the runner's life (a weight copied in the forward serves
   * the backward); false with sharded params, whose point is not to hold a whole copy of the model.
   */
  pinParams = true;

  constructor(private readonly ctx: GpuContext) {
    this.copies = new TextureCopies(ctx);
    this.parts = spareParts.get(ctx)?.pop() ?? newParts(ctx);
    this.stagingView = new DataView(this.parts.staging.buffer);
  }

  /** A 16-byte storage buffer for bindings a kernel variant declares but does not read. */
  get dummy(): DeviceBuffer {
    return this.parts.dummy;
  }

  /**
   * Another, for writable bindings a variant declares but does not write: a writable binding may not
   * share a buffer with any other binding of the dispatch, `dummy` included.
   */
  get writableDummy(): DeviceBuffer {
    return this.parts.writableDummy;
  }

  /**
   * Record `shader.entry` over `workgroups` (a count laid out as a 1-D/2-D grid, or an explicit
   * [x, y, z]), with its uniform struct's fields by name (fields not named are 0) and its storage
   * buffers by the names the WGSL gives them: exactly those the entry point uses. `tag`: with
   * timePerKernel, the dispatch is timed as `shader.entry [tag]` (a matmul's shape class), so that
   * a profile tells apart kinds of work one kernel does.
   */
  dispatch(
    shader: string,
    entry: string,
    constants: ShaderConstants,
    uniforms: UniformValues,
    bindings: Record<string, Binding>,
    workgroups: number | [number, number, number],
    defines: ShaderDefines = {},
    tag?: string,
  ): void {
    const pipeline = this.ctx.kernels.pipeline(shader, entry, constants, defines);
    const size = this.ctx.kernels.uniformBytes(pipeline);
    if (size > SLOT_BYTES) throw new GpuError(`${shader}.${entry}: a uniform struct of ${size} B does not fit a ${SLOT_BYTES}-byte slot`);
    if (this.slots === SLOTS) this.flush();
    const slot = this.slots++;
    if (size > 0) this.ctx.kernels.packUniforms(pipeline, uniforms, this.stagingView, slot * SLOT_BYTES);
    const uniform = size > 0 ? { buffer: this.parts.uniforms, offset: slot * SLOT_BYTES, size } : undefined;
    const group = this.ctx.kernels.bindGroup(pipeline, bindings, uniform);
    for (const name of this.ctx.kernels.writable(pipeline)) {
      const b = bindings[name];
      if (b && !(b instanceof DeviceTexture)) this.copies.written('gpu' in b ? b : b.buffer);
    }
    if (this.timePerKernel && this.timer) {
      this.endPass();
      this.timer.label = `${shader}.${entry}${tag ? ` [${tag}]` : ''}`;
    }
    const pass = this.beginPass();
    if (typeof workgroups === 'number') {
      this.ctx.kernels.dispatchInPass(pass, pipeline, [group], workgroups);
    } else {
      const max = this.ctx.limits.maxComputeWorkgroupsPerDimension;
      if (workgroups.some((w) => w > max))
        throw new GpuError(`${shader}.${entry}: grid [${workgroups.join(', ')}] exceeds ${max} workgroups per dimension`);
      if (workgroups.some((w) => w === 0)) return;
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...workgroups);
    }
  }

  /**
   * A storage buffer of this runner named `name`, of at least `bytes` (contents undefined): the split
   * reductions' partial sums, a deep product's packed copy of A and the sorted token index
   * (src/nn/split-sums.ts, matmul-tiled.ts, ops.embedding). One per name, shared by every dispatch
   * that runner records (and kept for the runners after it: RunnerParts), since dispatches run in
   * order and each use reads what it wrote before the next one writes. Counted under `other`, not as
   * activations.
   * Replaced by a larger one when a use needs more; the old one is destroyed once the work recorded
   * with it is submitted.
   */
  scratch(name: string, bytes: number): DeviceBuffer {
    const have = this.parts.scratch.get(name);
    if (have && have.size >= bytes) return have;
    if (have) this.outgrown.push(have);
    const buffer = this.ctx.createBuffer({
      label: `nn.${name}`,
      size: bytes,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      category: 'other',
    });
    this.parts.scratch.set(name, buffer);
    return buffer;
  }

  /**
   * A texture holding `region` of a buffer: a copy this runner made since its last submit and
   * nothing it recorded has overwritten, or a new copy recorded now (between compute passes: the
   * pass in progress ends, and the next dispatch begins another). `keep`: textures the caller reads
   * in the same dispatch, which the new copy must not take the place of. `pin`: a param, whose copy
   * lasts until the runner is destroyed (texture-copies.ts).
   */
  textureOf(region: TextureRegion, keep: readonly DeviceTexture[] = [], pin = false): DeviceTexture {
    return this.copies.texture(region, keep, (texture) => this.copyBufferToTexture(region, texture), pin);
  }

  /** Record a copy of rows of `source` into the top-left `width` x `height` texels of `texture`. */
  copyBufferToTexture(
    source: { buffer: DeviceBuffer; offset: number; bytesPerRow: number; width: number; height: number },
    texture: DeviceTexture,
  ): void {
    this.endPass();
    this.encoderNow().copyBufferToTexture(
      { buffer: source.buffer.gpu, offset: source.offset, bytesPerRow: source.bytesPerRow },
      { texture: texture.gpu },
      [source.width, source.height],
    );
  }

  /** Record copying `bytes` from `source` at `sourceOffset` to the start of `target` (between compute passes). */
  copyBuffer(source: DeviceBuffer, sourceOffset: number, target: DeviceBuffer, bytes: number): void {
    this.endPass();
    this.encoderNow().copyBufferToBuffer(source.gpu, sourceOffset, target.gpu, 0, bytes);
    this.copies.written(target);
  }

  /** Record zeroing `buffer` (between compute passes, like a copy). */
  clearBuffer(buffer: DeviceBuffer): void {
    this.endPass();
    this.encoderNow().clearBuffer(buffer.gpu);
    this.copies.written(buffer);
  }

  private encoderNow(): GPUCommandEncoder {
    this.encoder ??= this.ctx.device.createCommandEncoder({ label: 'nn' });
    return this.encoder;
  }

  private beginPass(): GPUComputePassEncoder {
    this.pass ??= this.encoderNow().beginComputePass({ label: 'nn', timestampWrites: this.timer?.next() });
    return this.pass;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  /**
   * Record the dispatches `fn` makes into `encoder` (the caller submits it, before recording
   * anything else with this runner): how benchmarks bracket kernels with timestamp passes.
   */
  recordInto(encoder: GPUCommandEncoder, fn: () => void): void {
    this.flush();
    this.encoder = encoder;
    this.external = true;
    try {
      fn();
      this.endPass();
      this.writeUniforms();
    } finally {
      this.encoder = null;
      this.external = false;
      this.slots = 0;
      this.copies.submitted(); // the caller submits the encoder next
    }
  }

  /** The recorded dispatches' uniform slots, in one write. */
  private writeUniforms(): void {
    if (this.slots > 0) this.ctx.device.queue.writeBuffer(this.parts.uniforms.gpu, 0, this.parts.staging, 0, (this.slots * SLOT_BYTES) / 4);
  }

  /** Submit what was recorded. */
  flush(): void {
    if (this.external) throw new Error(`runner: more than ${SLOTS} dispatches inside recordInto; record fewer at a time`);
    if (!this.encoder) return;
    this.endPass();
    this.writeUniforms();
    this.ctx.submit([this.encoder.finish()]);
    this.encoder = null;
    this.slots = 0;
    this.copies.submitted();
    for (const b of this.outgrown.splice(0)) b.destroy();
  }

  /** Submit and wait; device errors surface here. */
  async sync(): Promise<void> {
    this.flush();
    await this.ctx.sync();
  }

  /**
   * Free the texture copies and hand the uniform slots, dummies and scratch buffers to the next
   * runner of this device (RunnerParts). Work recorded and not flushed is dropped.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.copies.destroy();
    for (const b of this.outgrown.splice(0)) b.destroy();
    const spare = spareParts.get(this.ctx) ?? [];
    spareParts.set(this.ctx, spare);
    if (spare.length < SPARE_PARTS && !this.parts.uniforms.destroyed) spare.push(this.parts);
    else destroyParts(this.parts);
  }
}
