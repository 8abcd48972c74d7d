// Batched, strided matmul: C[z] = alpha * op(A[z]) @ op(B[z]) (+ bias) (+ C[z] when accumulating).
// Every operand is addressed by (row stride, column stride, two batch strides), so transposes and
// head-interleaved layouts (q, k, v inside one qkv tensor) are read in place, never copied.
// A is fp32; B and the bias may be params in fp32, bf16 or fp16 (B_DTYPE), held as u32 words.
//
// Each invocation computes 8 rows x 4 columns, stepping k four at a time. The rows belong to the
// workgroup, so A's addresses are the same in every invocation (CPU Vulkan drivers load such a value
// once for all of them); no invocation returns early, which would make them look different. Operands
// contiguous in the direction read are read as vec4s (A_VEC: A along k; B_MODE 1: B along n;
// B_MODE 2: B along k), the rest element by element.

//!include half

override WG: u32 = 64;
override B_DTYPE: u32 = 0u;
override A_VEC: bool = false;
override B_MODE: u32 = 0u;

struct MatmulUniforms {
  m: u32, n: u32, k: u32, nb1: u32,           // sizes; batch z = z0 * nb1 + z1
  a_off: u32, a_rs: u32, a_cs: u32, a_b0: u32, a_b1: u32,
  b_off: u32, b_rs: u32, b_cs: u32, b_b0: u32, b_b1: u32,
  c_off: u32, c_rs: u32, c_b0: u32, c_b1: u32, // C's column stride is 1
  bias_off: u32,
  flags: u32,                                  // 1: add bias[n]; 2: accumulate into C
  alpha: f32,
}

@group(0) @binding(0) var<uniform> u: MatmulUniforms;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<u32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
// The same data as vec4s (bound to a dummy when the operand is read element by element).
@group(0) @binding(5) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> B4: array<vec4<f32>>;

