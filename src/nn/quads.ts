/**
 * vec4 views of fp32 operands for kernels with four-elements-per-invocation entry points: a binding
 * as vec4s needs a 16-byte aligned start and must not run past its buffer when rounded up.
 */
import type { Graph } from './graph.js';
import type { RangeBinding, Tensor } from './tensor.js';

/** Whether every value (sizes, starts, strides; absent ones count as 0) is a multiple of 4: an operand vec4 loads can read. */
export function aligned4(...values: (number | undefined)[]): boolean {
  return values.every((v) => (v ?? 0) % 4 === 0);
}

/**
 * Element-wise operands of `numel` elements as vec4 bindings, in order, for a kernel that does four
 * elements per invocation: null unless `numel` and every shift are multiples of 4 and every binding
 * can be read as vec4s (then the element-wise kernel runs).
 */
export function quadBindings(g: Graph, numel: number, ...ops: [Tensor, RangeBinding][]): RangeBinding['binding'][] | null {
  if (numel % 4 !== 0 || ops.some(([, b]) => b.shift % 4 !== 0)) return null;
  const quads = ops.map(([t, b]) => quadBinding(g, t, b));
  return quads.every((q) => q !== null) ? (quads as RangeBinding['binding'][]) : null;
}

/**
 * `binding` (of fp32 tensor `t`) as vec4s: the same aligned start, the size rounded up to 16 bytes.
 * Null when that would run past the buffer (the operand is then read element by element).
 */
export function quadBinding(g: Graph, t: Tensor, { binding }: RangeBinding): RangeBinding['binding'] | null {
  if (t.dtype !== 'float32') return null;
  const size = Math.ceil(binding.size / 16) * 16;
  if (binding.offset % 16 !== 0 || binding.offset + size > t.buffer.size || size > g.ctx.limits.maxStorageBufferBindingSize) return null;
  return { ...binding, size };
}

/**
 * `t` as vec4s for a kernel that reads it from its binding's start (layer norm, softmax, gelu): null
 * unless `t` starts its binding (shift 0) and can be read as vec4s.
 */
export function quadAtStart(g: Graph, t: Tensor): RangeBinding['binding'] | null {
  const r = t.binding(g.ctx);
  return r.shift === 0 ? quadBinding(g, t, r) : null;
}
