enable f16;
enable chromium_experimental_subgroup_matrix;
//!reflect matmul-mma-twin

// The tensor-core matmul (matmul-mma-body.wgsl): subgroup g multiplies its FR x FC fragments of C,
// rows from frag_origin(g, 0), with subgroup matrices; fragment f is row f / FC, column f % FC.
// Every load and store is of a whole staged fragment (offset 0, constant stride), picked by an index
// that derives from the subgroup_id builtin, so it is subgroup uniform, as the uniformity analysis
// requires. `main` holds 2 x 4 fragments in named variables; `frags` any FR x FC in arrays, under
// loops of constant count.
// FM, FN, FK (the adapter's f16 -> f32 subgroup-matrix shape), SGR, SGC, FR, FC, KS and PAD are
// defines.

//!include matmul-mma-body

alias Left = subgroup_matrix_left<f16, FK, FM>;
alias Right = subgroup_matrix_right<f16, FN, FK>;
alias Result = subgroup_matrix_result<f32, FN, FM>;

// Fragment f of every subgroup (subgroup g's is c) through its array of Cs to C.
fn finish(t: Tile, g: u32, f: u32, li: u32, c: Result) {
  subgroupMatrixStore<row_major>(&Cs[g], 0u, c, FN);
  workgroupBarrier();
  epilogue(t, f, li);
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) g: u32) {
  let t = tile_of(wid);
  // The subgroup's first fragment row of A and fragment column of B.
  let fa = first_frag(g).x;
  let fb = first_frag(g).y;
  var c0 = Result();
  var c1 = Result();
  var c2 = Result();
  var c3 = Result();
  var c4 = Result();
  var c5 = Result();
  var c6 = Result();
  var c7 = Result();
  var ra: Slots;
  var rb: Slots;
  load_slots(t, 0u, li, &ra, &rb);
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    stage_step(t, k0, li, &ra, &rb);
    for (var j = 0u; j < KS; j++) {
      let a0 = subgroupMatrixLoad<Left, row_major>(&As[fa * KS + j], 0u, SA);
      let a1 = subgroupMatrixLoad<Left, row_major>(&As[(fa + 1u) * KS + j], 0u, SA);
      let b0 = subgroupMatrixLoad<Right, row_major>(&Bs[j * NFB + fb], 0u, SB);
      let b1 = subgroupMatrixLoad<Right, row_major>(&Bs[j * NFB + fb + 1u], 0u, SB);
      let b2 = subgroupMatrixLoad<Right, row_major>(&Bs[j * NFB + fb + 2u], 0u, SB);
      let b3 = subgroupMatrixLoad<Right, row_major>(&Bs[j * NFB + fb + 3u], 0u, SB);
      c0 = subgroupMatrixMultiplyAccumulate(a0, b0, c0);
      c1 = subgroupMatrixMultiplyAccumulate(a0, b1, c1);
      c2 = subgroupMatrixMultiplyAccumulate(a0, b2, c2);
      c3 = subgroupMatrixMultiplyAccumulate(a0, b3, c3);
      c4 = subgroupMatrixMultiplyAccumulate(a1, b0, c4);
      c5 = subgroupMatrixMultiplyAccumulate(a1, b1, c5);
      c6 = subgroupMatrixMultiplyAccumulate(a1, b2, c6);
      c7 = subgroupMatrixMultiplyAccumulate(a1, b3, c7);
    }
    workgroupBarrier();
  }
  // Fragment by fragment through each subgroup's array of Cs.
  finish(t, g, 0u, li, c0);
  finish(t, g, 1u, li, c1);
  finish(t, g, 2u, li, c2);
  finish(t, g, 3u, li, c3);
  finish(t, g, 4u, li, c4);
  finish(t, g, 5u, li, c5);
  finish(t, g, 6u, li, c6);
  finish(t, g, 7u, li, c7);
}

@compute @workgroup_size(WG)
fn frags(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
         @builtin(subgroup_id) g: u32) {
  let t = tile_of(wid);
  let fa = first_frag(g).x;
  let fb = first_frag(g).y;
  var c: array<Result, FR * FC>;
  var ra: Slots;
  var rb: Slots;
  load_slots(t, 0u, li, &ra, &rb);
  for (var k0 = 0u; k0 < u.K; k0 += BK) {
    stage_step(t, k0, li, &ra, &rb);
    for (var kf = 0u; kf < KS; kf++) {
      var a: array<Left, FR>;
      for (var i = 0u; i < FR; i++) {
        a[i] = subgroupMatrixLoad<Left, row_major>(&As[(fa + i) * KS + kf], 0u, SA);
      }
      for (var j = 0u; j < FC; j++) {
        let b = subgroupMatrixLoad<Right, row_major>(&Bs[kf * NFB + fb + j], 0u, SB);
        for (var i = 0u; i < FR; i++) {
          c[i * FC + j] = subgroupMatrixMultiplyAccumulate(a[i], b, c[i * FC + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var f = 0u; f < FR * FC; f++) {
    finish(t, g, f, li, c[f]);
  }
}
