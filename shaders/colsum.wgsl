// Column sums into a grad: g[n] += sum_m dy[m, n] (a linear layer's bias grad).

//!include grid

struct ColsumUniforms { rows: u32, cols: u32, g_off: u32 }

@group(0) @binding(0) var<uniform> u: ColsumUniforms;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> g: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = flat_index(wid, nwg, lid);
  if (n >= u.cols) { return; }
  var sum = 0.0;
  for (var m = 0u; m < u.rows; m++) { sum += dy[m * u.cols + n]; }
  g[u.g_off + n] = g[u.g_off + n] + sum;
}
