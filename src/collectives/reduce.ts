/**
 * Host reductions on typed arrays, and 16-bit float conversions (fp16 and bf16 words are
 * accumulated in fp32). Pure.
 */

export type ReduceOp = 'sum' | 'avg' | 'max';

/** dst[i] = dst[i] (op) src[i]; 'avg' sums here and is divided once at the end. */
export function reduceInto(dst: Float32Array, src: Float32Array, op: ReduceOp): void {
  const n = src.length;
  if (op === 'max') {
    for (let i = 0; i < n; i++) {
      const a = dst[i]!;
      const b = src[i]!;
      // NaN wins, as torch.max propagates it.
      dst[i] = a > b || Number.isNaN(a) ? a : b;
    }
  } else {
    // Unrolled by four: about 1.4x the plain loop in V8 here.
    let i = 0;
    for (; i + 3 < n; i += 4) {
      dst[i]! += src[i]!;
      dst[i + 1]! += src[i + 1]!;
      dst[i + 2]! += src[i + 2]!;
      dst[i + 3]! += src[i + 3]!;
    }
    for (; i < n; i++) dst[i]! += src[i]!;
  }
}

export function scale(data: Float32Array, factor: number): void {
  for (let i = 0; i < data.length; i++) data[i]! *= factor;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half (as a u16 word) → number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** number → IEEE half word, round to nearest even; overflow → ±Inf. */
export function floatToHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let h = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && h & 1)) h += 1;
    return sign | h;
  }
  let h = (e << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h += 1; // a carry into the exponent is still right
  return sign | h;
}

/** bf16 word → number. */
export function bf16ToFloat(b: number): number {
  u32[0] = b << 16;
  return f32[0]!;
}

/** number → bf16 word, round to nearest even (NaN stays NaN). */
export function floatToBf16(value: number): number {
  f32[0] = value;
  return bf16OfBits(u32[0]!);
}

/** The bf16 word of an fp32 value given by its bits (round to nearest even; NaN stays NaN). */
function bf16OfBits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export type HalfDtype = 'float16' | 'bfloat16';

export function wordsToFloat32(words: Uint16Array, dtype: HalfDtype, out: Float32Array = new Float32Array(words.length)): Float32Array {
  if (dtype === 'bfloat16') {
    const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < words.length; i++) bits[i] = words[i]! << 16;
  } else {
    for (let i = 0; i < words.length; i++) out[i] = halfToFloat(words[i]!);
  }
  return out;
}

export function float32ToWords(values: Float32Array, dtype: HalfDtype, out: Uint16Array): void {
  if (dtype === 'bfloat16') {
    // On the bits directly: no trip through the one-float scratch per element.
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) out[i] = bf16OfBits(bits[i]!);
    return;
  }
  for (let i = 0; i < values.length; i++) out[i] = floatToHalf(values[i]!);
}

/** Widened bf16 words, a block at a time (reduceBf16Into). */
const widened = new Uint32Array(1 << 14);
const widenedFloats = new Float32Array(widened.buffer);

/** dst[i] = dst[i] (op) the bf16 word src[i], in fp32 ('avg' sums). */
export function reduceBf16Into(dst: Float32Array, src: Uint16Array, op: ReduceOp): void {
  for (let at = 0; at < src.length; at += widened.length) {
    const m = Math.min(widened.length, src.length - at);
    for (let i = 0; i < m; i++) widened[i] = src[at + i]! << 16;
    reduceInto(dst.subarray(at, at + m), widenedFloats.subarray(0, m), op);
  }
}
