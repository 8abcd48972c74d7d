// Dropout with a counter-based RNG: element i of a call with seed s is kept when
// hash(s, i) / 2^24 >= p, so the backward pass regenerates the mask instead of storing it, and the
// same (seed, index) gives the same mask on every adapter (src/nn/rng.ts is the host twin).

//!include grid

struct DropoutUniforms { n: u32, seed: u32, p: f32, scale: f32 }

@group(0) @binding(0) var<uniform> u: DropoutUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // forward: x; backward: dy
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // forward: y; backward: dx (accumulated)

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn kept(i: u32) -> bool {
  let h = pcg(pcg(u.seed) ^ i);
  return f32(h >> 8u) * (1.0 / 16777216.0) >= u.p;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  y[i] = select(0.0, x[i] * u.scale, kept(i));
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  y[i] = y[i] + select(0.0, x[i] * u.scale, kept(i));
}
