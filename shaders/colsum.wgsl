// Column sums into a grad: g[n] += sum_m dy[m, n] (a linear layer's bias grad). main4 sums four
// columns per invocation from vec4 loads (cols a multiple of 4): a quarter of the lane-by-lane loads
// on CPU drivers.

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

@group(0) @binding(3) var<storage, read> dy4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let q = u.cols / 4u;
  if (i >= q) { return; }
  var sum = vec4<f32>(0.0);
  for (var m = 0u; m < u.rows; m++) { sum += dy4[m * q + i]; }
  for (var j = 0u; j < 4u; j++) { g[u.g_off + 4u * i + j] = g[u.g_off + 4u * i + j] + sum[j]; }
}
