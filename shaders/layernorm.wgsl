// LayerNorm over the last dimension (eps inside the sqrt, biased variance, as torch):
// y = (x - mean) * rstd * w + b. Forward saves mean and rstd per row for the backward.
// With RMS, RMSNorm: no mean and no bias, y = x * rstd * w with rstd = 1 / sqrt(mean(x²) + eps);
// the backward drops mean(dxhat) with the mean. The weight is the stored one plus w_add: 1 for
// zero-centered weights (Megatron's --apply-layernorm-1p), else 0; dw is the same either way.
// The entry points ending in 4 do the same on vec4s, for widths that are a multiple of 4 and data
// at its bindings' starts: CPU Vulkan drivers load storage buffers lane by lane, so a quarter of the
// loads is most of the work saved (the fp32 params too as vec4s when W_VEC).

//!include grid
//!include half

override P_DTYPE: u32 = 0u;
override W_VEC: bool = false;
override RMS: bool = false;

struct LayerNormUniforms { rows: u32, c: u32, w_off: u32, b_off: u32, eps: f32, dw_off: u32, db_off: u32, which: u32, chunk: u32, w_add: f32 }

@group(0) @binding(0) var<uniform> u: LayerNormUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;      // forward: y; backward dx: dx (accumulated)
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;  // mean, rstd per row

fn load_w(e: u32) -> f32 {
  if (P_DTYPE == DTYPE_F32) {
    return bitcast<f32>(w[e]);
  }
  return half_of(w[e >> 1u], e, P_DTYPE);
}

// The weight at column i.
fn weight1(i: u32) -> f32 {
  return load_w(u.w_off + i) + u.w_add;
}

// The bias at column i (none with RMS).
fn bias1(i: u32) -> f32 {
  if (RMS) { return 0.0; }
  return load_w(u.b_off + i);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.c;
  var sum = 0.0;
  for (var i = 0u; i < u.c; i++) { sum += x[base + i]; }
  let mean = select(sum / f32(u.c), 0.0, RMS);
  var sq = 0.0;
  for (var i = 0u; i < u.c; i++) { let d = x[base + i] - mean; sq += d * d; }
  let rstd = 1.0 / sqrt(sq / f32(u.c) + u.eps);
  for (var i = 0u; i < u.c; i++) {
    y[base + i] = (x[base + i] - mean) * rstd * weight1(i) + bias1(i);
  }
  stats[2u * r] = mean;
  stats[2u * r + 1u] = rstd;
}

@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;  // dw and/or db (u.which: 1 dw, 2 db)

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w.
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.c;
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var i = 0u; i < u.c; i++) {
    let g = dy[base + i] * weight1(i);
    s1 += g;
    s2 += g * (x[base + i] - mean) * rstd;
  }
  s1 = select(s1 / f32(u.c), 0.0, RMS);
  s2 = s2 / f32(u.c);
  for (var i = 0u; i < u.c; i++) {
    let xhat = (x[base + i] - mean) * rstd;
    let g = dy[base + i] * weight1(i);
    y[base + i] = y[base + i] + rstd * (g - s1 - xhat * s2);
  }
}

// dw[i] += sum_r dy * xhat, db[i] += sum_r dy: one invocation per column.
@compute @workgroup_size(WG)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.c) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var r = 0u; r < u.rows; r++) {
    let g = dy[r * u.c + i];
    dw += g * (x[r * u.c + i] - stats[2u * r]) * stats[2u * r + 1u];
    db += g;
  }
  if ((u.which & 1u) != 0u) { grad[u.dw_off + i] = grad[u.dw_off + i] + dw; }
  if ((u.which & 2u) != 0u) { grad[u.db_off + i] = grad[u.db_off + i] + db; }
}

// ---- the same on vec4s (c % 4 == 0; x, y, dy start at their bindings) ----

@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> w4: array<vec4<f32>>;  // fp32 params as vec4s (W_VEC), else unused

// w[e .. e+3]; e is a multiple of 4 when W_VEC.
fn load_w4(e: u32) -> vec4<f32> {
  if (W_VEC) {
    return w4[e >> 2u];
  }
  return vec4<f32>(load_w(e), load_w(e + 1u), load_w(e + 2u), load_w(e + 3u));
}

// The weight at columns i .. i+3.
fn weight4(i: u32) -> vec4<f32> {
  return load_w4(u.w_off + i) + u.w_add;
}

// The bias at columns i .. i+3 (none with RMS).
fn bias4(i: u32) -> vec4<f32> {
  if (RMS) { return vec4<f32>(0.0); }
  return load_w4(u.b_off + i);
}

