// The matmul for products of a few rows (M <= 8; src/nn/matmul-rows.ts says how many go here on an
// adapter): C[z] = alpha * A[z] @ B[z] (+ bias) (+ C[z]), operands addressed like matmul-body.wgsl's
// (any strides, two batch levels; B and the bias in the param dtype). A decoder's single-token step
// is such a product for every weight; the kernels built for many rows compute whole blocks of 16 to
// 64 rows, so one row costs them as much as a block.
//
// Each invocation owns a quad of 4 columns for all ROWS rows (ROWS >= M, 1, 2, 4 or 8; the rows past
// M repeat row M - 1 and are not stored) and a share of k: lane s of the KS lanes on a quad takes
// the k quads s, s + KS, ... Per k quad it reads 4 x 4 elements of B and ROWS quads of A, for
// 16 ROWS multiply-adds, so every element of B is read once per product. With KS > 1 the lanes of a
// quad add up their sums through workgroup memory and the first stores them. K_FAST puts the KS
// lanes of one quad next to each other (B read along k: they read adjacent k quads of the same
// columns); otherwise the quads of one k share are neighbours (B read along n: adjacent columns).
// A CPU driver runs KS = 1 (no barrier, a SIMD lane per quad); a GPU splits k for more workgroups
// in flight and coalesced reads.
// Operands contiguous in the direction read are read as vec4s (A_VEC: A along k; B_MODE 1: B along
// n; B_MODE 2: B along k), the rest element by element; the k % 4 last steps go element by element.

//!include half

override WG: u32 = 8u;
override ROWS: u32 = 1u;
override KS: u32 = 1u;
override K_FAST: bool = false;
override B_DTYPE: u32 = 0u;
override A_VEC: bool = false;
override B_MODE: u32 = 0u;

//!include matmul-strided
@group(0) @binding(5) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> B4: array<vec4<f32>>;

const MAX_ROWS: u32 = 8u;
// Each lane's sums for the reduction over k shares (one entry when KS is 1: nothing is shared).
var<workgroup> partial: array<vec4<f32>, select(1u, WG * ROWS, KS > 1u)>;

// A[at, at + A_CS, at + 2 A_CS, at + 3 A_CS]
fn a_quad(at: u32) -> vec4<f32> {
  if (A_VEC) {
    return A4[at >> 2u];
  }
  return vec4<f32>(A[at], A[at + u.A_CS], A[at + 2u * u.A_CS], A[at + 3u * u.A_CS]);
}

// B[k + j, the four columns] for j = 0 .. 3, as four vec4s (one per k), given the columns' starts
// in B's row 0 (`cols`, clamped inside) and the quad's first column `nq` (for B_MODE 1).
fn b_quads(b_base: u32, k: u32, cols: vec4<u32>, nq: u32) -> array<vec4<f32>, 4> {
  var q: array<vec4<f32>, 4>;
  if (B_MODE == 1u) {
    for (var j = 0u; j < 4u; j++) {
      q[j] = B4[(b_base + (k + j) * u.B_RS + nq) >> 2u];
    }
  } else if (B_MODE == 2u) {
    let c0 = B4[(b_base + cols.x * u.B_CS + k) >> 2u];
    let c1 = B4[(b_base + cols.y * u.B_CS + k) >> 2u];
    let c2 = B4[(b_base + cols.z * u.B_CS + k) >> 2u];
    let c3 = B4[(b_base + cols.w * u.B_CS + k) >> 2u];
    for (var j = 0u; j < 4u; j++) {
      q[j] = vec4<f32>(c0[j], c1[j], c2[j], c3[j]);
    }
  } else {
    for (var j = 0u; j < 4u; j++) {
      q[j] = b_row(b_base + (k + j) * u.B_RS, cols);
    }
  }
  return q;
}

// B[row, the four columns] element by element, from the row's start.
fn b_row(row: u32, cols: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(b_at(row + cols.x * u.B_CS), b_at(row + cols.y * u.B_CS), b_at(row + cols.z * u.B_CS),
                   b_at(row + cols.w * u.B_CS));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let cw = WG / KS;
  let s = select(li / cw, li % KS, K_FAST);
  let quad = wid.x * cw + select(li % cw, li / KS, K_FAST);
  let n0 = quad * 4u;
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  let a_base = u.a_off + z0 * u.A_B0 + z1 * u.A_B1;
  let b_base = u.b_off + z0 * u.B_B0 + z1 * u.B_B1;
  // Columns past N read the last one (N need not be a multiple of 4; the stores skip them). B_MODE 1
  // has N a multiple of 4, so a quad past the edge reads the last quad.
  let last = u.N - 1u;
  let cols = min(vec4<u32>(n0, n0 + 1u, n0 + 2u, n0 + 3u), vec4<u32>(last));
  let nq = min(n0, u.N - 4u);
  var rows: array<u32, MAX_ROWS>;
  for (var r = 0u; r < ROWS; r++) {
    rows[r] = a_base + min(r, u.M - 1u) * u.A_RS;
  }
  var acc: array<vec4<f32>, MAX_ROWS>;
  let quads = u.K / 4u;
  for (var p = s; p < quads; p += KS) {
    let k = p * 4u;
    let b = b_quads(b_base, k, cols, nq);
    for (var r = 0u; r < ROWS; r++) {
      let a = a_quad(rows[r] + k * u.A_CS);
      acc[r] += a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3];
    }
  }
  if (s == 0u) {
    for (var k = quads * 4u; k < u.K; k++) {
      let b = b_row(b_base + k * u.B_RS, cols);
      for (var r = 0u; r < ROWS; r++) {
        acc[r] += A[rows[r] + k * u.A_CS] * b;
      }
    }
  }
  if (KS > 1u) {
    for (var r = 0u; r < ROWS; r++) {
      partial[li * ROWS + r] = acc[r];
    }
    workgroupBarrier();
    if (s == 0u) {
      for (var t = 1u; t < KS; t++) {
        let other = select(t * cw + li, li + t, K_FAST);
        for (var r = 0u; r < ROWS; r++) {
          acc[r] += partial[other * ROWS + r];
        }
      }
    }
  }
  if (s != 0u || n0 >= u.N) {
    return;
  }
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var r = 0u; r < min(ROWS, u.M); r++) {
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + j;
      if (n < u.N) {
        var v = acc[r][j] * u.alpha;
        if ((u.FLAGS & 1u) != 0u) {
          v += bias_at(u.bias_off + n);
        }
        let at = c_base + r * u.C_RS + n;
        C[at] = select(v, v + C[at], accumulate);
      }
    }
  }
}
