/**
 * Shader interfaces reflected from the WGSL: checked against the binding declarations as written
 * (a regex over each file, independent of the WGSL parser), uniforms packed at WGSL's offsets, and
 * every kind of mismatch between a wrapper and its shader is an error before anything is dispatched.
 */
import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packUniforms, storageBindings } from '../../src/gpu/bindings.js';
import { GpuContext } from '../../src/gpu/context.js';
import { GpuError } from '../../src/gpu/errors.js';
import { Runner } from '../../src/nn/runner.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

const SHADERS = readdirSync(new URL('../../shaders/', import.meta.url))
  .filter((f) => f.endsWith('.wgsl'))
  .map((f) => f.slice(0, -'.wgsl'.length));

/** `@group(0) @binding(N) var<…> name: …;` and `struct S { a: u32, b: f32 }` as written. */
function declared(source: string) {
  const bindings = new Map<string, number>();
  for (const m of source.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var(?:<([^>]*)>)?\s+(\w+)/g)) bindings.set(m[3]!, Number(m[1]));
  const structs = new Map<string, string[]>();
  for (const m of source.matchAll(/struct\s+(\w+)\s*\{([^}]*)\}/g)) {
    const body = m[2]!.replace(/\/\/[^\n]*/g, '');
    structs.set(
      m[1]!,
      [...body.matchAll(/(\w+)\s*:\s*(\w+)/g)].map((f) => `${f[1]}:${f[2]}`),
    );
  }
  return { bindings, structs };
}

describe('shader interfaces from the WGSL', () => {
  it('every entry point of every shader: bindings and uniform fields as declared', () => {
    let entries = 0;
    for (const shader of SHADERS) {
      const source = ctx.kernels.source(shader);
      const { bindings, structs } = declared(source);
      for (const [entry, e] of ctx.kernels.layout(shader).entries) {
        entries++;
        for (const [name, binding] of e.storage) expect(binding, `${shader}.${entry} ${name}`).toBe(bindings.get(name));
        if (e.uniform) {
          expect(e.uniform.binding).toBe(bindings.get(e.uniform.name));
          const fields = structs.get(e.uniform.struct)!;
          expect(
            [...e.uniform.fields].map(([n, f]) => `${n}:${f.type}`),
            `${shader}.${entry}`,
          ).toEqual(fields);
          // Scalars only: WGSL lays them out 4 bytes apart, the struct rounded up to 16.
          expect([...e.uniform.fields.values()].map((f) => f.offset)).toEqual(fields.map((_, i) => 4 * i));
          expect(e.uniform.size).toBe(Math.ceil((4 * fields.length) / 16) * 16);
        }
      }
    }
    expect(entries).toBeGreaterThan(20);
  });

  it('uniforms are packed by name: f32 as float bits, integers as integers, the rest 0', () => {
    const u = ctx.kernels.entry('layernorm', 'forward').uniform!;
    const view = new DataView(new ArrayBuffer(64));
    for (let i = 0; i < 64; i += 4) view.setUint32(i, 0xdeadbeef, true);
    packUniforms('layernorm.forward', u, { rows: 3, c: 5, eps: 1e-5, which: 2 }, view, 16);
    const words = Array.from({ length: 8 }, (_, i) => view.getUint32(16 + 4 * i, true));
    const eps = new DataView(new Float32Array([1e-5]).buffer).getUint32(0, true);
    expect(words).toEqual([3, 5, 0, 0, eps, 0, 0, 2]);
    expect(view.getUint32(12, true)).toBe(0xdeadbeef); // before the slot: untouched
  });

  it('a field the struct lacks, or an integer field given a fraction or a negative, is an error', () => {
    const u = ctx.kernels.entry('layernorm', 'forward').uniform!;
    const view = new DataView(new ArrayBuffer(64));
    expect(() => packUniforms('layernorm.forward', u, { rows: 3, epsilon: 1e-5 }, view)).toThrow(
      /struct LayerNormUniforms has no field 'epsilon'; its fields are rows, c, w_off, b_off, eps, dw_off, db_off, which, chunk/,
    );
    expect(() => packUniforms('layernorm.forward', u, { rows: 1.5 }, view)).toThrow(/LayerNormUniforms\.rows is u32, got 1\.5/);
    expect(() => packUniforms('layernorm.forward', u, { c: -1 }, view)).toThrow(GpuError);
  });

  it('a buffer bound by a name the entry point does not use, or one it uses left unbound, is an error', () => {
    const e = ctx.kernels.entry('gelu', 'forward');
    expect(storageBindings('gelu.forward', e, { x: 1, y: 2 })).toEqual([
      [1, 1],
      [2, 2],
    ]);
    expect(() => storageBindings('gelu.forward', e, { x: 1, y: 2, dy: 3 })).toThrow(/binds 'dy' that it does not use; it uses x, y/);
    expect(() => storageBindings('gelu.forward', e, { x: 1 })).toThrow(/leaves 'y' unbound/);
    expect(() => ctx.kernels.entry('gelu', 'sideways')).toThrow(/no compute entry point 'sideways'; it has forward, backward/);
  });

  it('the runner refuses a mismatched dispatch before recording it', () => {
    const runner = new Runner(ctx);
    const buf = ctx.createBuffer({ label: 'x', size: 64, usage: GPUBufferUsage.STORAGE, category: 'other' });
    expect(() => runner.dispatch('gelu', 'forward', { WG: 64 }, { count: 16 }, { x: buf, y: buf }, 1)).toThrow(/has no field 'count'/);
    expect(() => runner.dispatch('gelu', 'forward', { WG: 64 }, { n: 16 }, { input: buf, y: buf }, 1)).toThrow(/binds 'input'/);
    runner.destroy();
    buf.destroy();
  });
});
