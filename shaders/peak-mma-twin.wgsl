enable f16;

// peak-mma.wgsl's twin for adapters without subgroup matrices: the same interface, staging and
// result layout, each element of C summed with plain arithmetic (f32 sums of f16 products, k in
// order, step by step), so tests check the layout and the expected sums anywhere.

//!include peak-mma-body

fn product(a: u32, b: u32, row: u32, col: u32) -> f32 {
  var s = 0.0;
  for (var k = 0u; k < FK; k++) {
    s += f32(As[a][row * SA + k]) * f32(Bs[b][k * SB + col]);
  }
  return s;
}

fn sums(wid: vec3<u32>, nwg: vec3<u32>, li: u32, sets: u32) {
  stage(li);
  let w = flat_workgroup(wid, nwg);
  if (w >= u.keep) { return; }
  for (var e = li; e < NSUB * 8u * FRAG; e += WG) {
    let f = (e / FRAG) % 8u;
    let row = (e % FRAG) / FN;
    let col = e % FN;
    var c = 0.0;
    for (var i = 0u; i < u.iters; i++) {
      let j = (i + u.skew) % sets;
      c += product(2u * j + f / 4u, 4u * j + f % 4u, row, col);
    }
    C[w * NSUB * 8u * FRAG + e] = c;
  }
}

@compute @workgroup_size(WG)
fn regs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  sums(wid, nwg, li, 1u);
}

@compute @workgroup_size(WG)
fn staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
  sums(wid, nwg, li, NS);
}
