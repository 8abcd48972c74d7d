/**
 * Where every parameter lives in the contiguous param and grad buffers, pure. Megatron-LM's rules,
 * so that memory and shard math match its documentation:
 *
 * - one buffer per (param dtype, grad dtype), in order of first appearance;
 * - inside a buffer, params are placed in reverse registration order (roughly backward order, so
 *   bucket 0 holds the end of the model and is ready first);
 * - with the distributed optimizer each param starts at a multiple of 64 elements and each bucket
 *   ends at a multiple of lcm(d, 128), so that every bucket splits into d equal shards; webtron
 *   makes that lcm(4·d, 128), so that every shard starts at a multiple of 4 elements (the optimizer
 *   kernels read vec4s and 16-bit element pairs). The two differ only when 64 divides d (d = 64:
 *   256 instead of 128), and the extra elements are reported as padding like Megatron's;
 * - a bucket closes as soon as it holds at least the bucket size (default max(40M, 1M·d) elements);
 * - webtron additions without the distributed optimizer: params start at multiples of 4 elements
 *   (so that the optimizer's kernels, which read vec4s, can split the buffer where a param group
 *   ends: no weight decay on biases and norms), and 16-bit buckets end at even elements, because
 *   WebGPU copies whole 4-byte words. At most 3 elements of padding per param.
 *
 * The result is a frozen record; buffers and the optimizer's shard ranges are built from it.
 */
import { WebtronError } from '../errors.js';

export type ParamDtype = 'float32' | 'float16' | 'bfloat16';
export type GradDtype = 'float32' | 'float16' | 'bfloat16';

export const BYTES: Record<ParamDtype | GradDtype, number> = { float32: 4, float16: 2, bfloat16: 2 };

export interface ParamSpec {
  name: string;
  shape: readonly number[];
  dtype: ParamDtype;
  gradDtype: GradDtype;
}

export interface LayoutOptions {
  dataParallelSize: number;
  distributedOptimizer: boolean;
  /** Elements per bucket before it closes; default max(40M, 1M·d). */
  bucketSize?: number;
}

/** Elements [start, end) of a buffer. */
export interface IndexRange {
  readonly start: number;
  readonly end: number;
}

export interface ParamPlacement extends IndexRange {
  readonly name: string;
  readonly shape: readonly number[];
  readonly numel: number;
  /** Index of the bucket within its buffer. */
  readonly bucket: number;
}

export interface BucketLayout extends IndexRange {
  readonly index: number;
  /** Elements of params (and of the start padding between them) before the end padding. */
  readonly numelUnpadded: number;
  /** Param names, in placement order. */
  readonly params: readonly string[];
}

export interface BufferLayout {
  readonly paramDtype: ParamDtype;
  readonly gradDtype: GradDtype;
  /** Elements, padding included. */
  readonly numel: number;
  /** Elements that belong to params. */
  readonly paramNumel: number;
  readonly buckets: readonly BucketLayout[];
  /** In placement order (reverse registration order). */
  readonly params: readonly ParamPlacement[];
}

export interface ModelLayout {
  readonly dataParallelSize: number;
  readonly distributedOptimizer: boolean;
  readonly bucketSize: number;
  readonly buffers: readonly BufferLayout[];
  /** Total param elements (no padding). */
  readonly paramCount: number;
}

export const PARAM_START_ALIGN = 64;
export const BUCKET_END_ALIGN = 128;

/** Where a bucket ends with the distributed optimizer: Megatron's lcm(d, 128), and every shard a multiple of 4 elements. */
export function bucketEndAlignment(d: number): number {
  return lcm(4 * d, BUCKET_END_ALIGN);
}

