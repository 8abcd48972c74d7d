/**
 * WGSL kernels: sources from `shaders/*.wgsl`, named constants as WGSL `override`s, one pipeline per
 * (shader, entry point, constants), bind groups from buffers or windows of them, and 1-D dispatch of
 * any length (a 2-D grid past the per-dimension workgroup limit).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeviceTexture, type DeviceBuffer, type GpuContext } from './context.js';
import {
  entryLayout,
  type EntryLayout,
  packUniforms,
  reflectShader,
  type ShaderLayout,
  storageBindings,
  type UniformValues,
} from './bindings.js';
import { GpuError } from './errors.js';
import { cachedLayout, layoutCacheDir } from './layout-cache.js';
import { gridFor } from './grid.js';

/** Named WGSL `override` constants for a pipeline. */
export type ShaderConstants = Record<string, number>;

/** Named module-scope `const`s (u32) added to a shader's source. */
export type ShaderDefines = Record<string, number>;

/** Bind groups per generation of the cache (`Kernels.bindGroups`): several steps' worth of a GPT-2 small's. */
export const BIND_GROUP_GENERATION = 4096;

/** Named constants as a cache key: the same names and values in any order give the same key. */
function recordKey(r: Record<string, number>): string {
  const names = Object.keys(r);
  if (names.length === 0) return '';
  names.sort();
  let key = '';
  for (const n of names) key += `${n}=${r[n]};`;
  return key;
}

/** A buffer, a byte range of one, or a storage texture, to bind to a shader variable. */
export type Binding = DeviceBuffer | { buffer: DeviceBuffer; offset: number; size: number } | DeviceTexture;

/** webtron's shaders/ folder, found by walking up from this module: src/gpu (vitest) and dist/src/gpu (compiled) alike. */
export function findShaderDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'shaders')) && existsSync(join(dir, 'package.json'))) return join(dir, 'shaders');
    dir = dirname(dir);
  }
  throw new GpuError(`cannot find webtron's shaders/ folder above ${fileURLToPath(import.meta.url)}`);
}

export class Kernels {
  private readonly shaderDir = findShaderDir();
  /** Where shader layouts are kept between processes (layout-cache.ts); null: parsed in every process. */
  private readonly layoutDir = layoutCacheDir();
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private readonly layouts = new Map<string, ShaderLayout>();
  private readonly entryOf = new WeakMap<GPUComputePipeline, { where: string; layout: EntryLayout; group?: GPUBindGroupLayout }>();
  /**
   * Bind groups by pipeline and resources, in two generations: a step of training binds the same
   * pooled buffers to the same kernels as the step before, so its groups come from here instead of
   * `createBindGroup` (with `getBindGroupLayout`, the largest host cost of a dispatch: 27 of about
   * 70 µs on this project's 2-vCPU machine). When the newer generation holds BIND_GROUP_GENERATION
   * groups it becomes the older one and the older is dropped, so groups of buffers no longer bound
   * (destroyed, or dropped for the collector) leave within two generations.
   */
  private bindGroups = new Map<string, GPUBindGroup>();
  private olderBindGroups = new Map<string, GPUBindGroup>();
  /** A number per pipeline, GPU buffer and texture view, for bind group keys (never reused). */
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;

  constructor(private readonly ctx: GpuContext) {}

  /**
   * WGSL source of `shaders/<name>.wgsl`, with each line `//!include other` replaced by the source
   * of `shaders/other.wgsl` (once per shader: helpers shared by several kernels live in one file).
   */
  source(name: string, included = new Set<string>()): string {
    const path = join(this.shaderDir, `${name}.wgsl`);
    if (!existsSync(path)) throw new GpuError(`no shader '${name}': ${path} does not exist`);
    included.add(name);
    return readFileSync(path, 'utf8').replace(/^\/\/!include ([\w-]+)\s*$/gm, (_line, other: string) =>
      included.has(other) ? '' : this.source(other, included),
    );
  }

  /**
   * The module of `name`, with `defines` as module-scope `const`s after its `enable` directives:
   * for values WGSL needs as const-expressions (a subgroup matrix's shape), which overrides are not.
   */
  private module(name: string, defines: ShaderDefines = {}): GPUShaderModule {
    const key = `${name}:${recordKey(defines)}`;
    let module = this.modules.get(key);
    if (!module) {
      const consts = Object.entries(defines)
        .map(([k, v]) => `const ${k}: u32 = ${v}u;\n`)
        .join('');
      const source = this.source(name).replace(/^((?:\s*(?:\/\/[^\n]*)?\n|\s*enable [^;]+;)*)/, (head) => head + consts);
      module = this.ctx.device.createShaderModule({ label: name, code: source });
      this.modules.set(key, module);
    }
    return module;
  }

