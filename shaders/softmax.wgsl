// Causal softmax over attention scores, in place: rows of length T (keys), Q query rows per block;
// row r is query (r % Q) + qoff and sees keys 0..=(r % Q) + qoff; p = exp(scale * s - max) / sum,
// zero above the diagonal. Training: Q = T, qoff = 0. Decoding one token at position n - 1 against
// n cached keys: Q = 1, qoff = n - 1.
// With DOCS a query sees keys from where its document starts (--reset-attention-mask): starts[b T + t]
// for query t of sample b, rows of HEADS heads per sample (training only: Q = T, qoff = 0).
// Backward (in place on dP): dS = scale * P * (dP - sum_j P dP).
// forward4 and backward4 do the same on vec4s (T a multiple of 4, rows at their binding's start):
// CPU drivers load storage buffers lane by lane, so a quarter of the loads.

//!include grid

struct SoftmaxUniforms { rows: u32, t: u32, scale: f32, q: u32, qoff: u32, heads: u32 }

override DOCS: bool = false;

@group(0) @binding(0) var<uniform> u: SoftmaxUniforms;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;   // scores -> probabilities; dP -> dS
@group(0) @binding(2) var<storage, read> p: array<f32>;         // backward: probabilities
@group(0) @binding(5) var<storage, read> starts: array<u32>;

// The first key row r's query sees.
fn first_key(r: u32) -> u32 {
  if (DOCS) { return starts[(r / (u.q * u.heads)) * u.t + r % u.q + u.qoff]; }
  return 0u;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.t;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  let lo = first_key(r);
  var m = -3.4e38;
  for (var j = lo; j <= last; j++) { m = max(m, u.scale * s[base + j]); }
  var sum = 0.0;
  for (var j = lo; j <= last; j++) {
    let e = exp(u.scale * s[base + j] - m);
    s[base + j] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var j = 0u; j < u.t; j++) { s[base + j] = select(0.0, s[base + j] * inv, j >= lo && j <= last); }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.t;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  let lo = first_key(r);
  var dot = 0.0;
  for (var j = lo; j <= last; j++) { dot += p[base + j] * s[base + j]; }
  for (var j = 0u; j < u.t; j++) {
    s[base + j] = select(0.0, u.scale * p[base + j] * (s[base + j] - dot), j >= lo && j <= last);
  }
}

@group(0) @binding(3) var<storage, read_write> s4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> p4: array<vec4<f32>>;

// Which of keys 4j .. 4j+3 a query that sees keys lo..=last sees.
fn seen4(j: u32, lo: u32, last: u32) -> vec4<bool> {
  let k = vec4<u32>(4u * j) + vec4<u32>(0u, 1u, 2u, 3u);
  return (k <= vec4<u32>(last)) & (k >= vec4<u32>(lo));
}

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let quads = u.t / 4u;
  let base = r * quads;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  let lo = first_key(r);
  let q0 = lo / 4u;
  let seen = last / 4u + 1u; // quads holding a key this query sees: q0 .. seen
  var m = vec4<f32>(-3.4e38);
  for (var j = q0; j < seen; j++) { m = max(m, select(vec4<f32>(-3.4e38), u.scale * s4[base + j], seen4(j, lo, last))); }
  let top = max(max(m.x, m.y), max(m.z, m.w));
  var sum = vec4<f32>(0.0);
  for (var j = q0; j < seen; j++) {
    let e = select(vec4<f32>(0.0), exp(u.scale * s4[base + j] - top), seen4(j, lo, last));
    s4[base + j] = e;
    sum += e;
  }
  let inv = 1.0 / ((sum.x + sum.y) + (sum.z + sum.w));
  for (var j = 0u; j < q0; j++) { s4[base + j] = vec4<f32>(0.0); }
  for (var j = q0; j < seen; j++) { s4[base + j] = s4[base + j] * inv; }
  for (var j = seen; j < quads; j++) { s4[base + j] = vec4<f32>(0.0); }
}

@compute @workgroup_size(WG)
fn backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let quads = u.t / 4u;
  let base = r * quads;
  let last = min(r % u.q + u.qoff, u.t - 1u);
  let lo = first_key(r);
  let q0 = lo / 4u;
  let seen = last / 4u + 1u;
  var dot = vec4<f32>(0.0);
  for (var j = q0; j < seen; j++) { dot += select(vec4<f32>(0.0), p4[base + j] * s4[base + j], seen4(j, lo, last)); }
  let total = (dot.x + dot.y) + (dot.z + dot.w);
  for (var j = 0u; j < q0; j++) { s4[base + j] = vec4<f32>(0.0); }
  for (var j = q0; j < seen; j++) {
    s4[base + j] = select(vec4<f32>(0.0), u.scale * p4[base + j] * (s4[base + j] - total), seen4(j, lo, last));
  }
  for (var j = seen; j < quads; j++) { s4[base + j] = vec4<f32>(0.0); }
}
