/**
 * Deterministic test data from a 32-bit integer hash, implemented identically in
 * scripts/make-adam-fixtures.py so fixtures need not store their inputs. Every value is exact in
 * float32 (a 24-bit draw times a power-of-two-free scale rounded once).
 */

export function lowbias32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** `length` float32 values in [-scale, scale) for (seed, stream). */
export function hashedUniform(seed: number, stream: number, length: number, scale: number): Float32Array {
  const out = new Float32Array(length);
  const base = lowbias32((Math.imul(seed, 0x9e3779b9) + stream) >>> 0);
  for (let i = 0; i < length; i++) {
    const h = lowbias32((base ^ lowbias32((i + 0x632be5ab) >>> 0)) >>> 0);
    out[i] = ((h >>> 8) / 16777216 - 0.5) * 2 * scale;
  }
  return out;
}

/** ‖a − b‖ / ‖b‖ in double precision (‖a‖ when b is all zeros). */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`relativeError: lengths differ (${a.length} vs ${b.length})`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    diff += d * d;
    norm += b[i]! * b[i]!;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

/** Seeded uniform float32 values in [-scale, scale), for tests that want fresh random inputs. */
export function randomFloats(length: number, seed: number, scale = 1): Float32Array {
  return hashedUniform(seed, 0xabcdef, length, scale);
}
