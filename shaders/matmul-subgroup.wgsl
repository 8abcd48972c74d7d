enable subgroups;

// The matmul kernel (matmul-body.wgsl) with A shared through subgroups of at least GROUP lanes:
// lane i loads row (i mod GROUP) of each group of GROUP rows, and row r comes from lane
// (r mod GROUP).

//!include matmul-body

fn row_quad(r: u32, mine: vec4<f32>, a_at: u32, mb: u32) -> vec4<f32> {
  return subgroupShuffle(mine, r % GROUP);
}

fn row_value(r: u32, mine: f32, a_at: u32, mb: u32) -> f32 {
  return subgroupShuffle(mine, r % GROUP);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  matmul(wid, lid, lane);
}
