/**
 * Shader interfaces kept on disk. Reading a shader's interface with wgsl_reflect parses the whole
 * WGSL: about 120 ms of every GPU process's start on this project's 2-vCPU machine, for the 15 or so
 * shaders a training run uses, every time the same. Each shader's layout goes to
 * `<cacheDir>/shader-layouts/<shader>.json` with a key, the hash of its source (includes expanded)
 * and of the reflection library's version; a file whose key differs, that cannot be read or that
 * does not parse is read from the WGSL again and rewritten. A folder that cannot be written costs
 * the next process the parse, never this one an error.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';
import type { EntryLayout, ShaderLayout, UniformField, UniformLayout } from './bindings.js';
import { cacheDir } from './cache-dir.js';

/** The stored form's version: a change to it (or to ShaderLayout) makes every stored key stale. */
const FORMAT = 1;

interface StoredEntry {
  uniform: (Omit<UniformLayout, 'fields'> & { fields: [string, UniformField][] }) | null;
  storage: [string, number][];
  writable: string[];
}

interface Stored {
  key: string;
  entries: [string, StoredEntry][];
}

let reflector: string | undefined;

/** The key of `source`: its hash with the stored form's and wgsl_reflect's versions. */
export function layoutKey(source: string): string {
  reflector ??= (createRequire(import.meta.url)('wgsl_reflect/package.json') as { version: string }).version;
  return createHash('sha256').update(`${FORMAT}\0${reflector}\0${source}`).digest('hex');
}

/**
 * The folder of the stored layouts: `<cacheDir>/shader-layouts` in Node; null where there is no
 * disk of its own to keep them on (a browser worker, whose files are its launcher's).
 */
export function layoutCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  return typeof process.versions?.node === 'string' ? join(cacheDir(env), 'shader-layouts') : null;
}

function stored(layout: ShaderLayout, key: string): Stored {
  return {
    key,
    entries: [...layout.entries].map(([name, e]) => [
      name,
      {
        uniform: e.uniform && { ...e.uniform, fields: [...e.uniform.fields] },
        storage: [...e.storage],
        writable: [...e.writable],
      },
    ]),
  };
}

function restored(shader: string, s: Stored): ShaderLayout {
  const entries = new Map<string, EntryLayout>();
  for (const [name, e] of s.entries) {
    entries.set(name, {
      uniform: e.uniform && { ...e.uniform, fields: new Map(e.uniform.fields) },
      storage: new Map(e.storage),
      writable: new Set(e.writable),
    });
  }
  return { shader, entries };
}

/**
 * `shader`'s layout from `dir` when the file there was made from this very `source`, else
 * `reflect()`'s, which is then stored (dir null: reflect, nothing on disk).
 */
export function cachedLayout(dir: string | null, shader: string, source: string, reflect: () => ShaderLayout): ShaderLayout {
  if (dir === null) return reflect();
  const key = layoutKey(source);
  const path = join(dir, `${shader}.json`);
  try {
    const s = JSON.parse(readFileSync(path, 'utf8')) as Stored;
    if (s.key === key && Array.isArray(s.entries)) return restored(shader, s);
  } catch {
    // not stored yet, or unreadable: read from the WGSL below
  }
  const layout = reflect();
  try {
    mkdirSync(dir, { recursive: true });
    writeFileAtomic(path, JSON.stringify(stored(layout, key)));
  } catch {
    // a read-only cache folder: the next process parses the WGSL again
  }
  return layout;
}
