// Batched, strided matmul: C[z] = alpha * op(A[z]) @ op(B[z]) (+ bias) (+ C[z] when accumulating).
// Every operand is addressed by (row stride, column stride, two batch strides), so transposes and
// head-interleaved layouts (q, k, v inside one qkv tensor) are read in place, never copied.
// A is fp32; B and the bias may be params in fp32, bf16 or fp16 (B_DTYPE), held as u32 words.
//
// Each invocation computes 16 rows x 4 columns, stepping k four at a time. The 16 rows belong to the
// workgroup, so every invocation needs the same A values. How it gets them is the including
// module's: `matmul-subgroup` has lane i of each subgroup load row (i mod 8) of each group of 8 and
// hands the values round with subgroupShuffle (CPU Vulkan drivers execute a storage-buffer load
// lane by lane, so this divides A's loads by 8 and nearly halves the kernel's time there);
// `matmul` loads them in every invocation. No invocation returns early (shuffles need all lanes).
// Operands contiguous in the direction read are read as vec4s (A_VEC: A along k; B_MODE 1: B along
// n; B_MODE 2: B along k), the rest element by element.
//
// The including module provides
//   fn row_quad(r: u32, mine: vec4<f32>, a_at: u32, mb: u32) -> vec4<f32>   // A[row r, k .. k+3]
//   fn row_value(r: u32, mine: f32, a_at: u32, mb: u32) -> f32               // A[row r, k]
// where `mine` is what this invocation loaded for its own row of r's group (row 8 * (r / 8) +
// lane mod 8), a_at is A's offset of (row 0, k) and mb the block's first row.

//!include half

override WG: u32 = 64;
override B_DTYPE: u32 = 0u;
override A_VEC: bool = false;
override B_MODE: u32 = 0u;

// Sizes, strides and flags are uniforms, not pipeline constants: one pipeline serves every shape.
// On lavapipe a pipeline per shape cost ~2 s of LLVM compile each (a cold GPT step 59 s, against
// 10 s this way, equal step time warm); only what changes the code's form is a constant.

struct MatmulUniforms {
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
  alpha: f32,
  M: u32,
  N: u32,
  K: u32,
  NB1: u32,
  A_RS: u32,
  A_CS: u32,
  A_B0: u32,
  A_B1: u32,
  B_RS: u32,
  B_CS: u32,
  B_B0: u32,
  B_B1: u32,
  C_RS: u32,
  C_B0: u32,
  C_B1: u32,
  FLAGS: u32,
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
  return vec4<f32>(A[a], A[a + u.A_CS], A[a + 2u * u.A_CS], A[a + 3u * u.A_CS]);
}

// B[k, n .. n+3] for B_MODE 0 and 1, given the four columns' elements in row k.
fn b_row(b0: u32, b1: u32, b2: u32, b3: u32) -> vec4<f32> {
  if (B_MODE == 1u) {
    return B4[b0 >> 2u];
  }
  return vec4<f32>(load_b(b0), load_b(b1), load_b(b2), load_b(b3));
}

fn block_row(mb: u32, r: u32) -> u32 {
  return select(mb + r, min(mb + r, u.M - 1u), u.M < 16u);
}

fn block_col(nb: u32, j: u32) -> u32 {
  return select(nb + j, min(nb + j, u.N - 1u), u.N < 4u);
}

// B[k + j, the four columns] for B_MODE 2 (columns read along k) or else (c* walk B's rows).
fn b_step(c0: u32, c1: u32, c2: u32, c3: u32, j: u32) -> vec4<f32> {
  if (B_MODE == 2u) {
    return vec4<f32>(B4[c0 >> 2u][j], B4[c1 >> 2u][j], B4[c2 >> 2u][j], B4[c3 >> 2u][j]);
  }
  return b_row(c0 + j * u.B_RS, c1 + j * u.B_RS, c2 + j * u.B_RS, c3 + j * u.B_RS);
}

