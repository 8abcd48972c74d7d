// Causal softmax over attention scores, in place: rows of length T (keys), Q query rows per block;
// row r is query (r % Q) + qoff and sees keys 0..=(r % Q) + qoff; p = exp(scale * s - max) / sum,
// zero above the diagonal. Training: Q = T, qoff = 0. Decoding one token at position n - 1 against
// n cached keys: Q = 1, qoff = n - 1.
// Backward (in place on dP): dS = scale * P * (dP - sum_j P dP).

//!include grid

struct SoftmaxUniforms { rows: u32, t: u32, scale: f32, q: u32, qoff: u32 }

@group(0) @binding(0) var<uniform> u: SoftmaxUniforms;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;   // scores -> probabilities; dP -> dS
@group(0) @binding(2) var<storage, read> p: array<f32>;         // backward: probabilities

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.t;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  var m = -3.4e38;
  for (var j = 0u; j <= last; j++) { m = max(m, u.scale * s[base + j]); }
  var sum = 0.0;
  for (var j = 0u; j <= last; j++) {
    let e = exp(u.scale * s[base + j] - m);
    s[base + j] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var j = 0u; j < u.t; j++) { s[base + j] = select(0.0, s[base + j] * inv, j <= last); }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.t;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  var dot = 0.0;
  for (var j = 0u; j <= last; j++) { dot += p[base + j] * s[base + j]; }
  for (var j = 0u; j < u.t; j++) {
    s[base + j] = select(0.0, u.scale * p[base + j] * (s[base + j] - dot), j <= last);
  }
}
