enable f16;
enable chromium_experimental_subgroup_matrix;
//!reflect peak-mma-twin

//!include peak-mma-body

alias Left = subgroup_matrix_left<f16, FK, FM>;
alias Right = subgroup_matrix_right<f16, FN, FK>;
alias Result = subgroup_matrix_result<f32, FN, FM>;

alias Acc = array<Result, 8>;

// The step's 8 products: fragment f of C (row f / 4, column f % 4) += a[f / 4] b[f % 4].
fn step(a0: Left, a1: Left, b0: Right, b1: Right, b2: Right, b3: Right, c: ptr<function, Acc>) {
  (*c)[0] = subgroupMatrixMultiplyAccumulate(a0, b0, (*c)[0]);
  (*c)[1] = subgroupMatrixMultiplyAccumulate(a0, b1, (*c)[1]);
  (*c)[2] = subgroupMatrixMultiplyAccumulate(a0, b2, (*c)[2]);
  (*c)[3] = subgroupMatrixMultiplyAccumulate(a0, b3, (*c)[3]);
  (*c)[4] = subgroupMatrixMultiplyAccumulate(a1, b0, (*c)[4]);
  (*c)[5] = subgroupMatrixMultiplyAccumulate(a1, b1, (*c)[5]);
  (*c)[6] = subgroupMatrixMultiplyAccumulate(a1, b2, (*c)[6]);
  (*c)[7] = subgroupMatrixMultiplyAccumulate(a1, b3, (*c)[7]);
}

// Subgroup g of workgroup w keeps its fragments where w < keep.
fn keep(wid: vec3<u32>, nwg: vec3<u32>, g: u32, c: ptr<function, Acc>) {
  let w = flat_workgroup(wid, nwg);
  if (w < u.keep) {
    for (var f = 0u; f < 8u; f++) {
      subgroupMatrixStore<row_major>(&C, ((w * NSUB + g) * 8u + f) * FRAG, (*c)[f], FN);
    }
  }
}

@compute @workgroup_size(WG)
fn regs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_id) g: u32) {
  stage(li);
  let a0 = subgroupMatrixLoad<Left, row_major>(&As[0], 0u, SA);
  let a1 = subgroupMatrixLoad<Left, row_major>(&As[1], 0u, SA);
  let b0 = subgroupMatrixLoad<Right, row_major>(&Bs[0], 0u, SB);
  let b1 = subgroupMatrixLoad<Right, row_major>(&Bs[1], 0u, SB);
  let b2 = subgroupMatrixLoad<Right, row_major>(&Bs[2], 0u, SB);
  let b3 = subgroupMatrixLoad<Right, row_major>(&Bs[3], 0u, SB);
  var c: Acc;
  let iters = u.iters;
  for (var i = 0u; i < iters; i++) {
    step(a0, a1, b0, b1, b2, b3, &c);
  }
  keep(wid, nwg, g, &c);
}

@compute @workgroup_size(WG)
fn staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32, @builtin(subgroup_id) g: u32) {
  stage(li);
  var c: Acc;
  let iters = u.iters;
  let skew = u.skew;
  for (var i = 0u; i < iters; i++) {
    let j = (i + skew) % NS;
    step(subgroupMatrixLoad<Left, row_major>(&As[2u * j], 0u, SA),
         subgroupMatrixLoad<Left, row_major>(&As[2u * j + 1u], 0u, SA),
         subgroupMatrixLoad<Right, row_major>(&Bs[4u * j], 0u, SB),
         subgroupMatrixLoad<Right, row_major>(&Bs[4u * j + 1u], 0u, SB),
         subgroupMatrixLoad<Right, row_major>(&Bs[4u * j + 2u], 0u, SB),
         subgroupMatrixLoad<Right, row_major>(&Bs[4u * j + 3u], 0u, SB), &c);
  }
  keep(wid, nwg, g, &c);
}
