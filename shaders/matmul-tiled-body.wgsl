// Matmul for hardware GPUs: C[z] = alpha * A[z] @ B[z] (+ bias) (+ C[z] when accumulating), with
// operands addressed like matmul-body.wgsl's (row stride, column stride, two batch strides, any
// layout in place).
//
// A workgroup of (BN / TN) x (BM / TM) invocations computes a BM x BN tile of C, stepping through k
// BK at a time:
//   - Staging. The A tile (BM x BK) and the B tile (BK x BN) go into workgroup memory k-major, as
//     vec4s of 4 rows (4 columns), read in slots of 4 elements (matmul-slots.wgsl) so that
//     neighbouring invocations read neighbouring words. The next step's slots are loaded into
//     registers while this step multiplies, so the loads' latency hides behind the arithmetic.
//   - Multiplying. Invocation (x, y) owns rows 4 (y + p WGY) .. +3 and columns 4 (x + q WGX) .. +3
//     for p < TM / 4, q < TN / 4: each k reads TM / 4 + TN / 4 vec4s of workgroup memory, and
//     neighbouring invocations read neighbouring vec4s (no bank conflicts), for TM x TN products.
// The tile shapes are pipeline constants, chosen per adapter and shape class by
// src/gpu/matmul-tuner.ts; TM and TN are 4 or 8.
//
// The including module sets the staging type `S` (f32, or f16 for 16-bit params: half the workgroup
// memory and its traffic, f32 accumulation either way) and provides
//   fn stage(x: vec4<f32>) -> vec4<S>    fn unstage(x: vec4<S>) -> vec4<f32>

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
// Slots each invocation stages per step, of A and of B.
override A_PER: u32 = (BM * BK / 4u + WGX * WGY - 1u) / (WGX * WGY);
override B_PER: u32 = (BK * BN / 4u + WGX * WGY - 1u) / (WGX * WGY);

//!include matmul-strided
//!include matmul-slots
// gelu(C), when FLAGS has 4 (an MLP's fc layer: C, its pre-activation, is kept for the backward);
// a dummy otherwise.
@group(0) @binding(5) var<storage, read_write> H: array<f32>;

// k-major vec4s: As[kk * BM / 4 + r / 4] holds rows r .. r+3 at kk; Bs[kk * BN / 4 + c / 4] columns c .. c+3.
var<workgroup> As: array<vec4<S>, BK * BM / 4u>;
var<workgroup> Bs: array<vec4<S>, BK * BN / 4u>;

// Slots per invocation per operand (the tuner admits tiles that need at most this many).
const MAX_SLOTS: u32 = 4u;
const MAX_T4: u32 = 2u; // TM / 4 and TN / 4 at most

struct Tile {
  m0: u32,
  n0: u32,
  a_base: u32,
  b_base: u32,
}

fn store_a(s: u32, v: vec4<f32>) {
  let at = a_slot(s);
  if (A_KFAST) {
    // 4 k of one row: one component of 4 vec4s.
    for (var i = 0u; i < 4u; i++) {
      As[(at.y + i) * (BM / 4u) + at.x / 4u][at.x % 4u] = stage(vec4<f32>(v[i])).x;
    }
  } else {
    As[at.y * (BM / 4u) + at.x / 4u] = stage(v);
  }
}

fn store_b(s: u32, v: vec4<f32>) {
  let at = b_slot(s);
  if (B_NFAST) {
    Bs[at.x * (BN / 4u) + at.y / 4u] = stage(v);
  } else {
    for (var i = 0u; i < 4u; i++) {
      Bs[(at.x + i) * (BN / 4u) + at.y / 4u][at.y % 4u] = stage(vec4<f32>(v[i])).x;
    }
  }
}

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  let rc = tile_rc(wid);
  let t = Tile(rc.x * BM, rc.y * BN, u.a_off + z0 * u.A_B0 + z1 * u.A_B1, u.b_off + z0 * u.B_B0 + z1 * u.B_B1);
  let threads = WGX * WGY;
  let a_slots = BM * BK / 4u;
  let b_slots = BK * BN / 4u;
  var ra: array<vec4<f32>, MAX_SLOTS>;
  var rb: array<vec4<f32>, MAX_SLOTS>;
  for (var j = 0u; j < A_PER; j++) {
    let s = li + j * threads;
    if (s < a_slots) { ra[j] = load_a(t.m0, t.a_base, 0u, s); }
  }
  for (var j = 0u; j < B_PER; j++) {
    let s = li + j * threads;
    if (s < b_slots) { rb[j] = load_b(t.n0, t.b_base, 0u, s); }
  }
  var acc: array<vec4<f32>, 4u * MAX_T4 * MAX_T4>;
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    for (var j = 0u; j < A_PER; j++) {
      let s = li + j * threads;
      if (s < a_slots) { store_a(s, ra[j]); }
    }
    for (var j = 0u; j < B_PER; j++) {
      let s = li + j * threads;
      if (s < b_slots) { store_b(s, rb[j]); }
    }
    workgroupBarrier();
    // The next step's slots, in flight while this one multiplies.
    if (k0 + BK < u.K) {
      for (var j = 0u; j < A_PER; j++) {
        let s = li + j * threads;
        if (s < a_slots) { ra[j] = load_a(t.m0, t.a_base, k0 + BK, s); }
      }
      for (var j = 0u; j < B_PER; j++) {
        let s = li + j * threads;
        if (s < b_slots) { rb[j] = load_b(t.n0, t.b_base, k0 + BK, s); }
      }
    }
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<vec4<f32>, MAX_T4>;
      var b: array<vec4<f32>, MAX_T4>;
      for (var p = 0u; p < TM / 4u; p++) {
        a[p] = unstage(As[kk * (BM / 4u) + lid.y + p * WGY]);
      }
      for (var q = 0u; q < TN / 4u; q++) {
        b[q] = unstage(Bs[kk * (BN / 4u) + lid.x + q * WGX]);
      }
      for (var p = 0u; p < TM / 4u; p++) {
        for (var i = 0u; i < 4u; i++) {
          for (var q = 0u; q < TN / 4u; q++) {
            let x = (p * 4u + i) * (TN / 4u) + q;
            acc[x] = fma(vec4<f32>(a[p][i]), b[q], acc[x]);
          }
        }
      }
    }
    workgroupBarrier();
  }
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var q = 0u; q < TN / 4u; q++) {
    for (var j = 0u; j < 4u; j++) {
      let n = t.n0 + (lid.x + q * WGX) * 4u + j;
      if (n >= u.N) { continue; }
      var add = 0.0;
      if ((u.FLAGS & 1u) != 0u) {
        add = bias_at(u.bias_off + n);
      }
      for (var p = 0u; p < TM / 4u; p++) {
        for (var i = 0u; i < 4u; i++) {
          let m = t.m0 + (lid.y + p * WGY) * 4u + i;
          if (m >= u.M) { continue; }
          let at = c_base + m * u.C_RS + n;
          let v = acc[(p * 4u + i) * (TN / 4u) + q][j] * u.alpha + add;
          C[at] = select(v, v + C[at], accumulate);
          if ((u.FLAGS & 4u) != 0u) {
            H[at] = gelu4(vec4<f32>(v)).x;
          }
        }
      }
    }
  }
}
