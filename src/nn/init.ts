/**
 * Seeded parameter initialization, GPT-2's scheme: weights and embeddings N(0, 0.02), biases 0,
 * layernorm weights 1, and the residual output projections N(0, 0.02 / sqrt(2 · layers)). Every
 * value is a function of (seed, param name, index) only, so any process makes the same model.
 */
import type { ParamSpec } from '../ddp/layout.js';
import { numelOf } from '../ddp/layout.js';
import { isNormWeight } from './gpt-spec.js';

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** n standard-normal values (Box-Muller over a counter-based hash of seed, stream and index). */
export function normals(seed: number, stream: number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  const key = mix((seed >>> 0) ^ mix(stream >>> 0));
  for (let i = 0; i < n; i += 2) {
    const u1 = (mix(key ^ mix(i)) + 1) / 4294967297; // (0, 1)
    const u2 = mix(key ^ mix(i + 1) ^ 0x5bd1e995) / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

export interface InitOptions {
  seed: number;
  /** Std of weights and embeddings (GPT-2: 0.02). */
  std?: number;
  /** Layers, for the residual projections' 1/sqrt(2L) scaling. */
  numLayers?: number;
  /** Zero-centered norm weights (--apply-layernorm-1p): `ln*.weight` start at 0, which the norms read as 1. */
  zeroCenteredNorms?: boolean;
}

/** Initial values for every param of `specs` by its name: `*.bias` 0, `ln*.weight` 1 (0 when zero-centered), `*proj.weight` scaled. */
export function initParams(specs: readonly ParamSpec[], options: InitOptions): Map<string, Float32Array> {
  const std = options.std ?? 0.02;
  const out = new Map<string, Float32Array>();
  for (const s of specs) {
    const n = numelOf(s.shape);
    let v: Float32Array;
    if (s.name.endsWith('.bias')) v = new Float32Array(n);
    else if (isNormWeight(s.name)) v = new Float32Array(n).fill(options.zeroCenteredNorms ? 0 : 1);
    else if (s.name.endsWith('proj.weight') && options.numLayers)
      v = normals(options.seed, nameHash(s.name), n, std / Math.sqrt(2 * options.numLayers));
    else v = normals(options.seed, nameHash(s.name), n, std);
    out.set(s.name, v);
  }
  return out;
}