// The kernel; the including module's entry point passes the subgroup lane (0 without subgroups).
fn matmul(wid: vec3<u32>, lid: u32, lane: u32) {
  let n0 = (wid.x * WG + lid) * 4u;
  let m0 = wid.y * 16u;
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  // Blocks past the edge move back inside (and store only what the previous block did not; max()
  // keeps these pipeline-constant expressions from wrapping when M < 16 or N < 4).
  let mb = select(m0, max(u.M, 16u) - 16u, u.M >= 16u && m0 + 16u > u.M);
  let nb = select(min(n0, max(u.N, 4u) - 4u), 0u, u.N < 4u);
  var a_at = u.a_off + z0 * u.A_B0 + z1 * u.A_B1;
  // This invocation's own rows, one in each group of 8, for the module to share.
  let own0 = block_row(mb, lane % 8u) * u.A_RS;
  let own1 = block_row(mb, 8u + lane % 8u) * u.A_RS;
  let b_base = u.b_off + z0 * u.B_B0 + z1 * u.B_B1;
  // The four columns' starts in B (B_MODE 2 reads each along k; otherwise c0 walks B's rows).
  var c0 = b_base + block_col(nb, 0u) * u.B_CS;
  var c1 = b_base + block_col(nb, 1u) * u.B_CS;
  var c2 = b_base + block_col(nb, 2u) * u.B_CS;
  var c3 = b_base + block_col(nb, 3u) * u.B_CS;
  var acc0 = vec4<f32>(0.0);
  var acc1 = vec4<f32>(0.0);
  var acc2 = vec4<f32>(0.0);
  var acc3 = vec4<f32>(0.0);
  var acc4 = vec4<f32>(0.0);
  var acc5 = vec4<f32>(0.0);
  var acc6 = vec4<f32>(0.0);
  var acc7 = vec4<f32>(0.0);
  var acc8 = vec4<f32>(0.0);
  var acc9 = vec4<f32>(0.0);
  var acc10 = vec4<f32>(0.0);
  var acc11 = vec4<f32>(0.0);
  var acc12 = vec4<f32>(0.0);
  var acc13 = vec4<f32>(0.0);
  var acc14 = vec4<f32>(0.0);
  var acc15 = vec4<f32>(0.0);
  let ak = 4u * u.A_CS;
  let bk = select(4u * u.B_RS, 4u, B_MODE == 2u);
  var kk = 0u;
  for (; kk + 4u <= u.K; kk += 4u) {
    let mine0 = a_quad(a_at + own0);
    let mine1 = a_quad(a_at + own1);
    let q0 = row_quad(0u, mine0, a_at, mb);
    let q1 = row_quad(1u, mine0, a_at, mb);
    let q2 = row_quad(2u, mine0, a_at, mb);
    let q3 = row_quad(3u, mine0, a_at, mb);
    let q4 = row_quad(4u, mine0, a_at, mb);
    let q5 = row_quad(5u, mine0, a_at, mb);
    let q6 = row_quad(6u, mine0, a_at, mb);
    let q7 = row_quad(7u, mine0, a_at, mb);
    let q8 = row_quad(8u, mine1, a_at, mb);
    let q9 = row_quad(9u, mine1, a_at, mb);
    let q10 = row_quad(10u, mine1, a_at, mb);
    let q11 = row_quad(11u, mine1, a_at, mb);
    let q12 = row_quad(12u, mine1, a_at, mb);
    let q13 = row_quad(13u, mine1, a_at, mb);
    let q14 = row_quad(14u, mine1, a_at, mb);
    let q15 = row_quad(15u, mine1, a_at, mb);
    for (var j = 0u; j < 4u; j++) {
      let v = b_step(c0, c1, c2, c3, j);
      acc0 += q0[j] * v; acc1 += q1[j] * v; acc2 += q2[j] * v; acc3 += q3[j] * v;
      acc4 += q4[j] * v; acc5 += q5[j] * v; acc6 += q6[j] * v; acc7 += q7[j] * v;
      acc8 += q8[j] * v; acc9 += q9[j] * v; acc10 += q10[j] * v; acc11 += q11[j] * v;
      acc12 += q12[j] * v; acc13 += q13[j] * v; acc14 += q14[j] * v; acc15 += q15[j] * v;
    }
    a_at += ak;
    c0 += bk; c1 += bk; c2 += bk; c3 += bk;
  }
  // The last k % 4 steps (only when no operand is read as vec4s along k).
  for (; kk < u.K; kk++) {
    let mine0 = A[a_at + own0];
    let mine1 = A[a_at + own1];
    let v = b_row(c0, c1, c2, c3);
    acc0 += row_value(0u, mine0, a_at, mb) * v;
    acc1 += row_value(1u, mine0, a_at, mb) * v;
    acc2 += row_value(2u, mine0, a_at, mb) * v;
    acc3 += row_value(3u, mine0, a_at, mb) * v;
    acc4 += row_value(4u, mine0, a_at, mb) * v;
    acc5 += row_value(5u, mine0, a_at, mb) * v;
    acc6 += row_value(6u, mine0, a_at, mb) * v;
    acc7 += row_value(7u, mine0, a_at, mb) * v;
    acc8 += row_value(8u, mine1, a_at, mb) * v;
    acc9 += row_value(9u, mine1, a_at, mb) * v;
    acc10 += row_value(10u, mine1, a_at, mb) * v;
    acc11 += row_value(11u, mine1, a_at, mb) * v;
    acc12 += row_value(12u, mine1, a_at, mb) * v;
    acc13 += row_value(13u, mine1, a_at, mb) * v;
    acc14 += row_value(14u, mine1, a_at, mb) * v;
    acc15 += row_value(15u, mine1, a_at, mb) * v;
    a_at += u.A_CS;
    c0 += u.B_RS; c1 += u.B_RS; c2 += u.B_RS; c3 += u.B_RS;
  }
  var add = vec4<f32>(0.0);
  if ((u.FLAGS & 1u) != 0u) {
    add = vec4<f32>(load_bias(u.bias_off + block_col(nb, 0u)), load_bias(u.bias_off + block_col(nb, 1u)),
                    load_bias(u.bias_off + block_col(nb, 2u)), load_bias(u.bias_off + block_col(nb, 3u)));
  }
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  store_row(c_base, mb + 0u, m0, nb, n0, acc0 * u.alpha + add);
  store_row(c_base, mb + 1u, m0, nb, n0, acc1 * u.alpha + add);
  store_row(c_base, mb + 2u, m0, nb, n0, acc2 * u.alpha + add);
  store_row(c_base, mb + 3u, m0, nb, n0, acc3 * u.alpha + add);
  store_row(c_base, mb + 4u, m0, nb, n0, acc4 * u.alpha + add);
  store_row(c_base, mb + 5u, m0, nb, n0, acc5 * u.alpha + add);
  store_row(c_base, mb + 6u, m0, nb, n0, acc6 * u.alpha + add);
  store_row(c_base, mb + 7u, m0, nb, n0, acc7 * u.alpha + add);
  store_row(c_base, mb + 8u, m0, nb, n0, acc8 * u.alpha + add);
  store_row(c_base, mb + 9u, m0, nb, n0, acc9 * u.alpha + add);
  store_row(c_base, mb + 10u, m0, nb, n0, acc10 * u.alpha + add);
  store_row(c_base, mb + 11u, m0, nb, n0, acc11 * u.alpha + add);
  store_row(c_base, mb + 12u, m0, nb, n0, acc12 * u.alpha + add);
  store_row(c_base, mb + 13u, m0, nb, n0, acc13 * u.alpha + add);
  store_row(c_base, mb + 14u, m0, nb, n0, acc14 * u.alpha + add);
  store_row(c_base, mb + 15u, m0, nb, n0, acc15 * u.alpha + add);
}

fn store_row(c_base: u32, m: u32, m0: u32, nb: u32, n0: u32, v: vec4<f32>) {
  // Rows and columns a moved-back block shares with the previous one were stored there.
  if (m < m0 || m >= u.M) { return; }
  let at = c_base + m * u.C_RS;
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var j = 0u; j < 4u; j++) {
    let col = nb + j;
    if (col >= n0 && col < u.N) {
      C[at + col] = select(v[j], v[j] + C[at + col], accumulate);
    }
  }
}
