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

// Sizes and strides are pipeline constants (one pipeline per shape: a model has a handful), so the
// driver compiles the address arithmetic down; offsets and alpha change per call and stay uniforms.
override M: u32 = 1u;
override N: u32 = 1u;
override K: u32 = 1u;
override NB1: u32 = 1u;
override A_RS: u32 = 1u;
override A_CS: u32 = 1u;
override A_B0: u32 = 1u;
override A_B1: u32 = 1u;
override B_RS: u32 = 1u;
override B_CS: u32 = 1u;
override B_B0: u32 = 1u;
override B_B1: u32 = 1u;
override C_RS: u32 = 1u;
override C_B0: u32 = 1u;
override C_B1: u32 = 1u;
override FLAGS: u32 = 1u;

struct MatmulUniforms {
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
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
  return vec4<f32>(A[a], A[a + A_CS], A[a + 2u * A_CS], A[a + 3u * A_CS]);
}

// B[k, n .. n+3] for B_MODE 0 and 1, given the four columns' elements in row k.
fn b_row(b0: u32, b1: u32, b2: u32, b3: u32) -> vec4<f32> {
  if (B_MODE == 1u) {
    return B4[b0 >> 2u];
  }
  return vec4<f32>(load_b(b0), load_b(b1), load_b(b2), load_b(b3));
}

fn block_row(mb: u32, r: u32) -> u32 {
  return select(mb + r, min(mb + r, M - 1u), M < 8u);
}

