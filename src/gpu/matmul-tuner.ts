/**
 * Tile shapes for the tiled matmul (shaders/matmul-tiled-body.wgsl), chosen per adapter and shape
 * class by timing every candidate on one representative product of each class, and cached on disk
 * keyed by the adapter, its driver and the kernel's source, so each machine tunes once.
 *
 * Shape classes: `small` (C has at most 256 x 256 elements: few tiles, so small ones keep every
 * core busy), `narrow` (C is at most 64 wide or tall: attention heads, narrow projections) and
 * `large` (everything else).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../files.js';
import type { GpuContext } from './context.js';
import { GpuError } from './errors.js';
import { storageUsage } from './context.js';

export interface TileShape {
  /** Rows and columns of C per workgroup, k per staged step, rows and columns per invocation. */
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
}

export const SHAPE_CLASSES = ['small', 'narrow', 'large'] as const;
export type ShapeClass = (typeof SHAPE_CLASSES)[number];

/** The candidates the tuner times (those the device's limits allow). */
export const TILE_CANDIDATES: readonly TileShape[] = [
  { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4 },
  { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
  { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 32, tm: 8, tn: 8 },
];

/** Untuned choices: what the tuner picks most often on the GPUs it has run on. */
export const DEFAULT_TILES: Record<ShapeClass, TileShape> = {
  small: { bm: 32, bn: 32, bk: 16, tm: 4, tn: 4 },
  narrow: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
};

/** The representative product [m, k] @ [k, n] each class is timed on. */
const TUNING_SHAPES: Record<ShapeClass, [number, number, number]> = {
  small: [256, 256, 256],
  narrow: [4096, 64, 1024],
  large: [2048, 2048, 1024],
};

export function shapeClass(m: number, n: number, _k: number): ShapeClass {
  if (m * n <= 256 * 256) return 'small';
  if (Math.min(m, n) <= 64) return 'narrow';
  return 'large';
}

/** Why `tile` cannot run on this device, or null. */
export function tileProblem(ctx: GpuContext, t: TileShape): string | null {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  if (t.bm % t.tm !== 0 || t.bn % t.tn !== 0) return 'BM and BN must be multiples of TM and TN';
  if (![4, 8].includes(t.tm) || ![4, 8].includes(t.tn)) return 'TM and TN are 4 or 8';
  if (t.bk % 4 !== 0) return 'BK must be a multiple of 4';
  // The kernel stages at most 4 vec4 slots of each operand per invocation per step.
  if (Math.max(t.bm, t.bn) * t.bk > 16 * threads)
    return `${Math.max(t.bm, t.bn) * t.bk} elements staged per operand by ${threads} invocations`;
  if (threads > ctx.limits.maxComputeInvocationsPerWorkgroup) return `${threads} invocations per workgroup`;
  if (t.bn / t.tn > ctx.limits.maxComputeWorkgroupSizeX || t.bm / t.tm > ctx.limits.maxComputeWorkgroupSizeY) return 'workgroup too wide';
  if ((t.bm + t.bn) * t.bk * 4 > ctx.limits.maxComputeWorkgroupStorageSize) return 'tiles exceed workgroup memory';
  return null;
}

export interface MatmulTuning {
  tiles: Record<ShapeClass, TileShape>;
  /**
   * Whether the tensor-core kernel computed a product right on this adapter (null: the adapter has
   * no subgroup matrices, or it was not probed). The kernel is used only after it has.
   */
  mma?: boolean | null;
  /** GFLOP/s of each class's choice on its tuning shape (empty when not tuned). */
  gflops: Partial<Record<ShapeClass, number>>;
  /** 'tuned' now, 'cache' (read from `cachePath`), or 'default' (not tuned). */
  source: 'tuned' | 'cache' | 'default';
  cachePath: string | null;
  tunedAt?: string;
}

/** The folder of webtron's on-disk caches: WEBTRON_CACHE_DIR, else XDG_CACHE_HOME/webtron, else ~/.cache/webtron. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.WEBTRON_CACHE_DIR) return env.WEBTRON_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'webtron');
}

/** The adapter, its driver (Dawn's description carries the driver version), the backend, and the kernels' source. */
export function tuningKey(ctx: GpuContext): string {
  const info = ctx.found.info;
  const sources = ['matmul-tiled', 'matmul-mma'].map((name) => ctx.kernels.source(name)).join('\n');
  const kernel = createHash('sha256').update(sources).digest('hex').slice(0, 16);
  return [ctx.backend, info.vendor, info.architecture, info.device, info.description, kernel].join('|');
}

interface CacheFile {
  version: 1;
  entries: Record<
    string,
    { tiles: Record<ShapeClass, TileShape>; gflops: Partial<Record<ShapeClass, number>>; tunedAt: string; mma?: boolean | null }
  >;
}

function readCache(path: string): CacheFile {
  if (!existsSync(path)) return { version: 1, entries: {} };
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as CacheFile;
    return parsed.version === 1 && typeof parsed.entries === 'object' ? parsed : { version: 1, entries: {} };
  } catch {
    return { version: 1, entries: {} }; // a damaged cache is rebuilt, never trusted
  }
}

