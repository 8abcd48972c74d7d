enable subgroups;

// The matmul kernel (matmul-body.wgsl) with A shared through subgroups of at least 8 lanes: lane i
// loads row (i mod 8) of each group of 8 rows, and row r comes from lane (r mod 8).

//!include matmul-body

fn row_quad(r: u32, mine: vec4<f32>, a_at: u32, mb: u32) -> vec4<f32> {
  return subgroupShuffle(mine, r % 8u);
}

fn row_value(r: u32, mine: f32, a_at: u32, mb: u32) -> f32 {
  return subgroupShuffle(mine, r % 8u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  matmul(wid, lid, lane);
}
