/**
 * Shader interfaces read from the WGSL itself (wgsl_reflect): each entry point's resources by name
 * and the uniform struct's fields with their offsets and types. Kernel wrappers set uniforms by
 * field name and bind buffers by variable name; a name the shader does not declare, or a resource
 * the entry point reads but nobody bound, is a GpuError at the first dispatch, not a wrong result.
 */
import { ResourceType, WgslReflect } from 'wgsl_reflect/wgsl_reflect.module.js';
import { GpuError } from './errors.js';

/** A uniform struct field webtron writes: a 32-bit scalar. */
export interface UniformField {
  offset: number;
  type: 'u32' | 'i32' | 'f32';
}

export interface UniformLayout {
  /** The `var<uniform>`'s name and binding. */
  name: string;
  binding: number;
  /** The struct's name, for messages. */
  struct: string;
  /** Bytes, a multiple of 16. */
  size: number;
  fields: Map<string, UniformField>;
}

export interface EntryLayout {
  /** The uniform struct, when the entry point reads one. */
  uniform: UniformLayout | null;
  /** Storage buffers and storage textures the entry point reads or writes: name → binding. */
  storage: Map<string, number>;
  /** The names among them it may write (read_write access). */
  writable: Set<string>;
}

export interface ShaderLayout {
  shader: string;
  entries: Map<string, EntryLayout>;
}

/** Values for a uniform struct, by field name; fields not named are 0. */
export type UniformValues = Record<string, number | boolean>;

const SCALARS = new Set(['u32', 'i32', 'f32']);

function uniformLayout(shader: string, v: { name: string; binding: number; type: { name: string; size: number } }): UniformLayout {
  const members = (v.type as { members?: { name: string; offset: number; type: { name: string } }[] }).members;
  if (!members) throw new GpuError(`${shader}: uniform '${v.name}' is not a struct`);
  const fields = new Map<string, UniformField>();
  for (const m of members) {
    if (!SCALARS.has(m.type.name)) {
      throw new GpuError(`${shader}: uniform field ${v.type.name}.${m.name} is ${m.type.name}; webtron's uniforms are u32, i32 or f32`);
    }
    fields.set(m.name, { offset: m.offset, type: m.type.name as UniformField['type'] });
  }
  return { name: v.name, binding: v.binding, struct: v.type.name, size: Math.ceil(v.type.size / 16) * 16, fields };
}

/** The interface of every compute entry point of `source` (a whole shader, includes expanded). */
export function reflectShader(shader: string, source: string): ShaderLayout {
  const reflected = new WgslReflect(source);
  const entries = new Map<string, EntryLayout>();
  for (const fn of reflected.entry.compute) {
    let uniform: UniformLayout | null = null;
    const storage = new Map<string, number>();
    const writable = new Set<string>();
    for (const r of fn.resources) {
      if (r.group !== 0) throw new GpuError(`${shader}.${fn.name}: '${r.name}' is in group ${r.group}; webtron binds group 0 only`);
      if (r.resourceType === ResourceType.Uniform) {
        if (uniform) throw new GpuError(`${shader}.${fn.name}: more than one uniform ('${uniform.name}', '${r.name}')`);
        uniform = uniformLayout(shader, r);
      } else if (r.resourceType === ResourceType.Storage || r.resourceType === ResourceType.StorageTexture) {
        storage.set(r.name, r.binding);
        if (r.access !== 'read') writable.add(r.name);
      } else {
        throw new GpuError(`${shader}.${fn.name}: '${r.name}' is neither a uniform nor a storage buffer or texture`);
      }
    }
    entries.set(fn.name, { uniform, storage, writable });
  }
  return { shader, entries };
}

/** The layout of `shader.entry`, or a GpuError naming the entry points there are. */
export function entryLayout(layout: ShaderLayout, entry: string): EntryLayout {
  const e = layout.entries.get(entry);
  if (!e) throw new GpuError(`${layout.shader}: no compute entry point '${entry}'; it has ${[...layout.entries.keys()].join(', ')}`);
  return e;
}

/**
 * Write `values` into `view` at `byteOffset` as the uniform struct lays them out: f32 fields as
 * floats, u32 and i32 fields as integers (which must be integers in range). Fields not named are 0.
 */
export function packUniforms(where: string, u: UniformLayout, values: UniformValues, view: DataView, byteOffset = 0): void {
  for (let b = 0; b < u.size; b += 4) view.setUint32(byteOffset + b, 0, true);
  for (const [name, raw] of Object.entries(values)) {
    const field = u.fields.get(name);
    if (!field)
      throw new GpuError(`${where}: struct ${u.struct} has no field '${name}'; its fields are ${[...u.fields.keys()].join(', ')}`);
    const value = typeof raw === 'boolean' ? Number(raw) : raw;
    const at = byteOffset + field.offset;
    if (field.type === 'f32') {
      view.setFloat32(at, value, true);
      continue;
    }
    const [lo, hi] = field.type === 'u32' ? [0, 2 ** 32 - 1] : [-(2 ** 31), 2 ** 31 - 1];
    if (!Number.isInteger(value) || value < lo || value > hi) {
      throw new GpuError(`${where}: ${u.struct}.${name} is ${field.type}, got ${value}`);
    }
    if (field.type === 'u32') view.setUint32(at, value, true);
    else view.setInt32(at, value, true);
  }
}

/**
 * The binding index of each named storage buffer or texture, checked against what `entry` uses: every
 * name given must be one of its storage resources and every storage resource it uses must be given.
 */
export function storageBindings<T>(where: string, e: EntryLayout, named: Record<string, T>): [number, T][] {
  const given = Object.keys(named);
  const unknown = given.filter((n) => !e.storage.has(n));
  const missing = [...e.storage.keys()].filter((n) => !(n in named));
  if (unknown.length > 0 || missing.length > 0) {
    const parts = [
      unknown.length > 0 ? `binds ${unknown.map((n) => `'${n}'`).join(', ')} that it does not use` : '',
      missing.length > 0 ? `leaves ${missing.map((n) => `'${n}'`).join(', ')} unbound` : '',
    ].filter((p) => p !== '');
    throw new GpuError(`${where}: the call ${parts.join(' and ')}; it uses ${[...e.storage.keys()].join(', ') || 'no storage buffers'}`);
  }
  return given.map((n) => [e.storage.get(n)!, named[n]!]);
}