/** The tile shape the adapter's tuning chose for a product of this shape. */
export function tileFor(ctx: GpuContext, m: number, n: number, k: number): TileShape {
  return ctx.matmulTuning.tiles[shapeClass(m, n, k)];
}

/** GFLOP/s of `tile` on [m, k] @ [k, n] with fp32 operands: the median of `runs` timed dispatches. */
export async function timeTile(ctx: GpuContext, tile: TileShape, [m, k, n]: [number, number, number], runs = 5): Promise<number> {
  const buffer = (label: string, floats: number) => ctx.createBuffer({ label, size: floats * 4, usage: storageUsage(), category: 'other' });
  const A = buffer('tune.a', m * k);
  const B = buffer('tune.b', k * n);
  const C = buffer('tune.c', m * n);
  // Row-major operands read a vec4 at a time where the sizes allow, as the layers' products are.
  const quads = k % 4 === 0 && n % 4 === 0 ? 1 : 0;
  const pipeline = ctx.kernels.pipeline('matmul-tiled', 'main', {
    BM: tile.bm,
    BN: tile.bn,
    BK: tile.bk,
    TM: tile.tm,
    TN: tile.tn,
    A_VEC: quads,
    B_VEC: quads,
  });
  const uniforms = ctx.createBuffer({
    label: 'tune.uniforms',
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    category: 'other',
  });
  const view = new DataView(new ArrayBuffer(256));
  ctx.kernels.packUniforms(pipeline, { M: m, N: n, K: k, NB1: 1, A_RS: k, A_CS: 1, B_RS: n, B_CS: 1, C_RS: n, alpha: 1 }, view);
  ctx.device.queue.writeBuffer(uniforms.gpu, 0, view.buffer);
  const unused = buffer('tune.unused', 16); // gelu(C), not asked for
  const group = ctx.kernels.bindGroup(
    pipeline,
    { A, B, C, bias: B, H: unused, A4: A, B4: B },
    { buffer: uniforms, offset: 0, size: ctx.kernels.uniformBytes(pipeline) },
  );
  const grid = [Math.ceil(n / tile.bn), Math.ceil(m / tile.bm), 1] as const;
  const querySet = ctx.device.createQuerySet({ type: 'timestamp', count: 2 * (runs + 1) });
  const resolve = ctx.createBuffer({
    label: 'tune.resolve',
    size: 16 * (runs + 1),
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    category: 'staging',
  });
  try {
    const encoder = ctx.device.createCommandEncoder({ label: 'tune' });
    for (let r = 0; r <= runs; r++) {
      const pass = encoder.beginComputePass({
        timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * r, endOfPassWriteIndex: 2 * r + 1 },
      });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      pass.dispatchWorkgroups(...grid);
      pass.end();
    }
    encoder.resolveQuerySet(querySet, 0, 2 * (runs + 1), resolve.gpu, 0);
    ctx.submit([encoder.finish()]);
    const bytes = await ctx.transfers.readback(resolve, 0, 16 * (runs + 1));
    const ns = new BigUint64Array(bytes.buffer, bytes.byteOffset, 2 * (runs + 1));
    // The first run warms up; the median of the rest.
    const ms = Array.from({ length: runs }, (_, r) => Number(ns[2 * r + 3]! - ns[2 * r + 2]!) / 1e6).sort((x, y) => x - y);
    return (2 * m * n * k) / (ms[runs >> 1]! * 1e6);
  } finally {
    querySet.destroy();
    for (const b of [A, B, C, unused, uniforms, resolve]) b.destroy();
  }
}

