// Column sums into a grad: g[n] += sum_m dy[m, n] (a linear layer's bias grad). main4 sums four
// columns per invocation from vec4 loads (cols a multiple of 4): a quarter of the lane-by-lane loads
// on CPU drivers.
// Split (hardware GPUs, src/nn/split-sums.ts): `part` sums each chunk of `chunk` rows into a row of
// partials, workgroups [column blocks, chunks]; finish4 adds a column's partials into g in chunk
// order. Both orders are fixed, so the sums are the same on every run.

//!include grid

// part: rows of dy and rows per chunk; finish4: rows = chunks, and the partials of column quad i
// at parts4[p_off4 + chunk * p_stride4 + i].
struct ColsumUniforms { rows: u32, cols: u32, g_off: u32, chunk: u32, p_stride4: u32, p_off4: u32 }

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

@group(0) @binding(4) var<storage, read_write> part4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> parts4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x * WG + lid;
  let q = u.cols / 4u;
  if (i >= q) { return; }
  let r0 = wid.y * u.chunk;
  let r1 = min(u.rows, r0 + u.chunk);
  var sum = vec4<f32>(0.0);
  for (var m = r0; m < r1; m++) { sum += dy4[m * q + i]; }
  part4[wid.y * q + i] = sum;
}

@compute @workgroup_size(WG)
fn finish4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.cols / 4u) { return; }
  var sum = vec4<f32>(0.0);
  for (var m = 0u; m < u.rows; m++) { sum += parts4[u.p_off4 + m * u.p_stride4 + i]; }
  for (var j = 0u; j < 4u; j++) { g[u.g_off + 4u * i + j] = g[u.g_off + 4u * i + j] + sum[j]; }
}
