// Matmul for hardware GPUs: C[z] = alpha * A[z] @ B[z] (+ bias) (+ C[z] when accumulating), with
// operands addressed like matmul-body.wgsl's (row stride, column stride, two batch strides, any
// layout in place).
//
// A workgroup of (BN / TN) x (BM / TM) invocations computes a BM x BN tile of C. For each step of BK
// in k, the workgroup stages the A tile (BM x BK) and the B tile (BK x BN) in workgroup memory, read
// along whichever dimension each operand is contiguous in (A_KFAST / B_NFAST) so neighbouring
// invocations read neighbouring words; then every invocation multiplies its TM x TN register block
// out of workgroup memory. The tile shapes are pipeline constants, chosen per adapter and shape class
// by src/gpu/matmul-tuner.ts.
//
// The including module sets the staging type `S` (f32, or f16 for 16-bit params: half the workgroup
// memory and its traffic, f32 accumulation either way) and provides
//   fn stage_a(x: f32) -> S    fn stage_b(word: u32, e: u32) -> S    fn unstage(x: S) -> f32

//!include half
//!include gelu-math

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override WGX: u32 = BN / TN;
override WGY: u32 = BM / TM;
override B_DTYPE: u32 = 0u;
// A is contiguous along k (A_CS == 1): invocations next to each other load neighbouring k.
override A_KFAST: bool = true;
// B is contiguous along n (B_CS == 1).
override B_NFAST: bool = true;

//!include matmul-strided
// gelu(C), when FLAGS has 4 (an MLP's fc layer: C, its pre-activation, is kept for the backward);
// a dummy otherwise.
@group(0) @binding(5) var<storage, read_write> H: array<f32>;

// k-major: As[kk * BM + r], Bs[kk * BN + c], so an invocation's TM rows (TN columns) are adjacent.
var<workgroup> As: array<S, BK * BM>;
var<workgroup> Bs: array<S, BK * BN>;

const MAX_T: u32 = 8u;

fn load_b_word(e: u32) -> u32 {
  if (B_DTYPE == DTYPE_F32) {
    return B[e];
  }
  return B[e >> 1u];
}

fn load_bias(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(bias[e]);
  }
  return half_of(bias[e >> 1u], e, B_DTYPE);
}

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  let a_base = u.a_off + z0 * u.A_B0 + z1 * u.A_B1;
  let b_base = u.b_off + z0 * u.B_B0 + z1 * u.B_B1;
  let threads = WGX * WGY;
  var acc: array<f32, MAX_T * MAX_T>;
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    // Stage A[m0 .. m0+BM, k0 .. k0+BK] and B[k0 .. k0+BK, n0 .. n0+BN]; zeros past the edges.
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
      if (m0 + r < u.M && k0 + kk < u.K) {
        v = A[a_base + (m0 + r) * u.A_RS + (k0 + kk) * u.A_CS];
      }
      As[kk * BM + r] = stage_a(v);
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
      var s = stage_a(0.0);
      if (k0 + kk < u.K && n0 + c < u.N) {
        let at = b_base + (k0 + kk) * u.B_RS + (n0 + c) * u.B_CS;
        s = stage_b(load_b_word(at), at);
      }
      Bs[kk * BN + c] = s;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<f32, MAX_T>;
      var b: array<f32, MAX_T>;
      for (var i = 0u; i < TM; i++) {
        a[i] = unstage(As[kk * BM + lid.y * TM + i]);
      }
      for (var j = 0u; j < TN; j++) {
        b[j] = unstage(Bs[kk * BN + lid.x * TN + j]);
      }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
          acc[i * TN + j] += a[i] * b[j];
        }
      }
    }
    workgroupBarrier();
  }
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var j = 0u; j < TN; j++) {
    let n = n0 + lid.x * TN + j;
    if (n >= u.N) { continue; }
    var add = 0.0;
    if ((u.FLAGS & 1u) != 0u) {
      add = load_bias(u.bias_off + n);
    }
    for (var i = 0u; i < TM; i++) {
      let m = m0 + lid.y * TM + i;
      if (m >= u.M) { continue; }
      let at = c_base + m * u.C_RS + n;
      let v = acc[i * TN + j] * u.alpha + add;
      C[at] = select(v, v + C[at], accumulate);
      if ((u.FLAGS & 4u) != 0u) {
        H[at] = gelu4(vec4<f32>(v)).x;
      }
    }
  }
}
