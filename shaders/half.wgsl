// 16-bit words <-> f32, shared by the kernels that read or write bf16/fp16 data (included with
// `//!include half`). Conversions to 16 bits use integer operations, rounding to nearest even.

// Param dtypes as the kernels' P_DTYPE/B_DTYPE constants name them.
const DTYPE_F32: u32 = 0u;
const DTYPE_BF16: u32 = 1u;
const DTYPE_F16: u32 = 2u;

fn to_bf16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) {
    return (bits >> 16u) | 0x40u; // NaN stays NaN
  }
  return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

// fp16 words, converted with integer operations: WGSL leaves the rounding direction of f32 -> f16
// to the implementation, and the main params must round the same way on every adapter.
fn to_f16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let exponent = i32((bits >> 23u) & 0xffu);
  var mantissa = bits & 0x7fffffu;
  if (exponent == 255) {
    return sign | 0x7c00u | select(0u, 0x200u, mantissa != 0u); // inf, NaN
  }
  let e = exponent - 112; // rebias 127 -> 15
  if (e >= 31) {
    return sign | 0x7c00u; // overflow -> inf
  }
  if (e <= 0) {
    if (e < -10) {
      return sign; // underflow -> signed zero
    }
    mantissa = mantissa | 0x800000u;
    let shift = u32(14 - e);
    let half = 1u << (shift - 1u);
    var h = mantissa >> shift;
    let rest = mantissa & ((1u << shift) - 1u);
    if (rest > half || (rest == half && (h & 1u) == 1u)) {
      h = h + 1u;
    }
    return sign | h;
  }
  var h = (u32(e) << 10u) | (mantissa >> 13u);
  let rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
    h = h + 1u; // a carry into the exponent is still right
  }
  return sign | h;
}

// Half `h` (the low 16 bits) of a bf16 or fp16 word as f32.
fn half_to_f32(h: u32, dtype: u32) -> f32 {
  if (dtype == DTYPE_BF16) {
    return bitcast<f32>(h << 16u);
  }
  return unpack2x16float(h).x;
}

// Element `e` of a 16-bit array held as u32 words, given the word that holds it (word e / 2).
fn half_of(word: u32, e: u32, dtype: u32) -> f32 {
  return half_to_f32(select(word & 0xffffu, word >> 16u, (e & 1u) == 1u), dtype);
}