fn sum4(v: vec4<f32>) -> f32 {
  return (v.x + v.y) + (v.z + v.w);
}

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  let base = r * q;
  var sum = vec4<f32>(0.0);
  for (var i = 0u; i < q; i++) { sum += x4[base + i]; }
  let mean = select(sum4(sum) / f32(u.c), 0.0, RMS);
  var sq = vec4<f32>(0.0);
  for (var i = 0u; i < q; i++) { let d = x4[base + i] - mean; sq += d * d; }
  let rstd = 1.0 / sqrt(sum4(sq) / f32(u.c) + u.eps);
  for (var i = 0u; i < q; i++) {
    y4[base + i] = (x4[base + i] - mean) * rstd * weight4(4u * i) + bias4(4u * i);
  }
  stats[2u * r] = mean;
  stats[2u * r + 1u] = rstd;
}

@compute @workgroup_size(WG)
fn backward_input4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  let base = r * q;
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  var s1 = vec4<f32>(0.0);
  var s2 = vec4<f32>(0.0);
  for (var i = 0u; i < q; i++) {
    let g = dy4[base + i] * weight4(4u * i);
    s1 += g;
    s2 += g * (x4[base + i] - mean) * rstd;
  }
  let m1 = select(sum4(s1) / f32(u.c), 0.0, RMS);
  let m2 = sum4(s2) / f32(u.c);
  for (var i = 0u; i < q; i++) {
    let xhat = (x4[base + i] - mean) * rstd;
    let g = dy4[base + i] * weight4(4u * i);
    y4[base + i] = y4[base + i] + rstd * (g - m1 - xhat * m2);
  }
}

// Four columns per invocation.
@compute @workgroup_size(WG)
fn backward_params4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let q = u.c / 4u;
  if (i >= q) { return; }
  var dw = vec4<f32>(0.0);
  var db = vec4<f32>(0.0);
  for (var r = 0u; r < u.rows; r++) {
    let g = dy4[r * q + i];
    dw += g * (x4[r * q + i] - stats[2u * r]) * stats[2u * r + 1u];
    db += g;
  }
  for (var j = 0u; j < 4u; j++) {
    let col = 4u * i + j;
    if ((u.which & 1u) != 0u) { grad[u.dw_off + col] = grad[u.dw_off + col] + dw[j]; }
    if ((u.which & 2u) != 0u) { grad[u.db_off + col] = grad[u.db_off + col] + db[j]; }
  }
}

// Split over chunks of `chunk` rows (hardware GPUs, src/nn/split-sums.ts), workgroups [column
// blocks, chunks]: each chunk's dw and db partials go to a row of 2c partials (dw, then db), which
// colsum.finish4 adds into the grads.
@group(0) @binding(14) var<storage, read_write> part4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn backward_params_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x * WG + lid;
  let q = u.c / 4u;
  if (i >= q) { return; }
  let r0 = wid.y * u.chunk;
  let r1 = min(u.rows, r0 + u.chunk);
  var dw = vec4<f32>(0.0);
  var db = vec4<f32>(0.0);
  for (var r = r0; r < r1; r++) {
    let g = dy4[r * q + i];
    dw += g * (x4[r * q + i] - stats[2u * r]) * stats[2u * r + 1u];
    db += g;
  }
  part4[wid.y * 2u * q + i] = dw;
  part4[wid.y * 2u * q + q + i] = db;
}

// ---- a residual add and the layernorm after it in one pass over each row (addLayerNorm) ----
// s = a + b, the residual stream's next value, is written while its mean is summed; the variance
// and the normalized output then read s back: the separate add's pass over a, b and s is saved.

@group(0) @binding(11) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> s4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add_forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  let base = r * q;
  var sum = vec4<f32>(0.0);
  for (var i = 0u; i < q; i++) {
    let v = a4[base + i] + b4[base + i];
    s4[base + i] = v;
    sum += v;
  }
  let mean = select(sum4(sum) / f32(u.c), 0.0, RMS);
  var sq = vec4<f32>(0.0);
  for (var i = 0u; i < q; i++) { let d = s4[base + i] - mean; sq += d * d; }
  let rstd = 1.0 / sqrt(sum4(sq) / f32(u.c) + u.eps);
  for (var i = 0u; i < q; i++) {
    y4[base + i] = (s4[base + i] - mean) * rstd * weight4(4u * i) + bias4(4u * i);
  }
  stats[2u * r] = mean;
  stats[2u * r + 1u] = rstd;
}

