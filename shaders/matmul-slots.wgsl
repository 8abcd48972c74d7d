// How the tiled and tensor-core matmuls (matmul-tiled-body.wgsl, matmul-mma-body.wgsl) read their
// operands: in slots of 4 elements along the dimension each is contiguous in (A_KFAST: 4 k of one
// row of A, else 4 rows at one k; B_NFAST: 4 columns of B at one k, else 4 k of one column), one
// vec4 load per slot where the host saw every slot 16-byte aligned and wholly inside or outside the
// matrix (A_VEC, B_VEC: A from A4, fp32 B from B4, 16-bit B as two words), else 4 loads with their
// own edge checks. The including module defines BM, BN and BK (its tile) after matmul-strided.

// Tile rows of C per group in the order workgroups take their tiles (1: row by row).
override GROUP_M: u32 = 1u;

override A_KFAST: bool = true;
override B_NFAST: bool = true;
override A_VEC: bool = false;
override B_VEC: bool = false;

// A and fp32 B as vec4s (the host binds them when A_VEC / B_VEC; dummies otherwise).
@group(0) @binding(6) var<storage, read> A4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> B4: array<vec4<u32>>;

// Slot s of the A tile: (row, k) of its first element within the tile.
fn a_slot(s: u32) -> vec2<u32> {
  if (A_KFAST) {
    return vec2<u32>(s / (BK / 4u), (s % (BK / 4u)) * 4u);
  }
  return vec2<u32>((s % (BM / 4u)) * 4u, s / (BM / 4u));
}

// Slot s of the A tile whose first row is m0, at k0, of the batch at a_base.
fn load_a(m0: u32, a_base: u32, k0: u32, s: u32) -> vec4<f32> {
  let at = a_slot(s);
  let r = m0 + at.x;
  let k = k0 + at.y;
  let e = a_base + r * u.A_RS + k * u.A_CS;
  var v = vec4<f32>(0.0);
  if (A_VEC) {
    if (r < u.M && k < u.K) {
      v = A4[e / 4u];
    }
    return v;
  }
  let step = select(u.A_RS, u.A_CS, A_KFAST);
  for (var i = 0u; i < 4u; i++) {
    let ri = select(r + i, r, A_KFAST);
    let ki = select(k, k + i, A_KFAST);
    if (ri < u.M && ki < u.K) {
      v[i] = A[e + i * step];
    }
  }
  return v;
}

// Slot s of the B tile: (k, column) of its first element within the tile.
fn b_slot(s: u32) -> vec2<u32> {
  if (B_NFAST) {
    return vec2<u32>(s / (BN / 4u), (s % (BN / 4u)) * 4u);
  }
  return vec2<u32>((s % (BK / 4u)) * 4u, s / (BK / 4u));
}

// Slot s of the B tile whose first column is n0, at k0, of the batch at b_base, as f32 values.
fn load_b(n0: u32, b_base: u32, k0: u32, s: u32) -> vec4<f32> {
  let at = b_slot(s);
  let k = k0 + at.x;
  let c = n0 + at.y;
  let e = b_base + k * u.B_RS + c * u.B_CS;
  var v = vec4<f32>(0.0);
  if (B_VEC) {
    if (k < u.K && c < u.N) {
      if (B_DTYPE == DTYPE_F32) {
        v = bitcast<vec4<f32>>(B4[e / 4u]);
      } else {
        let lo = B[e >> 1u];
        let hi = B[(e >> 1u) + 1u];
        v = vec4<f32>(half_of(lo, 0u, B_DTYPE), half_of(lo, 1u, B_DTYPE), half_of(hi, 0u, B_DTYPE), half_of(hi, 1u, B_DTYPE));
      }
    }
    return v;
  }
  let step = select(u.B_RS, u.B_CS, B_NFAST);
  for (var i = 0u; i < 4u; i++) {
    let ki = select(k + i, k, B_NFAST);
    let ci = select(c, c + i, B_NFAST);
    if (ki < u.K && ci < u.N) {
      v[i] = b_at(e + i * step);
    }
  }
  return v;
}

// The tile of C (its row and column among the tiles) that workgroup (x, y) of the grid computes.
// GPUs start workgroups x fastest, so row by row every tile of a row runs at once and together they
// read all of B; when B exceeds the cache it streams from memory once per tile row. With GROUP_M
// rows per group, taken column by column, the workgroups running together read GROUP_M rows of A
// and a few columns of B (the grouped order of GEMM libraries). Every tile is taken exactly once;
// GROUP_M 1 gives (wid.y, wid.x).
fn tile_rc(wid: vec3<u32>) -> vec2<u32> {
  let cols = (u.N + BN - 1u) / BN;
  let rows = (u.M + BM - 1u) / BM;
  let lin = wid.y * cols + wid.x;
  let per_group = GROUP_M * cols;
  let first = (lin / per_group) * GROUP_M;
  let height = min(rows - first, GROUP_M);
  let within = lin % per_group;
  return vec2<u32>(first + within % height, within / height);
}
