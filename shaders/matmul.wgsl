// The matmul kernel (matmul-body.wgsl) for devices without subgroups of 8 or more lanes: every
// invocation loads the block's A values itself (the body's own-row loads, `mine`, go unused here
// and are compiled away).

//!include matmul-body

fn row_quad(r: u32, mine: vec4<f32>, a_at: u32, mb: u32) -> vec4<f32> {
  return a_quad(a_at + block_row(mb, r) * u.A_RS);
}

fn row_value(r: u32, mine: f32, a_at: u32, mb: u32) -> f32 {
  return A[a_at + block_row(mb, r) * u.A_RS];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  matmul(wid, lid, 0u);
}
