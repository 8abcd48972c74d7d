import { GpuError } from './errors.js';
/**
 * Pure planning for 1-D work: workgroup grids past the 65535-per-dimension limit, and windows over
 * buffers larger than one storage binding. No GPU in here; the context and the kernels use these.
 */

export interface Grid {
  x: number;
  y: number;
  z: number;
}

/**
 * A grid of at least `workgroups` workgroups within `maxPerDimension` per dimension. Shaders derive a
 * linear workgroup index as `wid.x + wid.y * nwg.x` and must guard the tail (the grid may overshoot).
 */
export function gridFor(workgroups: number, maxPerDimension = 65535): Grid {
  if (!Number.isInteger(workgroups) || workgroups < 0) {
    throw new RangeError(`gridFor: workgroups must be a non-negative integer, got ${workgroups}`);
  }
  if (workgroups <= maxPerDimension) return { x: workgroups, y: 1, z: 1 };
  const y = Math.ceil(workgroups / maxPerDimension);
  if (y > maxPerDimension) {
    throw new GpuError(`gridFor: ${workgroups} workgroups exceed ${maxPerDimension}² — split the work into windows first`);
  }
  return { x: Math.ceil(workgroups / y), y, z: 1 };
}

/** A contiguous range of elements processed with one set of bindings. */
export interface Window {
  /** First element of the window. */
  start: number;
  /** Number of elements in the window. */
  count: number;
}

/**
 * Split `length` elements of `bytesPerElement` into windows that each fit one storage binding of at
 * most `maxBindingBytes`, with every window start at a multiple of `offsetAlignment` bytes (and of 16
 * bytes, so vec4 views stay aligned). Always returns at least one window (possibly empty).
 */
export function windowsFor(length: number, bytesPerElement: number, maxBindingBytes: number, offsetAlignment = 256): Window[] {
  if (!Number.isInteger(length) || length < 0) {
    throw new RangeError(`windowsFor: length must be a non-negative integer, got ${length}`);
  }
  const align = lcm(offsetAlignment, 16);
  const windowBytes = Math.floor(maxBindingBytes / align) * align;
  const perWindow = Math.floor(windowBytes / bytesPerElement);
  if (perWindow <= 0 || (perWindow * bytesPerElement) % align !== 0) {
    throw new RangeError(
      `windowsFor: cannot window ${bytesPerElement}-byte elements into bindings of ${maxBindingBytes} B aligned to ${align} B`,
    );
  }
  const windows: Window[] = [];
  for (let start = 0; start < length || windows.length === 0; start += perWindow) {
    windows.push({ start, count: Math.min(perWindow, length - start) });
  }
  return windows;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

/**
 * Where to bind data that starts at byte `offset` when bindings must start at multiples of `align`:
 * the binding starts at `start` (aligned down) and the data `shift` bytes into it.
 */
export function alignDown(offset: number, align: number): { start: number; shift: number } {
  const start = Math.floor(offset / align) * align;
  return { start, shift: offset - start };
}
