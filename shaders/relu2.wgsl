// Squared ReLU (Megatron's --squared-relu): y = max(x, 0)²; the backward adds dy · 2 max(x, 0) into dx.

//!include grid

struct Relu2Uniforms { n: u32 }

@group(0) @binding(0) var<uniform> u: Relu2Uniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;  // forward: y; backward: dx (accumulated)
@group(0) @binding(3) var<storage, read> dy: array<f32>;       // backward only

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  let r = max(x[i], 0.0);
  y[i] = r * r;
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  y[i] = y[i] + dy[i] * (2.0 * max(x[i], 0.0));
}
