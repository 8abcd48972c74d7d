// Dropout with a counter-based RNG: element i of a call with seed s belongs to sample
// sample0 + i / per_sample (a global sample index) at offset i % per_sample, and is kept when
// hash(hash(s ^ hash(sample)) ^ offset) / 2^24 >= p. So the backward pass regenerates the mask
// instead of storing it, the same (seed, sample, offset) gives the same mask on every adapter, and a
// sample's mask does not depend on which micro-batch, rank or data-parallel size processes it
// (test/nn/reference.ts has the host twin).

//!include grid

struct DropoutUniforms { n: u32, seed: u32, p: f32, scale: f32, per_sample: u32, sample0: u32 }

@group(0) @binding(0) var<uniform> u: DropoutUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // forward: x; backward: dy
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // forward: y; backward: dx (accumulated)

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

fn kept(i: u32) -> bool {
  let key = pcg(u.seed ^ pcg(u.sample0 + i / u.per_sample));
  let h = pcg(key ^ (i % u.per_sample));
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
