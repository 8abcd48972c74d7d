enable f16;

// The tensor-core matmul's twin (matmul-mma-body.wgsl) for adapters without subgroup matrices: the
// same staging in f16 and the same epilogue, the fragments computed with plain arithmetic (each
// invocation a share of the tile's elements, f32 sums of f16 products, k in order). It runs where
// the real one cannot, so tests check the staging, the conversion rules and the epilogue anywhere.

//!include matmul-mma-body

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = tile_of(wid);
  for (var e = li; e < BM * BN; e += WG) {
    Cs[e] = 0.0;
  }
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    stage(t, k0, li);
    workgroupBarrier();
    for (var e = li; e < BM * BN; e += WG) {
      let r = e / BN;
      let c = e % BN;
      var sum = Cs[e];
      for (var kk = 0u; kk < BK; kk++) {
        sum += f32(As[r * BK + kk]) * f32(Bs[kk * BN + c]);
      }
      Cs[e] = sum;
    }
    workgroupBarrier();
  }
  epilogue(t, li);
}
