// GELU, tanh form (GPT-2's): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

//!include grid

struct GeluUniforms { n: u32 }

@group(0) @binding(0) var<uniform> u: GeluUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // forward: y; backward: dx (accumulated)
@group(0) @binding(3) var<storage, read> dy: array<f32>;       // backward only

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

fn inner(v: f32) -> f32 {
  // tanh saturates long before |15|; clamping keeps exp-based tanh implementations finite.
  return clamp(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v), -15.0, 15.0);
}

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

fn inner4(v: vec4<f32>) -> vec4<f32> {
  return clamp(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v), vec4<f32>(-15.0), vec4<f32>(15.0));
}

@compute @workgroup_size(WG)
fn forward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  let v = x4[i];
  y4[i] = 0.5 * v * (1.0 + tanh(inner4(v)));
}

@compute @workgroup_size(WG)
fn backward4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  let v = x4[i];
  let t = tanh(inner4(v));
  let d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
  y4[i] = y4[i] + dy4[i] * d;
}
