/**
 * x rounded to bf16 (8 significant bits, ties to even), in float64 arithmetic: a reference written
 * apart from the bit tricks webtron's conversions use. Finite, normal inputs only.
 */
export function bf16Reference(x: number): number {
  return roundToBits(x, 8);
}

/** x rounded to fp16 (11 significant bits, ties to even), the same way; below 2^-14, to multiples of 2^-24 (subnormals). No overflow. */
export function fp16Reference(x: number): number {
  if (Math.abs(x) >= 2 ** -14) return roundToBits(x, 11);
  const q = Math.abs(x) / 2 ** -24;
  const floor = Math.floor(q);
  const n = q - floor > 0.5 || (q - floor === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
  return Math.sign(x) * n * 2 ** -24;
}

function roundToBits(x: number, bits: number): number {
  if (x === 0) return x;
  const quantum = 2 ** (Math.floor(Math.log2(Math.abs(x))) - (bits - 1));
  const q = x / quantum;
  const floor = Math.floor(q);
  const rounded = q - floor > 0.5 || (q - floor === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
  return rounded * quantum;
}

/**
 * What a reduction with bf16 on the wire yields at world 2 for an element: the chunk's owner adds
 * the other rank's value, rounded to bf16, to its own fp32 value (times `scale`, for 'avg'); an
 * all-reduce then hands everyone (the owner too) that sum rounded to bf16.
 */
export function bf16WireAtTwo(own: number, other: number, scale: number, op: 'reduceScatter' | 'allReduce'): number {
  const sum = Math.fround(Math.fround(own + bf16Reference(other)) * scale);
  return op === 'allReduce' ? bf16Reference(sum) : sum;
}
