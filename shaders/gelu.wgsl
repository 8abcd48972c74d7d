// GELU, tanh form (GPT-2's): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

//!include grid
//!include gelu-math

struct GeluUniforms { n: u32 }

@group(0) @binding(0) var<uniform> u: GeluUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // forward: y; backward: dx (accumulated)
@group(0) @binding(3) var<storage, read> dy: array<f32>;       // backward only

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  let v = x[i];
  y[i] = 0.5 * v * (1.0 + tanh(inner(v)));
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  let v = x[i];
  let t = tanh(inner(v));
  let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
  y[i] = y[i] + dy[i] * d;
}

// The same four elements at a time, for data whose length is a multiple of 4 (bindings of vec4s).
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> dy4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  y4[i] = gelu4(x4[i]);
}

@compute @workgroup_size(WG)
fn backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  y4[i] = y4[i] + dy4[i] * gelu_grad4(x4[i]);
}

// ---- the MLP's bias + GELU backward in one pass (linearGelu in src/nn/ops.ts) ----
// For each column quad (an invocation), over every row: dpre = dh · gelu'(pre), stored into the
// pre-activation's grad (added to it when ACCUMULATE), and summed down the column into the fc bias's
// grad: the column sums a separate pass over dpre would make. Lanes take neighbouring quads, so each
// row's loads are contiguous across the subgroup.

struct GeluBiasUniforms { rows: u32, cols: u32, bias_off: u32, chunk: u32 }

override ACCUMULATE: bool = false;

@group(0) @binding(7) var<uniform> gb: GeluBiasUniforms;
@group(0) @binding(8) var<storage, read> pre4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> dh4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> dpre4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> dbias: array<f32>;

// Column quad i of rows r0 .. r1: dpre stored (or added), and its sum over those rows returned.
fn gelu_bias_rows(i: u32, q: u32, r0: u32, r1: u32) -> vec4<f32> {
  var sum = vec4<f32>(0.0);
  for (var r = r0; r < r1; r++) {
    let e = r * q + i;
    let d = dh4[e] * gelu_grad4(pre4[e]);
    if (ACCUMULATE) {
      dpre4[e] = dpre4[e] + d;
    } else {
      dpre4[e] = d;
    }
    sum += d;
  }
  return sum;
}

@compute @workgroup_size(WG)
fn backward_bias4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let q = gb.cols / 4u;
  if (i >= q) { return; }
  let sum = gelu_bias_rows(i, q, 0u, gb.rows);
  for (var j = 0u; j < 4u; j++) {
    dbias[gb.bias_off + 4u * i + j] = dbias[gb.bias_off + 4u * i + j] + sum[j];
  }
}

// Split over chunks of `chunk` rows (hardware GPUs, src/nn/split-sums.ts), workgroups [column
// blocks, chunks]: the same dpre, and each chunk's bias partials in a row of partials, which
// colsum.finish4 adds into the bias grad.
@group(0) @binding(12) var<storage, read_write> part4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn backward_bias_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x * WG + lid;
  let q = gb.cols / 4u;
  if (i >= q) { return; }
  let r0 = wid.y * gb.chunk;
  let r1 = min(gb.rows, r0 + gb.chunk);
  part4[wid.y * q + i] = gelu_bias_rows(i, q, r0, r1);
}
