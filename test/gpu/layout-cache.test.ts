/**
 * Shader layouts kept on disk: what a process reads back is what wgsl_reflect gives for the same
 * source, the parse is skipped only for that very source, and a missing, stale, corrupt or
 * unwritable cache costs a parse, never a wrong layout or an error.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reflectShader, type ShaderLayout } from '../../src/gpu/bindings.js';
import { GpuContext } from '../../src/gpu/context.js';
import { cachedLayout, layoutCacheDir, layoutKey } from '../../src/gpu/layout-cache.js';

let ctx: GpuContext;
let dir: string;
beforeAll(async () => {
  ctx = await GpuContext.create();
  dir = mkdtempSync(join(tmpdir(), 'webtron-layouts-'));
});
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/** Every shader the reflection library reads itself (not those that name a `//!reflect` twin). */
const SHADERS = readdirSync(new URL('../../shaders/', import.meta.url))
  .filter((f) => f.endsWith('.wgsl'))
  .map((f) => f.slice(0, -'.wgsl'.length))
  .filter((name) => !/^\/\/!reflect /m.test(readFileSync(new URL(`../../shaders/${name}.wgsl`, import.meta.url), 'utf8')));

/** `reflectShader`, counting its calls. */
function counted(shader: string, source: string): { reflect: () => ShaderLayout; calls: () => number } {
  let calls = 0;
  return {
    reflect: () => {
      calls++;
      return reflectShader(shader, source);
    },
    calls: () => calls,
  };
}

describe('shader layouts on disk', () => {
  it('every shader: the layout read back equals the parse, and the second read does not parse', () => {
    const tried = SHADERS.filter((shader) => {
      try {
        reflectShader(shader, ctx.kernels.source(shader));
        return true;
      } catch {
        return false; // a shader the library cannot parse fails the same way without the cache
      }
    });
    expect(tried.length).toBeGreaterThan(20);
    for (const shader of tried) {
      const source = ctx.kernels.source(shader);
      const first = counted(shader, source);
      const written = cachedLayout(dir, shader, source, first.reflect);
      expect(first.calls()).toBe(1);
      const stored = JSON.parse(readFileSync(join(dir, `${shader}.json`), 'utf8')) as { key: string };
      expect(stored.key).toBe(layoutKey(source));
      const second = counted(shader, source);
      const read = cachedLayout(dir, shader, source, second.reflect);
      expect(second.calls(), shader).toBe(0);
      expect(read, shader).toEqual(reflectShader(shader, source));
      expect(read).toEqual(written);
    }
  });

  it('another source (one comment more) is parsed again and replaces the stored layout', () => {
    const source = ctx.kernels.source('gelu');
    cachedLayout(dir, 'gelu', source, () => reflectShader('gelu', source));
    const edited = `${source}\n// edited\n`;
    const again = counted('gelu', edited);
    expect(cachedLayout(dir, 'gelu', edited, again.reflect)).toEqual(reflectShader('gelu', edited));
    expect(again.calls()).toBe(1);
    expect(JSON.parse(readFileSync(join(dir, 'gelu.json'), 'utf8')).key).toBe(layoutKey(edited));
    expect(layoutKey(edited)).not.toBe(layoutKey(source));
  });

  it('a corrupt or truncated file is parsed again and rewritten', () => {
    const source = ctx.kernels.source('softmax');
    const path = join(dir, 'softmax.json');
    for (const junk of ['{"key": "', 'null', `{"key":"${layoutKey(source)}"}`]) {
      writeFileSync(path, junk);
      const c = counted('softmax', source);
      expect(cachedLayout(dir, 'softmax', source, c.reflect)).toEqual(reflectShader('softmax', source));
      expect(c.calls(), junk).toBe(1);
      expect(JSON.parse(readFileSync(path, 'utf8')).key).toBe(layoutKey(source));
    }
  });

  it('a folder that cannot be made, or none, parses every time without an error', () => {
    const source = ctx.kernels.source('dropout');
    const blocked = join(dir, 'a-file');
    writeFileSync(blocked, '');
    for (const where of [join(blocked, 'layouts'), null]) {
      for (let i = 1; i <= 2; i++) {
        const c = counted('dropout', source);
        expect(cachedLayout(where, 'dropout', source, c.reflect)).toEqual(reflectShader('dropout', source));
        expect(c.calls()).toBe(1);
      }
    }
  });

  it("Kernels keeps its layouts under WEBTRON_CACHE_DIR's shader-layouts folder", async () => {
    const own = join(dir, 'kernels');
    const before = process.env.WEBTRON_CACHE_DIR;
    process.env.WEBTRON_CACHE_DIR = own;
    try {
      expect(layoutCacheDir()).toBe(join(own, 'shader-layouts'));
      const second = await GpuContext.create();
      try {
        const layout = second.kernels.layout('cross-entropy');
        expect(existsSync(join(own, 'shader-layouts', 'cross-entropy.json'))).toBe(true);
        expect(layout).toEqual(reflectShader('cross-entropy', second.kernels.source('cross-entropy')));
      } finally {
        second.destroy();
      }
    } finally {
      if (before === undefined) delete process.env.WEBTRON_CACHE_DIR;
      else process.env.WEBTRON_CACHE_DIR = before;
    }
  });
});
