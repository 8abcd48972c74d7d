enable f16;

// The tensor-core matmul's twin (matmul-mma-body.wgsl) for adapters without subgroup matrices: the
// same staging in f16 and the same fragment-by-fragment epilogue, the products computed with plain
// arithmetic (each invocation a share of the tile's elements, f32 sums of f16 products, k in order).
// It runs where the real one cannot, so tests check the staging, the conversion rules, the fragment
// layout and the epilogue anywhere.

//!include matmul-mma-body

// Tile elements per invocation, at most (the host admits tiles within it).
const MAX_OWN: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  multiply(wid, li);
}

// matmul-mma.wgsl's entry for other fragment counts, with the same interface; the twin's arithmetic
// takes any.
@compute @workgroup_size(WG)
fn frags(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  multiply(wid, li);
}

fn multiply(wid: vec3<u32>, li: u32) {
  let t = tile_of(wid);
  var acc: array<f32, MAX_OWN>;
  var ra: Slots;
  var rb: Slots;
  load_slots(t, 0u, li, &ra, &rb);
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    stage_step(t, k0, li, &ra, &rb);
    for (var j = 0u; j * WG + li < BM * BN; j++) {
      let e = j * WG + li;
      let r = e / BN;
      let c = e % BN;
      for (var kk = 0u; kk < BK; kk++) {
        let a = a_place(r, kk);
        let b = b_place(kk, c);
        acc[j] += f32(As[a.x][a.y]) * f32(Bs[b.x][b.y]);
      }
    }
    workgroupBarrier();
  }
  // Each element into its fragment's place: subgroup (r / FR FM, c / FC FN), fragment
  // ((r / FM) % FR, (c / FN) % FC), row-major within it.
  for (var f = 0u; f < FR * FC; f++) {
    for (var j = 0u; j * WG + li < BM * BN; j++) {
      let e = j * WG + li;
      let r = e / BN;
      let c = e % BN;
      if (((r / FM) % FR) * FC + (c / FN) % FC == f) {
        let g = (r / (FR * FM)) * SGC + c / (FC * FN);
        Cs[g][(r % FM) * FN + c % FN] = acc[j];
      }
    }
    workgroupBarrier();
    epilogue(t, f, li);
    workgroupBarrier();
  }
}