fn load_b(e: u32) -> f32 {
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

// A[row at a, k .. k+3]
fn a_quad(a: u32) -> vec4<f32> {
  if (A_VEC) {
    return A4[a >> 2u];
  }
  return vec4<f32>(A[a], A[a + u.a_cs], A[a + 2u * u.a_cs], A[a + 3u * u.a_cs]);
}

// B[k, n .. n+3] for B_MODE 0 and 1 (b: element of B[k, n]).
fn b_row(b: u32, n_last: u32, n0: u32) -> vec4<f32> {
  if (B_MODE == 1u) {
    return B4[b >> 2u];
  }
  let cs = u.b_cs;
  return vec4<f32>(load_b(b), load_b(b + min(1u, n_last - n0) * cs), load_b(b + min(2u, n_last - n0) * cs), load_b(b + min(3u, n_last - n0) * cs));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n0 = (wid.x * WG + lid) * 4u;
  let m0 = wid.y * 8u;
  let z0 = wid.z / u.nb1;
  let z1 = wid.z % u.nb1;
  // Rows and columns past the edge read the last valid ones and are not stored. No invocation
  // returns early: A's addresses then stay the same across the workgroup, which CPU drivers turn into
  // one load for all invocations instead of one per invocation.
  let last_m = u.m - 1u;
  let last_n = u.n - 1u;
  let nl = min(n0, last_n & ~3u);
  let a_base = u.a_off + z0 * u.a_b0 + z1 * u.a_b1;
  var a0 = a_base + min(m0, last_m) * u.a_rs;
  var a1 = a_base + min(m0 + 1u, last_m) * u.a_rs;
  var a2 = a_base + min(m0 + 2u, last_m) * u.a_rs;
  var a3 = a_base + min(m0 + 3u, last_m) * u.a_rs;
  var a4 = a_base + min(m0 + 4u, last_m) * u.a_rs;
  var a5 = a_base + min(m0 + 5u, last_m) * u.a_rs;
  var a6 = a_base + min(m0 + 6u, last_m) * u.a_rs;
  var a7 = a_base + min(m0 + 7u, last_m) * u.a_rs;
  let b_base = u.b_off + z0 * u.b_b0 + z1 * u.b_b1;
  // B_MODE 2: the four columns' starts (each read along k).
  var c0 = b_base + nl * u.b_cs;
  var c1 = b_base + min(nl + 1u, last_n) * u.b_cs;
  var c2 = b_base + min(nl + 2u, last_n) * u.b_cs;
  var c3 = b_base + min(nl + 3u, last_n) * u.b_cs;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
  let ak = 4u * u.a_cs;
  let bk = 4u * u.b_rs;
  var kk = 0u;
  for (; kk + 4u <= u.k; kk += 4u) {
    var r0: vec4<f32>;
    var r1: vec4<f32>;
    var r2: vec4<f32>;
    var r3: vec4<f32>;
    if (B_MODE == 2u) {
      // Columns along k, turned into rows (free: vec4 components are separate registers on CPUs).
      let t0 = B4[c0 >> 2u];
      let t1 = B4[c1 >> 2u];
      let t2 = B4[c2 >> 2u];
      let t3 = B4[c3 >> 2u];
      r0 = vec4<f32>(t0.x, t1.x, t2.x, t3.x);
      r1 = vec4<f32>(t0.y, t1.y, t2.y, t3.y);
      r2 = vec4<f32>(t0.z, t1.z, t2.z, t3.z);
      r3 = vec4<f32>(t0.w, t1.w, t2.w, t3.w);
    } else {
      r0 = b_row(c0, last_n, nl);
      r1 = b_row(c0 + u.b_rs, last_n, nl);
      r2 = b_row(c0 + 2u * u.b_rs, last_n, nl);
      r3 = b_row(c0 + 3u * u.b_rs, last_n, nl);
    }
    var a = a_quad(a0);
    acc0 = acc0 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a1);
    acc1 = acc1 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a2);
    acc2 = acc2 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a3);
    acc3 = acc3 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a4);
    acc4 = acc4 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a5);
    acc5 = acc5 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a6);
    acc6 = acc6 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a = a_quad(a7);
    acc7 = acc7 + a.x * r0 + a.y * r1 + a.z * r2 + a.w * r3;
    a0 += ak; a1 += ak; a2 += ak; a3 += ak; a4 += ak; a5 += ak; a6 += ak; a7 += ak;
    if (B_MODE == 2u) {
      c0 += 4u; c1 += 4u; c2 += 4u; c3 += 4u;
    } else {
      c0 += bk;
    }
  }
  // The last k % 4 steps (only when no operand is read as vec4s along k).
  for (; kk < u.k; kk++) {
    let r = b_row(c0, last_n, nl);
    acc0 = acc0 + A[a0] * r;
    acc1 = acc1 + A[a1] * r;
    acc2 = acc2 + A[a2] * r;
    acc3 = acc3 + A[a3] * r;
    acc4 = acc4 + A[a4] * r;
    acc5 = acc5 + A[a5] * r;
    acc6 = acc6 + A[a6] * r;
    acc7 = acc7 + A[a7] * r;
    a0 += u.a_cs; a1 += u.a_cs; a2 += u.a_cs; a3 += u.a_cs; a4 += u.a_cs; a5 += u.a_cs; a6 += u.a_cs; a7 += u.a_cs;
    c0 += u.b_rs;
  }
  var add = vec4<f32>(0.0);
  if ((u.flags & 1u) != 0u) {
    add = vec4<f32>(load_bias(u.bias_off + nl), load_bias(u.bias_off + min(nl + 1u, last_n)),
                    load_bias(u.bias_off + min(nl + 2u, last_n)), load_bias(u.bias_off + min(nl + 3u, last_n)));
  }
  let c_base = u.c_off + z0 * u.c_b0 + z1 * u.c_b1;
  store_row(c_base, m0, n0, acc0 * u.alpha + add);
  store_row(c_base, m0 + 1u, n0, acc1 * u.alpha + add);
  store_row(c_base, m0 + 2u, n0, acc2 * u.alpha + add);
  store_row(c_base, m0 + 3u, n0, acc3 * u.alpha + add);
  store_row(c_base, m0 + 4u, n0, acc4 * u.alpha + add);
  store_row(c_base, m0 + 5u, n0, acc5 * u.alpha + add);
  store_row(c_base, m0 + 6u, n0, acc6 * u.alpha + add);
  store_row(c_base, m0 + 7u, n0, acc7 * u.alpha + add);
}

fn store_row(c_base: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m >= u.m || n0 >= u.n) { return; }
  let at = c_base + m * u.c_rs + n0;
  let accumulate = (u.flags & 2u) != 0u;
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j < u.n) {
      C[at + j] = select(v[j], v[j] + C[at + j], accumulate);
    }
  }
}
