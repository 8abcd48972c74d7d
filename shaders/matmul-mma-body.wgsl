// Tensor-core matmul for the 16-bit precisions (--fp16, --bf16) on adapters with
// chromium-experimental-subgroup-matrix: C[z] = alpha * A[z] @ B[z] (+ bias) (+ C[z]), f16 inputs,
// f32 accumulation. Operands are addressed like matmul-body.wgsl's (any layout, batched).
//
// A workgroup is 4 subgroups and computes a BM x BN tile of C, BM = BN = 4 FM (FM x FN x FK is the
// adapter's f16 -> f32 subgroup-matrix shape, 16 x 16 x 16 on NVIDIA, given as defines). For each
// step of BK = 2 FK in k, the workgroup stages the A and B tiles in workgroup memory as f16 (by the
// conversion rules of matmul-tiled-f16.wgsl: saturate at ±65504, the device's rounding), then each
// subgroup multiplies its 2 x 2 fragments of C. The fragments go through workgroup memory to the
// epilogue (alpha, bias, accumulation, edges), which every invocation shares.
//
// This file holds the interface, the staging and the epilogue; matmul-mma.wgsl multiplies with
// subgroup matrices and matmul-mma-twin.wgsl with plain arithmetic over the same staged tiles (the
// twin runs where subgroup matrices do not, so the staging and epilogue are tested everywhere).

//!include half
//!include gelu-math

override B_DTYPE: u32 = 0u;
override A_KFAST: bool = true;
override B_NFAST: bool = true;
override SG: u32 = 32u;
// Invocations per workgroup: 4 subgroups.
override WG: u32 = 4u * SG;

const BM: u32 = 4u * FM;
const BN: u32 = 4u * FN;
const BK: u32 = 2u * FK;
const F16_MAX: f32 = 65504.0;

//!include matmul-strided
// gelu(C), when FLAGS has 4; a dummy otherwise.
@group(0) @binding(5) var<storage, read_write> H: array<f32>;

// Row-major tiles: As[r * BK + kk], Bs[kk * BN + c]; Cs[r * BN + c] for the epilogue.
var<workgroup> As: array<f16, BM * BK>;
var<workgroup> Bs: array<f16, BK * BN>;
var<workgroup> Cs: array<f32, BM * BN>;

fn stage_f16(x: f32) -> f16 {
  return f16(clamp(x, -F16_MAX, F16_MAX));
}

fn b_value(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(B[e]);
  }
  return half_of(B[e >> 1u], e, B_DTYPE);
}

fn load_bias(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(bias[e]);
  }
  return half_of(bias[e >> 1u], e, B_DTYPE);
}

struct Tile {
  m0: u32,
  n0: u32,
  a_base: u32,
  b_base: u32,
  c_base: u32,
}

fn tile_of(wid: vec3<u32>) -> Tile {
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  return Tile(wid.y * BM, wid.x * BN, u.a_off + z0 * u.A_B0 + z1 * u.A_B1, u.b_off + z0 * u.B_B0 + z1 * u.B_B1,
              u.c_off + z0 * u.C_B0 + z1 * u.C_B1);
}

// Stage A[m0 .. m0+BM, k0 .. k0+BK] and B[k0 .. k0+BK, n0 .. n0+BN] as f16; zeros past the edges.
fn stage(t: Tile, k0: u32, li: u32) {
  let threads = WG;
  for (var e = li; e < BM * BK; e += threads) {
    var r: u32;
    var kk: u32;
    if (A_KFAST) {
      r = e / BK;
      kk = e % BK;
    } else {
      r = e % BM;
      kk = e / BM;
    }
    var v = 0.0;
    if (t.m0 + r < u.M && k0 + kk < u.K) {
      v = A[t.a_base + (t.m0 + r) * u.A_RS + (k0 + kk) * u.A_CS];
    }
    As[r * BK + kk] = stage_f16(v);
  }
  for (var e = li; e < BK * BN; e += threads) {
    var kk: u32;
    var c: u32;
    if (B_NFAST) {
      kk = e / BN;
      c = e % BN;
    } else {
      kk = e % BK;
      c = e / BK;
    }
    var v = 0.0;
    if (k0 + kk < u.K && t.n0 + c < u.N) {
      v = b_value(t.b_base + (k0 + kk) * u.B_RS + (t.n0 + c) * u.B_CS);
    }
    Bs[kk * BN + c] = stage_f16(v);
  }
}

// C = alpha * Cs + bias (+ C), inside the matrix.
fn epilogue(t: Tile, li: u32) {
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var e = li; e < BM * BN; e += WG) {
    let r = e / BN;
    let c = e % BN;
    let m = t.m0 + r;
    let n = t.n0 + c;
    if (m >= u.M || n >= u.N) { continue; }
    var add = 0.0;
    if ((u.FLAGS & 1u) != 0u) {
      add = load_bias(u.bias_off + n);
    }
    let at = t.c_base + m * u.C_RS + n;
    let v = Cs[e] * u.alpha + add;
    C[at] = select(v, v + C[at], accumulate);
    if ((u.FLAGS & 4u) != 0u) {
      H[at] = gelu4(vec4<f32>(v)).x;
    }
  }
}
