// Batched, strided matmul: C[z] = alpha * op(A[z]) @ op(B[z]) (+ bias) (+ C[z] when accumulating).
// Every operand is addressed by (row stride, column stride, two batch strides), so transposes and
// head-interleaved layouts (q, k, v inside one qkv tensor) are read in place, never copied.
// A is fp32; B and the bias may be params in fp32, bf16 or fp16 (B_DTYPE), held as u32 words.
//
// Each invocation computes TM rows x 4 columns; a workgroup covers TM rows x 4*WG columns, so the
// rows' A values are shared by the whole workgroup (one load feeds 4*WG products).

//!include half

override WG: u32 = 64;
override B_DTYPE: u32 = 0u;
const TM: u32 = 4u;

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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n0 = (wid.x * WG + lid) * 4u;
  let m0 = wid.y * TM;
  let z0 = wid.z / u.nb1;
  let z1 = wid.z % u.nb1;
  if (n0 >= u.n) { return; }
  // Rows and columns past the edge load from the last valid one and are not stored.
  let last_m = u.m - 1u;
  let last_n = u.n - 1u;
  let a_base = u.a_off + z0 * u.a_b0 + z1 * u.a_b1;
  var a0 = a_base + min(m0, last_m) * u.a_rs;
  var a1 = a_base + min(m0 + 1u, last_m) * u.a_rs;
  var a2 = a_base + min(m0 + 2u, last_m) * u.a_rs;
  var a3 = a_base + min(m0 + 3u, last_m) * u.a_rs;
  let b_base = u.b_off + z0 * u.b_b0 + z1 * u.b_b1;
  var b0 = b_base + n0 * u.b_cs;
  var b1 = b_base + min(n0 + 1u, last_n) * u.b_cs;
  var b2 = b_base + min(n0 + 2u, last_n) * u.b_cs;
  var b3 = b_base + min(n0 + 3u, last_n) * u.b_cs;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  for (var kk = 0u; kk < u.k; kk++) {
    let b = vec4<f32>(load_b(b0), load_b(b1), load_b(b2), load_b(b3));
    acc0 = fma(vec4<f32>(A[a0]), b, acc0);
    acc1 = fma(vec4<f32>(A[a1]), b, acc1);
    acc2 = fma(vec4<f32>(A[a2]), b, acc2);
    acc3 = fma(vec4<f32>(A[a3]), b, acc3);
    a0 += u.a_cs; a1 += u.a_cs; a2 += u.a_cs; a3 += u.a_cs;
    b0 += u.b_rs; b1 += u.b_rs; b2 += u.b_rs; b3 += u.b_rs;
  }
  var add = vec4<f32>(0.0);
  if ((u.flags & 1u) != 0u) {
    add = vec4<f32>(load_bias(u.bias_off + n0), load_bias(u.bias_off + min(n0 + 1u, last_n)),
                    load_bias(u.bias_off + min(n0 + 2u, last_n)), load_bias(u.bias_off + min(n0 + 3u, last_n)));
  }
  let c_base = u.c_off + z0 * u.c_b0 + z1 * u.c_b1;
  store_row(c_base, m0, n0, acc0 * u.alpha + add);
  store_row(c_base, m0 + 1u, n0, acc1 * u.alpha + add);
  store_row(c_base, m0 + 2u, n0, acc2 * u.alpha + add);
  store_row(c_base, m0 + 3u, n0, acc3 * u.alpha + add);
}

fn store_row(c_base: u32, m: u32, n0: u32, v: vec4<f32>) {
  if (m >= u.m) { return; }
  let at = c_base + m * u.c_rs + n0;
  let accumulate = (u.flags & 2u) != 0u;
  for (var j = 0u; j < 4u; j++) {
    if (n0 + j < u.n) {
      C[at + j] = select(v[j], v[j] + C[at + j], accumulate);
    }
  }
}