  /** The compute pipeline for `shader`'s `entryPoint` with these override constants and defines (cached). */
  pipeline(shader: string, entryPoint: string, constants: ShaderConstants = {}, defines: ShaderDefines = {}): GPUComputePipeline {
    const key = `${shader}:${entryPoint}:${recordKey(constants)}:${recordKey(defines)}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      pipeline = this.ctx.device.createComputePipeline({
        label: `${shader}.${entryPoint}`,
        layout: 'auto',
        compute: { module: this.module(shader, defines), entryPoint, constants },
      });
      this.pipelines.set(key, pipeline);
      this.entryOf.set(pipeline, { where: `${shader}.${entryPoint}`, layout: this.entry(shader, entryPoint) });
    }
    return pipeline;
  }

  /**
   * Every compute entry point of `shader` with its uniform struct and storage buffers, read from the
   * WGSL (cached in the process, and on disk by the source's hash). A shader whose syntax the
   * reflection library does not know names, in a line `//!reflect other`, a twin with the same
   * interface to read instead.
   */
  layout(shader: string): ShaderLayout {
    let layout = this.layouts.get(shader);
    if (!layout) {
      const source = this.source(shader);
      const twin = /^\/\/!reflect ([\w-]+)\s*$/m.exec(source)?.[1];
      layout = twin ? { ...this.layout(twin), shader } : cachedLayout(this.layoutDir, shader, source, () => reflectShader(shader, source));
      this.layouts.set(shader, layout);
    }
    return layout;
  }

  /** The uniform struct and storage buffers `shader.entryPoint` uses. */
  entry(shader: string, entryPoint: string): EntryLayout {
    return entryLayout(this.layout(shader), entryPoint);
  }

  private described(pipeline: GPUComputePipeline): { where: string; layout: EntryLayout; group?: GPUBindGroupLayout } {
    const d = this.entryOf.get(pipeline);
    if (!d) throw new GpuError(`pipeline '${pipeline.label}' was not made by Kernels.pipeline`);
    return d;
  }

  /** The storage variables `pipeline` may write. */
  writable(pipeline: GPUComputePipeline): Set<string> {
    return this.described(pipeline).layout.writable;
  }

  /** Bytes of `pipeline`'s uniform struct (0 when it reads none). */
  uniformBytes(pipeline: GPUComputePipeline): number {
    return this.described(pipeline).layout.uniform?.size ?? 0;
  }

  /** Write `values` as `pipeline`'s uniform struct into `view` at `byteOffset` (fields not named are 0). */
  packUniforms(pipeline: GPUComputePipeline, values: UniformValues, view: DataView, byteOffset = 0): void {
    const { where, layout } = this.described(pipeline);
    if (!layout.uniform) throw new GpuError(`${where} reads no uniform struct, but uniforms were given`);
    packUniforms(where, layout.uniform, values, view, byteOffset);
  }

  get pipelineCount(): number {
    return this.pipelines.size;
  }

  /**
   * A bind group for `pipeline`: its storage buffers by variable name (exactly those its entry
   * point uses) and, when it reads one, its uniform struct from `uniform`. The same pipeline with the
   * same resources, offsets and sizes gets the same group: a cached group stays until between
   * BIND_GROUP_GENERATION and twice that many others have been made since it was last used.
   */
  bindGroup(pipeline: GPUComputePipeline, storage: Record<string, Binding>, uniform?: Binding): GPUBindGroup {
    const entries = this.bindGroupEntries(pipeline, storage, uniform);
    let key = String(this.idOf(pipeline));
    for (const e of entries) {
      const r = e.resource as GPUBufferBinding | GPUTextureView;
      key += 'buffer' in r ? `|${e.binding}:${this.idOf(r.buffer)}:${r.offset ?? 0}:${r.size ?? -1}` : `|${e.binding}:t${this.idOf(r)}`;
    }
    let group = this.bindGroups.get(key);
    if (group) return group;
    group = this.olderBindGroups.get(key);
    if (!group) {
      const d = this.described(pipeline);
      d.group ??= pipeline.getBindGroupLayout(0);
      group = this.ctx.device.createBindGroup({ label: pipeline.label, layout: d.group, entries });
    }
    if (this.bindGroups.size >= BIND_GROUP_GENERATION) {
      this.olderBindGroups = this.bindGroups;
      this.bindGroups = new Map();
    }
    this.bindGroups.set(key, group);
    return group;
  }

  /**
   * Drop the cached groups that bind `view`: for a texture let go of without `destroy()` (a scratch
   * texture replaced by a larger one), whose memory is freed only once nothing refers to it. A
   * destroyed buffer or texture needs no forgetting: destroy frees its memory whatever holds it.
   */
  forget(view: GPUTextureView): void {
    const id = this.ids.get(view);
    if (id === undefined) return;
    const mark = `:t${id}`;
    for (const groups of [this.bindGroups, this.olderBindGroups]) {
      for (const key of [...groups.keys()]) if (key.endsWith(mark) || key.includes(`${mark}|`)) groups.delete(key);
    }
  }

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(o, id);
    }
    return id;
  }

  /** The bind group entries `bindGroup` makes, for callers that create the group themselves. */
  bindGroupEntries(pipeline: GPUComputePipeline, storage: Record<string, Binding>, uniform?: Binding): GPUBindGroupEntry[] {
    const { where, layout } = this.described(pipeline);
    if (layout.uniform && !uniform) throw new GpuError(`${where} reads uniform struct ${layout.uniform.struct}, but none was bound`);
    if (!layout.uniform && uniform) throw new GpuError(`${where} reads no uniform struct, but one was bound`);
    const entries = storageBindings(where, layout, storage).map(([binding, b]) => ({ binding, resource: resourceOf(b) }));
    if (layout.uniform && uniform) entries.unshift({ binding: layout.uniform.binding, resource: resourceOf(uniform) });
    return entries;
  }

  /** Record `workgroups` workgroups (any count; a 2-D grid past the per-dimension limit) into `pass`. */
  dispatchInPass(pass: GPUComputePassEncoder, pipeline: GPUComputePipeline, bindGroups: GPUBindGroup[], workgroups: number): void {
    if (workgroups === 0) return;
    const grid = gridFor(workgroups, this.ctx.limits.maxComputeWorkgroupsPerDimension);
    pass.setPipeline(pipeline);
    for (const [i, g] of bindGroups.entries()) pass.setBindGroup(i, g);
    pass.dispatchWorkgroups(grid.x, grid.y, grid.z);
  }

  /** Encode one compute pass running `workgroups` workgroups. */
  encodeDispatch(
    encoder: GPUCommandEncoder,
    pipeline: GPUComputePipeline,
    bindGroups: GPUBindGroup[],
    workgroups: number,
    timestampWrites?: GPUComputePassTimestampWrites,
  ): void {
    const pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : {});
    this.dispatchInPass(pass, pipeline, bindGroups, workgroups);
    pass.end();
  }

  /** Encode, submit and return; use `ctx.sync()` to wait and surface errors. */
  dispatch(pipeline: GPUComputePipeline, bindGroups: GPUBindGroup[], workgroups: number): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: pipeline.label });
    this.encodeDispatch(encoder, pipeline, bindGroups, workgroups);
    this.ctx.submit([encoder.finish()]);
  }
}