// ---- a workgroup per row (hardware GPUs: GpuContext.reductionKernel `split`) ----
// The entry points above give each row one invocation: a GPT-2 small step's 8,192 rows keep 8,192
// of a GPU's threads busy, each walking 192 vec4s of its row three times, its loads 3 KB from its
// neighbours'. Here ROW_LANES lanes share a row, lane l taking quads l, l + ROW_LANES, …, so a
// subgroup's loads are contiguous; the row's sums meet in workgroup memory in a fixed tree.

const ROW_LANES: u32 = 64u;
var<workgroup> row_red: array<vec2<f32>, ROW_LANES>;

// The sum of `v` over the workgroup's lanes, returned to every lane (from uniform control flow).
fn row_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
  row_red[lid] = v;
  workgroupBarrier();
  for (var s = ROW_LANES / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { row_red[lid] = row_red[lid] + row_red[lid + s]; }
    workgroupBarrier();
  }
  let total = row_red[0];
  workgroupBarrier(); // every lane has it before the next sum overwrites it
  return total;
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

// y = (v - mean) * rstd * w + b for quad i of a row's values v.
fn normalized4(v: vec4<f32>, i: u32, mean: f32, rstd: f32) -> vec4<f32> {
  return (v - mean) * rstd * weight4(4u * i) + bias4(4u * i);
}

fn store_stats(r: u32, lid: u32, mean: f32, rstd: f32) {
  if (lid == 0u) {
    stats[2u * r] = mean;
    stats[2u * r + 1u] = rstd;
  }
}

@compute @workgroup_size(ROW_LANES)
fn forward_rows4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = row_of(wid, nwg);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  var sum = vec4<f32>(0.0);
  for (var i = lid; i < q; i += ROW_LANES) { sum += x4[r * q + i]; }
  let mean = select(row_sum2(lid, vec2<f32>(sum4(sum), 0.0)).x / f32(u.c), 0.0, RMS);
  var sq = vec4<f32>(0.0);
  for (var i = lid; i < q; i += ROW_LANES) { let d = x4[r * q + i] - mean; sq += d * d; }
  let rstd = 1.0 / sqrt(row_sum2(lid, vec2<f32>(sum4(sq), 0.0)).x / f32(u.c) + u.eps);
  for (var i = lid; i < q; i += ROW_LANES) { y4[r * q + i] = normalized4(x4[r * q + i], i, mean, rstd); }
  store_stats(r, lid, mean, rstd);
}

@compute @workgroup_size(ROW_LANES)
fn add_forward_rows4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = row_of(wid, nwg);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  var sum = vec4<f32>(0.0);
  for (var i = lid; i < q; i += ROW_LANES) {
    let v = a4[r * q + i] + b4[r * q + i];
    s4[r * q + i] = v;
    sum += v;
  }
  let mean = select(row_sum2(lid, vec2<f32>(sum4(sum), 0.0)).x / f32(u.c), 0.0, RMS);
  var sq = vec4<f32>(0.0);
  for (var i = lid; i < q; i += ROW_LANES) { let d = s4[r * q + i] - mean; sq += d * d; }
  let rstd = 1.0 / sqrt(row_sum2(lid, vec2<f32>(sum4(sq), 0.0)).x / f32(u.c) + u.eps);
  for (var i = lid; i < q; i += ROW_LANES) { y4[r * q + i] = normalized4(s4[r * q + i], i, mean, rstd); }
  store_stats(r, lid, mean, rstd);
}

@compute @workgroup_size(ROW_LANES)
fn backward_input_rows4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = row_of(wid, nwg);
  if (r >= u.rows) { return; }
  let q = u.c / 4u;
  let mean = stats[2u * r];
  let rstd = stats[2u * r + 1u];
  var s1 = vec4<f32>(0.0);
  var s2 = vec4<f32>(0.0);
  for (var i = lid; i < q; i += ROW_LANES) {
    let g = dy4[r * q + i] * weight4(4u * i);
    s1 += g;
    s2 += g * (x4[r * q + i] - mean) * rstd;
  }
  let m = row_sum2(lid, vec2<f32>(sum4(s1), sum4(s2))) / f32(u.c);
  for (var i = lid; i < q; i += ROW_LANES) {
    let xhat = (x4[r * q + i] - mean) * rstd;
    let g = dy4[r * q + i] * weight4(4u * i);
    y4[r * q + i] = y4[r * q + i] + rstd * (g - select(m.x, 0.0, RMS) - xhat * m.y);
  }
}