export interface TuneOptions {
  /** Where the cache file lives (default `cacheDir()`); null: neither read nor write one. */
  cacheDir?: string | null;
  /** Time the candidates even when the cache has an entry. */
  force?: boolean;
  candidates?: readonly TileShape[];
  /** Tuning shapes by class (tests use small ones). */
  shapes?: Partial<Record<ShapeClass, [number, number, number]>>;
  /** Called with a line per class as it is tuned. */
  progress?: (line: string) => void;
}

/** The adapter's tile shapes: from the cache when it has them, else timed now and cached. Needs timestamp queries. */
export async function tuneMatmul(ctx: GpuContext, options: TuneOptions = {}): Promise<MatmulTuning> {
  const dir = options.cacheDir === undefined ? cacheDir() : options.cacheDir;
  const path = dir === null ? null : join(dir, 'matmul-tiles.json');
  const key = tuningKey(ctx);
  const cache = path ? readCache(path) : { version: 1 as const, entries: {} };
  const hit = cache.entries[key];
  if (hit && !options.force)
    return { tiles: hit.tiles, gflops: hit.gflops, source: 'cache', cachePath: path, tunedAt: hit.tunedAt, mma: hit.mma ?? null };
  if (!ctx.hasTimestamps) throw new GpuError(`adapter '${ctx.adapterName}' has no timestamp queries: the matmul tiles cannot be tuned`);
  const candidates = (options.candidates ?? TILE_CANDIDATES).filter((t) => tileProblem(ctx, t) === null);
  if (candidates.length === 0) throw new GpuError(`no matmul tile candidate fits adapter '${ctx.adapterName}'`);
  const tiles = { ...DEFAULT_TILES };
  const gflops: Partial<Record<ShapeClass, number>> = {};
  for (const cls of SHAPE_CLASSES) {
    const shape = options.shapes?.[cls] ?? TUNING_SHAPES[cls];
    let best: { tile: TileShape; gflops: number } | null = null;
    for (const tile of candidates) {
      const rate = await timeTile(ctx, tile, shape);
      if (!best || rate > best.gflops) best = { tile, gflops: rate };
    }
    tiles[cls] = best!.tile;
    gflops[cls] = Math.round(best!.gflops * 10) / 10;
    options.progress?.(`matmul tiles, ${cls} (${shape.join(' x ')}): ${describeTile(best!.tile)} at ${gflops[cls]} GFLOP/s`);
  }
  const mma = ctx.subgroupMatrixOffered ? await probeSubgroupMatrix(ctx) : null;
  if (mma === false)
    options.progress?.('subgroup matrices: the tensor-core kernel computed a wrong product here; 16-bit matmuls use the tiled kernel');
  const tunedAt = new Date().toISOString();
  let cachePath = path;
  if (path && dir) {
    // A cache that cannot be written (a read-only home, a browser tab, whose launcher serves no
    // cache folder) costs the next run a tuning, not this one its result.
    try {
      mkdirSync(dir, { recursive: true });
      cache.entries[key] = { tiles, gflops, tunedAt, mma };
      writeFileAtomic(path, `${JSON.stringify(cache, null, 2)}\n`);
    } catch (error) {
      cachePath = null;
      options.progress?.(`matmul tiles not cached: ${(error as Error).message}`);
    }
  }
  return { tiles, gflops, source: 'tuned', cachePath, tunedAt, mma };
}

