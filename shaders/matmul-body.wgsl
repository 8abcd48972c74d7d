// Batched, strided matmul: C[z] = alpha * op(A[z]) @ op(B[z]) (+ bias) (+ C[z] when accumulating).
// Every operand is addressed by (row stride, column stride, two batch strides), so transposes and
// head-interleaved layouts (q, k, v inside one qkv tensor) are read in place, never copied.
// A is fp32; B and the bias may be params in fp32, bf16 or fp16 (B_DTYPE), held as u32 words.
//
// Each invocation computes ROWS rows x 4 columns (ROWS 16 or 32, a multiple of 8), stepping k four
// at a time. The rows belong to the workgroup, so every invocation needs the same A values. How it
// gets them is the including module's: `matmul-subgroup` has lane i of each subgroup load row
// (i mod 8) of each group of 8 and hands the values round with subgroupShuffle (CPU Vulkan drivers
// execute a storage-buffer load lane by lane, so this divides A's loads by 8 and nearly halves the
// kernel's time there); `matmul` loads them in every invocation. No invocation returns early
// (shuffles need all lanes).
// Per k, an invocation loads ROWS / 8 values of A and 4 of B for 4 * ROWS multiply-adds: on a CPU
// driver, where those lane-by-lane loads are the cost, 32 rows run 1.3-1.7x as fast as 16 (measured
// on lavapipe; 48 and 64 are slower, their arrays no longer fit the compiler's registers).
// The rows live in arrays indexed by loops of constant trip count, which compilers unroll: the same
// speed as 16 or 32 named variables on lavapipe, and a quarter of the compile time.
// Operands contiguous in the direction read are read as vec4s (A_VEC: A along k; B_MODE 1: B along
// n; B_MODE 2: B along k), the rest element by element; C is stored as vec4s where it lines up
// (C_VEC), which matters most for the attention's short k loops (one store or read-modify-write per
// four columns instead of four lane-by-lane ones).
//
// The including module provides
//   fn row_quad(r: u32, mine: vec4<f32>, a_at: u32, mb: u32) -> vec4<f32>   // A[row r, k .. k+3]
//   fn row_value(r: u32, mine: f32, a_at: u32, mb: u32) -> f32               // A[row r, k]
// where `mine` is what this invocation loaded for its own row of r's group (row 8 * (r / 8) +
// lane mod 8), a_at is A's offset of (row 0, k) and mb the block's first row.

//!include half

override WG: u32 = 64;
override ROWS: u32 = 16u;
override B_DTYPE: u32 = 0u;
override A_VEC: bool = false;
override B_MODE: u32 = 0u;
override C_VEC: bool = false;

// Sizes, strides and flags are uniforms, not pipeline constants: one pipeline serves every shape.
// On lavapipe a pipeline per shape cost ~2 s of LLVM compile each (a cold GPT step 59 s, against
// 10 s this way, equal step time warm); only what changes the code's form is a constant.

//!include matmul-strided
// The same data as vec4s (bound to a dummy when the operand is read element by element).
@group(0) @binding(5) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> B4: array<vec4<f32>>;
// C as vec4s (C_VEC: N, C's start and strides multiples of 4); C or C4, the other bound to a dummy.
@group(0) @binding(7) var<storage, read_write> C4: array<vec4<f32>>;

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
  return vec4<f32>(b_at(b0), b_at(b1), b_at(b2), b_at(b3));
}

