enable f16;
enable chromium_experimental_subgroup_matrix;
//!reflect matmul-mma-twin

// The tensor-core matmul (matmul-mma-body.wgsl): each of the 4 subgroups multiplies a 2 x 2 block of
// FM x FN fragments of C with subgroup matrices, the workgroup's quadrant (subgroup / 2, subgroup % 2).
// FM, FN and FK are defines: the adapter's f16 -> f32 subgroup-matrix shape.

//!include matmul-mma-body

alias Left = subgroup_matrix_left<f16, FK, FM>;
alias Right = subgroup_matrix_right<f16, FN, FK>;
alias Result = subgroup_matrix_result<f32, FN, FM>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let t = tile_of(wid);
  let sg = li / SG;
  let r0 = (sg / 2u) * 2u * FM; // this subgroup's first row and column in the tile
  let c0 = (sg % 2u) * 2u * FN;
  var acc00 = Result();
  var acc01 = Result();
  var acc10 = Result();
  var acc11 = Result();
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    stage(t, k0, li);
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk += FK) {
      let a0 = subgroupMatrixLoad<Left>(&As, r0 * BK + kk, false, BK);
      let a1 = subgroupMatrixLoad<Left>(&As, (r0 + FM) * BK + kk, false, BK);
      let b0 = subgroupMatrixLoad<Right>(&Bs, kk * BN + c0, false, BN);
      let b1 = subgroupMatrixLoad<Right>(&Bs, kk * BN + c0 + FN, false, BN);
      acc00 = subgroupMatrixMultiplyAccumulate(a0, b0, acc00);
      acc01 = subgroupMatrixMultiplyAccumulate(a0, b1, acc01);
      acc10 = subgroupMatrixMultiplyAccumulate(a1, b0, acc10);
      acc11 = subgroupMatrixMultiplyAccumulate(a1, b1, acc11);
    }
    workgroupBarrier();
  }
  subgroupMatrixStore(&Cs, r0 * BN + c0, acc00, false, BN);
  subgroupMatrixStore(&Cs, r0 * BN + c0 + FN, acc01, false, BN);
  subgroupMatrixStore(&Cs, (r0 + FM) * BN + c0, acc10, false, BN);
  subgroupMatrixStore(&Cs, (r0 + FM) * BN + c0 + FN, acc11, false, BN);
  workgroupBarrier();
  epilogue(t, li);
}