function resourceOf(b: Binding): GPUBufferBinding | GPUTextureView {
  if (b instanceof DeviceTexture) return b.view;
  return 'gpu' in b ? { buffer: b.gpu } : { buffer: b.buffer.gpu, offset: b.offset, size: b.size };
}

/**
 * One uniform struct of `pipeline` per window of a kernel: slots at the device's uniform offset
 * alignment (256 B at least) in one buffer, filled by field name in a host copy that is kept and
 * uploaded in one write.
 */
export class UniformSlots {
  readonly buffer: DeviceBuffer;
  private readonly slotBytes: number;
  private readonly structBytes: number;
  private readonly staging: DataView;

  constructor(
    private readonly ctx: GpuContext,
    private readonly pipeline: GPUComputePipeline,
    slots: number,
    label: string,
  ) {
    this.slotBytes = Math.max(256, ctx.limits.minUniformBufferOffsetAlignment);
    this.structBytes = ctx.kernels.uniformBytes(pipeline);
    this.buffer = ctx.createBuffer({
      label,
      size: slots * this.slotBytes,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      category: 'other',
    });
    this.staging = new DataView(new ArrayBuffer(slots * this.slotBytes));
  }

  /** Slot `i`, to bind as the uniform struct. */
  binding(i: number): Binding {
    return { buffer: this.buffer, offset: i * this.slotBytes, size: this.structBytes };
  }

  /** Fill slot `i` (fields not named are 0); `upload` sends every slot. */
  set(i: number, values: UniformValues): void {
    this.ctx.kernels.packUniforms(this.pipeline, values, this.staging, i * this.slotBytes);
  }

  upload(): void {
    this.ctx.device.queue.writeBuffer(this.buffer.gpu, 0, this.staging.buffer);
  }

  destroy(): void {
    this.buffer.destroy();
  }
}