fn block_row(mb: u32, r: u32) -> u32 {
  return select(mb + r, min(mb + r, u.M - 1u), u.M < ROWS);
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

// The largest ROWS (the arrays' size) and groups of 8 rows.
const MAX_ROWS: u32 = 32u;
const MAX_GROUPS: u32 = 4u;

// The kernel; the including module's entry point passes the subgroup lane (0 without subgroups).
fn matmul(wid: vec3<u32>, lid: u32, lane: u32) {
  let n0 = (wid.x * WG + lid) * 4u;
  let m0 = wid.y * ROWS;
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  // Blocks past the edge move back inside (and store only what the previous block did not; max()
  // keeps these expressions from wrapping when M < ROWS or N < 4).
  let mb = select(m0, max(u.M, ROWS) - ROWS, u.M >= ROWS && m0 + ROWS > u.M);
  let nb = select(min(n0, max(u.N, 4u) - 4u), 0u, u.N < 4u);
  var a_at = u.a_off + z0 * u.A_B0 + z1 * u.A_B1;
  // This invocation's own rows, one in each group of 8, for the module to share.
  var own: array<u32, MAX_GROUPS>;
  for (var g = 0u; g < ROWS / 8u; g++) {
    own[g] = block_row(mb, 8u * g + lane % 8u) * u.A_RS;
  }
  let b_base = u.b_off + z0 * u.B_B0 + z1 * u.B_B1;
  // The four columns' starts in B (B_MODE 2 reads each along k; otherwise c0 walks B's rows).
  var c0 = b_base + block_col(nb, 0u) * u.B_CS;
  var c1 = b_base + block_col(nb, 1u) * u.B_CS;
  var c2 = b_base + block_col(nb, 2u) * u.B_CS;
  var c3 = b_base + block_col(nb, 3u) * u.B_CS;
  var acc: array<vec4<f32>, MAX_ROWS>;
  let ak = 4u * u.A_CS;
  let bk = select(4u * u.B_RS, 4u, B_MODE == 2u);
  var kk = 0u;
  for (; kk + 4u <= u.K; kk += 4u) {
    var mine: array<vec4<f32>, MAX_GROUPS>;
    for (var g = 0u; g < ROWS / 8u; g++) {
      mine[g] = a_quad(a_at + own[g]);
    }
    var q: array<vec4<f32>, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
      q[r] = row_quad(r, mine[r / 8u], a_at, mb);
    }
    for (var j = 0u; j < 4u; j++) {
      let v = b_step(c0, c1, c2, c3, j);
      for (var r = 0u; r < ROWS; r++) {
        acc[r] += q[r][j] * v;
      }
    }
    a_at += ak;
    c0 += bk; c1 += bk; c2 += bk; c3 += bk;
  }
  // The last k % 4 steps (only when no operand is read as vec4s along k).
  for (; kk < u.K; kk++) {
    var mine: array<f32, MAX_GROUPS>;
    for (var g = 0u; g < ROWS / 8u; g++) {
      mine[g] = A[a_at + own[g]];
    }
    let v = b_row(c0, c1, c2, c3);
    for (var r = 0u; r < ROWS; r++) {
      acc[r] += row_value(r, mine[r / 8u], a_at, mb) * v;
    }
    a_at += u.A_CS;
    c0 += u.B_RS; c1 += u.B_RS; c2 += u.B_RS; c3 += u.B_RS;
  }
  var add = vec4<f32>(0.0);
  if ((u.FLAGS & 1u) != 0u) {
    add = vec4<f32>(bias_at(u.bias_off + block_col(nb, 0u)), bias_at(u.bias_off + block_col(nb, 1u)),
                    bias_at(u.bias_off + block_col(nb, 2u)), bias_at(u.bias_off + block_col(nb, 3u)));
  }
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  for (var r = 0u; r < ROWS; r++) {
    store_row(c_base, mb + r, m0, nb, n0, acc[r] * u.alpha + add);
  }
}

fn store_row(c_base: u32, m: u32, m0: u32, nb: u32, n0: u32, v: vec4<f32>) {
  // Rows and columns a moved-back block shares with the previous one were stored there.
  if (m < m0 || m >= u.M) { return; }
  let at = c_base + m * u.C_RS;
  let accumulate = (u.FLAGS & 2u) != 0u;
  if (C_VEC) {
    // With N a multiple of 4 a block moves back only past the edge, onto another invocation's quad.
    if (nb == n0) {
      let q = (at + nb) >> 2u;
      if (accumulate) {
        C4[q] = C4[q] + v;
      } else {
        C4[q] = v;
      }
    }
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    let col = nb + j;
    if (col >= n0 && col < u.N) {
      C[at + col] = select(v[j], v[j] + C[at + col], accumulate);
    }
  }
}