/**
 * Run the tensor-core kernel once on a product whose f16 inputs and f32 sums are exact ([96, 80] @
 * [80, 72] of small multiples of 1/8, past the edges of its tiles) and compare every element with
 * the host's: an experimental feature is used only where it computed the right answer.
 */
export async function probeSubgroupMatrix(ctx: GpuContext): Promise<boolean> {
  const shape = ctx.subgroupMatrixOffered;
  if (!shape) return false;
  const [m, k, n] = [96, 80, 72];
  const a = Float32Array.from({ length: m * k }, (_, i) => ((i * 7) % 17) / 8 - 1);
  const bHalf = Float32Array.from({ length: k * n }, (_, i) => ((i * 5) % 13) / 8 - 0.75);
  const words = new Uint16Array(k * n);
  for (let i = 0; i < words.length; i++) words[i] = halfBits(bHalf[i]!);
  const buffer = (label: string, bytes: number) => ctx.createBuffer({ label, size: bytes, usage: storageUsage(), category: 'other' });
  const A = buffer('probe.a', a.byteLength);
  const B = buffer('probe.b', words.byteLength);
  const C = buffer('probe.c', m * n * 4);
  ctx.transfers.upload(A, a);
  ctx.transfers.upload(B, words);
  const uniforms = ctx.createBuffer({
    label: 'probe.uniforms',
    size: 256,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    category: 'other',
  });
  const unused = buffer('probe.unused', 16); // gelu(C), not asked for
  try {
    const pipeline = ctx.kernels.pipeline(
      'matmul-mma',
      'main',
      { B_DTYPE: 2, A_KFAST: 1, B_NFAST: 1, SG: ctx.subgroupMaxSize },
      { FM: shape.m, FN: shape.n, FK: shape.k },
    );
    const view = new DataView(new ArrayBuffer(256));
    ctx.kernels.packUniforms(pipeline, { M: m, N: n, K: k, NB1: 1, A_RS: k, A_CS: 1, B_RS: n, B_CS: 1, C_RS: n, alpha: 1 }, view);
    ctx.device.queue.writeBuffer(uniforms.gpu, 0, view.buffer);
    const group = ctx.kernels.bindGroup(
      pipeline,
      { A, B, C, bias: B, H: unused },
      { buffer: uniforms, offset: 0, size: ctx.kernels.uniformBytes(pipeline) },
    );
    const encoder = ctx.device.createCommandEncoder({ label: 'probe' });
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(Math.ceil(n / (4 * shape.n)), Math.ceil(m / (4 * shape.m)), 1);
    pass.end();
    ctx.submit([encoder.finish()]);
    const got = await ctx.transfers.readFloat32(C, 0, m * n);
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let want = 0;
        for (let p = 0; p < k; p++) want += a[i * k + p]! * bHalf[p * n + j]!;
        if (got[i * n + j] !== want) return false;
      }
    return true;
  } catch {
    return false; // a shader or device error: the kernel does not run here
  } finally {
    for (const b of [A, B, C, uniforms, unused]) b.destroy();
  }
}

/** fp16 bits of a value that fp16 holds exactly. */
function halfBits(x: number): number {
  if (x === 0) return 0;
  const sign = x < 0 ? 0x8000 : 0;
  const exponent = Math.floor(Math.log2(Math.abs(x)));
  const mantissa = Math.round((Math.abs(x) / 2 ** exponent - 1) * 1024);
  return sign | ((exponent + 15) << 10) | mantissa;
}

export function describeTile(t: TileShape): string {
  return `${t.bm}x${t.bn}x${t.bk}, ${t.tm}x${t.tn} per invocation`;
}
