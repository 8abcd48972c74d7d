// Tensor-core matmul for the 16-bit precisions (--fp16, --bf16) on adapters with
// chromium-experimental-subgroup-matrix: C[z] = alpha * A[z] @ B[z] (+ bias) (+ C[z]), f16 inputs,
// f32 accumulation. Operands are addressed like matmul-body.wgsl's (any layout, batched).
//
// FM x FN x FK is the adapter's f16 -> f32 subgroup-matrix shape (16 x 16 x 16 on NVIDIA). A
// workgroup is SGR x SGC subgroups; each subgroup owns FR x FC fragments of C (FR FM rows, FC FN
// columns), so the workgroup computes a BM x BN = FR SGR FM x FC SGC FN tile (128 x 128 at 4 x 2
// subgroups of 2 x 4 fragments on NVIDIA). FM, FN, FK, SGR, SGC, FR, FC, KS and PAD are defines.
// For each step of BK = KS FK in k:
//   - Staging. The A and B tiles go into workgroup memory as f16, by the conversion rules of
//     matmul-tiled-f16.wgsl (saturate at ±65504, the device's rounding). Each operand is read in
//     slots of 4 elements along the dimension it is contiguous in, one vec4 load per slot where the
//     host saw it aligned (A_VEC / B_VEC), and the next step's slots are loaded into registers while
//     this step multiplies.
//   - Multiplying. Each subgroup loads FR left and FC right fragments per FK and accumulates FR FC
//     products.
// The tiles are staged fragment by fragment: each fragment of A (FM x FK) and of B (FK x FN) is an
// array of its own, row-major, each row followed by PAD halves (0 or 8; a fragment load reads 8 rows
// together, and 8 rows of 16 halves would fall in the same banks two by two). So every fragment load
// and store is at offset 0 of a whole array with a constant stride: Tint's robustness transform
// then leaves it as it is, where an offset it cannot bound puts the load behind a branch and a copy.
// The epilogue (alpha, bias, accumulation, gelu, edges) goes one fragment index at a time: every
// subgroup stores its fragment into its own FM x FN array of workgroup memory, then all invocations
// finish those.
//
// This file holds the interface, the staging and the epilogue; matmul-mma.wgsl multiplies with
// subgroup matrices and matmul-mma-twin.wgsl with plain arithmetic over the same staged tiles (the
// twin runs where subgroup matrices do not, so the staging and epilogue are tested everywhere).

//!include half
//!include gelu-math

override B_DTYPE: u32 = 0u;
override SG: u32 = 32u;

const NSUB: u32 = SGR * SGC;
const BM: u32 = FR * SGR * FM;
const BN: u32 = FC * SGC * FN;
const BK: u32 = KS * FK;
// Halves from one row of a staged fragment to the next, of A and of B.
const SA: u32 = FK + PAD;
const SB: u32 = FN + PAD;
// Fragments of the tile of B in a row.
const NFB: u32 = BN / FN;
const FRAG: u32 = FM * FN;
const F16_MAX: f32 = 65504.0;
// Invocations per workgroup, and slots each stages per step of A and of B.
override WG: u32 = NSUB * SG;
override A_PER: u32 = (BM * BK / 4u + WG - 1u) / WG;
override B_PER: u32 = (BK * BN / 4u + WG - 1u) / WG;
const MAX_SLOTS: u32 = 8u;

//!include matmul-strided
//!include matmul-slots
// gelu(C), when FLAGS has 4; a dummy otherwise.
@group(0) @binding(5) var<storage, read_write> H: array<f32>;

// The staged fragments (a_place and b_place say where each element goes): A's fragment of rows
// i FM .. and k j FK .. is As[i KS + j], B's of k j FK .. and columns i FN .. is Bs[j NFB + i]. Cs
// holds one fragment per subgroup for the epilogue.
var<workgroup> As: array<array<f16, FM * SA>, (BM / FM) * KS>;
var<workgroup> Bs: array<array<f16, FK * SB>, KS * NFB>;
var<workgroup> Cs: array<array<f32, FRAG>, NSUB>;

// Where element (r, kk) of the A tile is staged: its fragment and its place in it.
fn a_place(r: u32, kk: u32) -> vec2<u32> {
  return vec2<u32>((r / FM) * KS + kk / FK, (r % FM) * SA + kk % FK);
}

// Where element (kk, c) of the B tile is staged.
fn b_place(kk: u32, c: u32) -> vec2<u32> {
  return vec2<u32>((kk / FK) * NFB + c / FN, (kk % FK) * SB + c % FN);
}