fn block_col(nb: u32, j: u32) -> u32 {
  return select(nb + j, min(nb + j, N - 1u), N < 4u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n0 = (wid.x * WG + lid) * 4u;
  let m0 = wid.y * 8u;
  let z0 = wid.z / NB1;
  let z1 = wid.z % NB1;
  // Blocks past the edge move back inside (and store only what the previous block did not; max()
  // keeps these pipeline-constant expressions from wrapping when M < 8 or N < 4). No
  // invocation returns early: A's addresses then stay the same across the workgroup, which CPU
  // drivers turn into one load for all invocations.
  let mb = select(m0, max(M, 8u) - 8u, M >= 8u && m0 + 8u > M);
  let nb = select(min(n0, max(N, 4u) - 4u), 0u, N < 4u);
  let a_base = u.a_off + z0 * A_B0 + z1 * A_B1;
  var a0 = a_base + block_row(mb, 0u) * A_RS;
  var a1 = a_base + block_row(mb, 1u) * A_RS;
  var a2 = a_base + block_row(mb, 2u) * A_RS;
  var a3 = a_base + block_row(mb, 3u) * A_RS;
  var a4 = a_base + block_row(mb, 4u) * A_RS;
  var a5 = a_base + block_row(mb, 5u) * A_RS;
  var a6 = a_base + block_row(mb, 6u) * A_RS;
  var a7 = a_base + block_row(mb, 7u) * A_RS;
  let b_base = u.b_off + z0 * B_B0 + z1 * B_B1;
  // The four columns' starts in B (B_MODE 2 reads each along k; otherwise c0 walks B's rows).
  var c0 = b_base + block_col(nb, 0u) * B_CS;
  var c1 = b_base + block_col(nb, 1u) * B_CS;
  var c2 = b_base + block_col(nb, 2u) * B_CS;
  var c3 = b_base + block_col(nb, 3u) * B_CS;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
  let ak = 4u * A_CS;
  let bk = 4u * B_RS;
  var kk = 0u;
  for (; kk + 4u <= K; kk += 4u) {
    // A's 8 x 4 block first (the same in every invocation), then B one row of 4 columns at a time:
    // few values live per invocation, which on CPU drivers is what keeps this fast.
    let q0 = a_quad(a0);
    let q1 = a_quad(a1);
    let q2 = a_quad(a2);
    let q3 = a_quad(a3);
    let q4 = a_quad(a4);
    let q5 = a_quad(a5);
    let q6 = a_quad(a6);
    let q7 = a_quad(a7);
    for (var j = 0u; j < 4u; j++) {
      var r: vec4<f32>;
      if (B_MODE == 2u) {
        r = vec4<f32>(B4[c0 >> 2u][j], B4[c1 >> 2u][j], B4[c2 >> 2u][j], B4[c3 >> 2u][j]);
      } else {
        r = b_row(c0 + j * B_RS, c1 + j * B_RS, c2 + j * B_RS, c3 + j * B_RS);
      }
      acc0 += q0[j] * r; acc1 += q1[j] * r; acc2 += q2[j] * r; acc3 += q3[j] * r;
      acc4 += q4[j] * r; acc5 += q5[j] * r; acc6 += q6[j] * r; acc7 += q7[j] * r;
    }
    a0 += ak; a1 += ak; a2 += ak; a3 += ak; a4 += ak; a5 += ak; a6 += ak; a7 += ak;
    if (B_MODE == 2u) {
      c0 += 4u; c1 += 4u; c2 += 4u; c3 += 4u;
    } else {
      c0 += bk; c1 += bk; c2 += bk; c3 += bk;
    }
  }
  // The last k % 4 steps (only when no operand is read as vec4s along k).
  for (; kk < K; kk++) {
    let r = b_row(c0, c1, c2, c3);
    acc0 = acc0 + A[a0] * r;
    acc1 = acc1 + A[a1] * r;
    acc2 = acc2 + A[a2] * r;
    acc3 = acc3 + A[a3] * r;
    acc4 = acc4 + A[a4] * r;
    acc5 = acc5 + A[a5] * r;
    acc6 = acc6 + A[a6] * r;
    acc7 = acc7 + A[a7] * r;
    a0 += A_CS; a1 += A_CS; a2 += A_CS; a3 += A_CS; a4 += A_CS; a5 += A_CS; a6 += A_CS; a7 += A_CS;
    c0 += B_RS; c1 += B_RS; c2 += B_RS; c3 += B_RS;
  }
  var add = vec4<f32>(0.0);
  if ((FLAGS & 1u) != 0u) {
    add = vec4<f32>(load_bias(u.bias_off + block_col(nb, 0u)), load_bias(u.bias_off + block_col(nb, 1u)),
                    load_bias(u.bias_off + block_col(nb, 2u)), load_bias(u.bias_off + block_col(nb, 3u)));
  }
  let c_base = u.c_off + z0 * C_B0 + z1 * C_B1;
  store_row(c_base, mb + 0u, m0, nb, n0, acc0 * u.alpha + add);
  store_row(c_base, mb + 1u, m0, nb, n0, acc1 * u.alpha + add);
  store_row(c_base, mb + 2u, m0, nb, n0, acc2 * u.alpha + add);
  store_row(c_base, mb + 3u, m0, nb, n0, acc3 * u.alpha + add);
  store_row(c_base, mb + 4u, m0, nb, n0, acc4 * u.alpha + add);
  store_row(c_base, mb + 5u, m0, nb, n0, acc5 * u.alpha + add);
  store_row(c_base, mb + 6u, m0, nb, n0, acc6 * u.alpha + add);
  store_row(c_base, mb + 7u, m0, nb, n0, acc7 * u.alpha + add);
}

fn store_row(c_base: u32, m: u32, m0: u32, nb: u32, n0: u32, v: vec4<f32>) {
  // Rows and columns a moved-back block shares with the previous one were stored there.
  if (m < m0 || m >= M) { return; }
  let at = c_base + m * C_RS;
  let accumulate = (FLAGS & 2u) != 0u;
  for (var j = 0u; j < 4u; j++) {
    let col = nb + j;
    if (col >= n0 && col < N) {
      C[at + col] = select(v[j], v[j] + C[at + col], accumulate);
    }
  }
}
