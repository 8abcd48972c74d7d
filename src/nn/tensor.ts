/**
 * GPU tensors: a shape and a dtype over a view of a buffer (buffer + first element). Activations own
 * their buffers (fp32); parameters are views into the model's contiguous param buffer and their
 * grads are views into the grad buffer, so backward writes straight into what DDP reduces.
 */
import { WebtronError } from '../errors.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import { alignDown } from '../gpu/grid.js';
import type { BufferView } from '../ddp/buffers.js';
import type { GradDtype, ParamDtype } from '../ddp/layout.js';

export type Dtype = ParamDtype | 'uint32';

export const DTYPE_BYTES: Record<Dtype, number> = { float32: 4, float16: 2, bfloat16: 2, uint32: 4 };

/** The dtype codes the shaders' P_DTYPE/B_DTYPE constants use (shaders/half.wgsl). */
export const DTYPE_CODE: Record<ParamDtype, number> = { float32: 0, bfloat16: 1, float16: 2 };

/** The kernels' code (B_DTYPE, P_DTYPE) of a param tensor's dtype. */
export function paramCode(t: Tensor, what: string): number {
  if (t.dtype === 'uint32') throw new ShapeMismatch(`${what}: expected a float tensor, got uint32`);
  return DTYPE_CODE[t.dtype as ParamDtype];
}

export class ShapeMismatch extends WebtronError {
  override name = 'ShapeMismatch';
  override readonly code: string = 'ERR_SHAPE_MISMATCH';
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class Tensor {
  readonly numel: number;

  constructor(
    readonly buffer: DeviceBuffer,
    /** First element in `buffer`. */
    readonly offset: number,
    readonly shape: readonly number[],
    readonly dtype: Dtype,
    /** Set for parameters: its name and where its grad goes. */
    readonly param: { name: string; grad: Tensor; gradDtype: GradDtype } | null = null,
    /** Backward reaches this tensor (a param, or computed from one). */
    readonly requiresGrad = param !== null,
  ) {
    this.numel = numel(shape);
    if (offset + this.numel > buffer.size / DTYPE_BYTES[dtype] + 1e-9) {
      throw new ShapeMismatch(`tensor [${shape.join(', ')}] at element ${offset} overruns buffer '${buffer.label}' (${buffer.size} B)`);
    }
  }

  /** A parameter tensor over its param and grad views. */
  static param(name: string, view: BufferView, dtype: ParamDtype, grad: BufferView, gradDtype: GradDtype): Tensor {
    const g = new Tensor(grad.buffer, grad.offset, grad.shape, gradDtype);
    return new Tensor(view.buffer, view.offset, view.shape, dtype, { name, grad: g, gradDtype });
  }

  get isParam(): boolean {
    return this.param !== null;
  }

  /** The same data with another shape of as many elements. */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.numel) throw new ShapeMismatch(`cannot reshape [${this.shape.join(', ')}] to [${shape.join(', ')}]`);
    return new Tensor(this.buffer, this.offset, shape, this.dtype, this.param, this.requiresGrad);
  }

  /** Whether one storage binding can cover this tensor on `ctx`'s device (`binding` throws where not). */
  fitsOneBinding(ctx: GpuContext): boolean {
    return rangeSpan(ctx, this.buffer, this.offset, this.numel, this.dtype).size <= ctx.limits.maxStorageBufferBindingSize;
  }

  /** The binding covering this tensor (starting at the aligned byte at or below it) and the shift to its first element. */
  binding(ctx: GpuContext): RangeBinding {
    return rangeBinding(ctx, this.buffer, this.offset, this.numel, this.dtype, `tensor [${this.shape.join(', ')}]`);
  }
}

export interface RangeBinding {
  binding: { buffer: DeviceBuffer; offset: number; size: number };
  /** Elements from the binding's start to the range's first element. */
  shift: number;
}

/**
 * The binding of `numel` elements of `dtype` from element `offset` of `buffer`: it starts at the
 * device's storage offset alignment at or below the data and ends at the next whole word.
 */
export function rangeBinding(
  ctx: GpuContext,
  buffer: DeviceBuffer,
  offset: number,
  numel: number,
  dtype: Dtype,
  what: string,
): RangeBinding {
  const { start, size, shift } = rangeSpan(ctx, buffer, offset, numel, dtype);
  if (size > ctx.limits.maxStorageBufferBindingSize) {
    throw new ShapeMismatch(
      `${what} of '${buffer.label}' spans ${size} B, over this device's storage binding limit (${ctx.limits.maxStorageBufferBindingSize} B)`,
    );
  }
  return { binding: { buffer, offset: start, size }, shift };
}

/** rangeBinding's byte range: its aligned start, its size and the elements from there to the data. */
function rangeSpan(ctx: GpuContext, buffer: DeviceBuffer, offset: number, numel: number, dtype: Dtype) {
  const bytes = DTYPE_BYTES[dtype];
  const first = offset * bytes;
  const aligned = alignDown(first, ctx.limits.minStorageBufferOffsetAlignment);
  const end = Math.min(buffer.size, Math.ceil((first + Math.max(1, numel) * bytes) / 4) * 4);
  return { start: aligned.start, size: end - aligned.start, shift: aligned.shift / bytes };
}