fn stage(x: vec4<f32>) -> vec4<f16> {
  return vec4<f16>(clamp(x, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
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
  let rc = tile_rc(wid);
  return Tile(rc.x * BM, rc.y * BN, u.a_off + z0 * u.A_B0 + z1 * u.A_B1, u.b_off + z0 * u.B_B0 + z1 * u.B_B1,
              u.c_off + z0 * u.C_B0 + z1 * u.C_B1);
}

// A slot's 4 elements stay in one fragment: slots start at multiples of 4 along their dimension, and
// FM, FN and FK are multiples of 4.
fn store_a(s: u32, v: vec4<f32>) {
  let at = a_slot(s);
  let to = a_place(at.x, at.y);
  let h = stage(v);
  let step = select(SA, 1u, A_KFAST);
  for (var i = 0u; i < 4u; i++) {
    As[to.x][to.y + i * step] = h[i];
  }
}

fn store_b(s: u32, v: vec4<f32>) {
  let at = b_slot(s);
  let to = b_place(at.x, at.y);
  let h = stage(v);
  let step = select(SB, 1u, B_NFAST);
  for (var i = 0u; i < 4u; i++) {
    Bs[to.x][to.y + i * step] = h[i];
  }
}

// The slots of one step, held in registers between loading and storing.
alias Slots = array<vec4<f32>, MAX_SLOTS>;

fn load_slots(t: Tile, k0: u32, li: u32, ra: ptr<function, Slots>, rb: ptr<function, Slots>) {
  for (var j = 0u; j < A_PER; j++) {
    let s = li + j * WG;
    if (s < BM * BK / 4u) { (*ra)[j] = load_a(t.m0, t.a_base, k0, s); }
  }
  for (var j = 0u; j < B_PER; j++) {
    let s = li + j * WG;
    if (s < BK * BN / 4u) { (*rb)[j] = load_b(t.n0, t.b_base, k0, s); }
  }
}

fn store_slots(li: u32, ra: ptr<function, Slots>, rb: ptr<function, Slots>) {
  for (var j = 0u; j < A_PER; j++) {
    let s = li + j * WG;
    if (s < BM * BK / 4u) { store_a(s, (*ra)[j]); }
  }
  for (var j = 0u; j < B_PER; j++) {
    let s = li + j * WG;
    if (s < BK * BN / 4u) { store_b(s, (*rb)[j]); }
  }
}

// The top of step k0: its slots (loaded in the step before) into the tiles, then the next step's
// slots loaded into registers, in flight while this one multiplies. The multiplying ends with a
// barrier before the next step stores.
fn stage_step(t: Tile, k0: u32, li: u32, ra: ptr<function, Slots>, rb: ptr<function, Slots>) {
  store_slots(li, ra, rb);
  workgroupBarrier();
  if (k0 + BK < u.K) {
    load_slots(t, k0 + BK, li, ra, rb);
  }
}

// Subgroup g's first row and column of fragments in the tile (its fragment f, 0 .. FR FC - 1, is
// FR rows of FC from there).
fn first_frag(g: u32) -> vec2<u32> {
  return vec2<u32>((g / SGC) * FR, (g % SGC) * FC);
}

// Row and column in the tile of fragment f of subgroup g.
fn frag_origin(g: u32, f: u32) -> vec2<u32> {
  let at = first_frag(g) + vec2<u32>(f / FC, f % FC);
  return vec2<u32>(at.x * FM, at.y * FN);
}

// C = alpha * Cs + bias (+ C), inside the matrix, for fragment f of every subgroup (in Cs, one
// FM x FN row-major array per subgroup).
fn epilogue(t: Tile, f: u32, li: u32) {
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var e = li; e < NSUB * FRAG; e += WG) {
    let o = frag_origin(e / FRAG, f);
    let m = t.m0 + o.x + (e % FRAG) / FN;
    let n = t.n0 + o.y + e % FN;
    if (m >= u.M || n >= u.N) { continue; }
    var add = 0.0;
    if ((u.FLAGS & 1u) != 0u) {
      add = bias_at(u.bias_off + n);
    }
    let at = t.c_base + m * u.C_RS + n;
    let v = Cs[e / FRAG][e % FRAG] * u.alpha + add;
    C[at] = select(v, v + C[at], accumulate);
    if ((u.FLAGS & 4u) != 0u) {
      H[at] = gelu4(vec4<f32>(v)).x;
    }
  }
}
