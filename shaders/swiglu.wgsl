// SwiGLU (Megatron's --swiglu): the fc layer's output x [rows, 2f] is a gate, its first f columns,
// and a value, its last f: y[r, j] = silu(x[r, j]) · x[r, f + j], silu(a) = a · sigmoid(a).
// Backward (accumulated into dx): d gate = dy · value · silu'(gate), d value = dy · silu(gate),
// silu'(a) = sigmoid(a) (1 + a (1 − sigmoid(a))). The entry points ending in 4 take four columns
// at a time (f a multiple of 4, data at its bindings' starts).

//!include grid

struct SwigluUniforms { rows: u32, f: u32 }

@group(0) @binding(0) var<uniform> u: SwigluUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // forward only
@group(0) @binding(3) var<storage, read> dy: array<f32>;        // backward only
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;  // backward only

fn sigmoid(a: f32) -> f32 {
  return 1.0 / (1.0 + exp(-a));
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.f) { return; }
  let at = (i / u.f) * 2u * u.f + i % u.f;
  let a = x[at];
  y[i] = a * sigmoid(a) * x[at + u.f];
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.f) { return; }
  let at = (i / u.f) * 2u * u.f + i % u.f;
  let a = x[at];
  let v = x[at + u.f];
  let s = sigmoid(a);
  dx[at] = dx[at] + dy[i] * v * s * (1.0 + a * (1.0 - s));
  dx[at + u.f] = dx[at + u.f] + dy[i] * a * s;
}

@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> dx4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let q = u.f / 4u;
  if (i >= u.rows * q) { return; }
  let at = (i / q) * 2u * q + i % q;
  let a = x4[at];
  y4[i] = a / (1.0 + exp(-a)) * x4[at + q];
}

@compute @workgroup_size(WG)
fn backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let q = u.f / 4u;
  if (i >= u.rows * q) { return; }
  let at = (i / q) * 2u * q + i % q;
  let a = x4[at];
  let v = x4[at + q];
  let s = 1.0 / (1.0 + exp(-a));
  let g = dy4[i];
  dx4[at] = dx4[at] + g * v * s * (1.0 + a * (1.0 - s));
  dx4[at + q] = dx4[at + q] + g * a * s;
}