export function defaultBucketSize(d: number): number {
  return Math.max(40_000_000, 1_000_000 * d);
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

export function padTo(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class LayoutError extends WebtronError {
  override name = 'LayoutError';
  override readonly code: string = 'ERR_LAYOUT';
}

function check(params: ParamSpec[], o: LayoutOptions): void {
  if (!Number.isInteger(o.dataParallelSize) || o.dataParallelSize < 1) {
    throw new LayoutError(`data-parallel size must be a positive integer, got ${o.dataParallelSize}`);
  }
  if (o.bucketSize !== undefined && (!Number.isInteger(o.bucketSize) || o.bucketSize < 1)) {
    throw new LayoutError(`bucketSize must be a positive integer, got ${o.bucketSize}`, ['bucketSize']);
  }
  const seen = new Set<string>();
  for (const p of params) {
    if (seen.has(p.name)) throw new LayoutError(`param '${p.name}' is registered twice`);
    seen.add(p.name);
    if (p.shape.length === 0 || !p.shape.every((s) => Number.isInteger(s) && s > 0)) {
      throw new LayoutError(`param '${p.name}' has shape [${p.shape.join(', ')}]; every dimension must be a positive integer`);
    }
    if (!(p.dtype in BYTES)) throw new LayoutError(`param '${p.name}' has unknown dtype '${p.dtype}'; use float32, float16 or bfloat16`);
    if (!(p.gradDtype in BYTES)) {
      throw new LayoutError(`param '${p.name}' has unknown grad dtype '${p.gradDtype}'; use float32, float16 or bfloat16`);
    }
  }
}

function layoutBuffer(params: ParamSpec[], o: Required<LayoutOptions>): BufferLayout {
  const distributed = o.distributedOptimizer;
  // WebGPU copies and writes whole 4-byte words: 16-bit buckets end at even elements; the
  // optimizer's vec4 kernels split the buffer at param starts (param groups): multiples of 4.
  const bucketEndAlign = distributed ? bucketEndAlignment(o.dataParallelSize) : BYTES[params[0]!.dtype] < 4 ? 2 : 1;
  const paramStartAlign = distributed ? PARAM_START_ALIGN : 4;
  const placements: ParamPlacement[] = [];
  const buckets: BucketLayout[] = [];
  let bucketStart = 0;
  let bucketParams: string[] = [];
  let cursor = 0;

  const closeBucket = (end: number): number => {
    const padded = padTo(end, bucketEndAlign);
    buckets.push(
      Object.freeze({
        index: buckets.length,
        start: bucketStart,
        end: padded,
        numelUnpadded: end - bucketStart,
        params: Object.freeze(bucketParams),
      }),
    );
    bucketStart = padded;
    bucketParams = [];
    return padded;
  };

  for (const p of [...params].reverse()) {
    const start = padTo(cursor, paramStartAlign);
    const numel = numelOf(p.shape);
    const end = start + numel;
    placements.push(Object.freeze({ name: p.name, shape: Object.freeze([...p.shape]), numel, start, end, bucket: buckets.length }));
    bucketParams.push(p.name);
    cursor = end - bucketStart >= o.bucketSize ? closeBucket(end) : end;
  }
  if (bucketParams.length > 0) cursor = closeBucket(cursor);

  const first = params[0]!;
  return Object.freeze({
    paramDtype: first.dtype,
    gradDtype: first.gradDtype,
    numel: cursor,
    paramNumel: placements.reduce((s, p) => s + p.numel, 0),
    buckets: Object.freeze(buckets),
    params: Object.freeze(placements),
  });
}

/** The layout of `params` (in registration order) for this data-parallel size and optimizer. */
export function computeLayout(params: ParamSpec[], options: LayoutOptions): ModelLayout {
  check(params, options);
  const o: Required<LayoutOptions> = { ...options, bucketSize: options.bucketSize ?? defaultBucketSize(options.dataParallelSize) };
  const groups = new Map<string, ParamSpec[]>();
  for (const p of params) {
    const key = `${p.dtype}/${p.gradDtype}`;
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  const buffers = [...groups.values()].map((group) => layoutBuffer(group, o));
  return Object.freeze({
    dataParallelSize: o.dataParallelSize,
    distributedOptimizer: o.distributedOptimizer,
    bucketSize: o.bucketSize,
    buffers: Object.freeze(buffers),
    paramCount: buffers.reduce((s, b) => s + b.paramNumel, 0),
  });
}

/** Where `name` lives: its buffer index and placement. */
export function findParam(layout: ModelLayout, name: string): { buffer: number; placement: ParamPlacement } {
  for (const [buffer, b] of layout.buffers.entries()) {
    const placement = b.params.find((p) => p.name === name);
    if (placement) return { buffer, placement };
  }
  throw new LayoutError(`no param named '${name}' in this layout`);
}
