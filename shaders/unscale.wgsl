// fp16 grads -> fp32 main grads times 1/loss_scale, and a flag raised if any grad is inf or NaN
// (checked on the fp16 bits: WGSL may assume floats are finite, so no float comparison is trusted).
// Needs the shader-f16 feature; widening f16 to f32 is exact.

enable f16;

override WG: u32 = 256;

struct UnscaleUniforms {
  pairs: u32,
  inv_scale: f32,
  shift_main: u32,    // pairs from each binding's (aligned) start to its data
  shift_grads: u32,
}

@group(0) @binding(0) var<uniform> u: UnscaleUniforms;
@group(0) @binding(1) var<storage, read> grads: array<vec2<f16>>;
@group(0) @binding(2) var<storage, read_write> main_grads: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> found_inf: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn unscale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= u.pairs) { return; }
  let g = grads[i + u.shift_grads];
  let w = bitcast<u32>(g);
  if ((w & 0x7c00u) == 0x7c00u || ((w >> 16u) & 0x7c00u) == 0x7c00u) {
    atomicMax(&found_inf[0], 1u);
  }
  main_grads[i + u.shift_main] = vec2<f32>(g) * u.inv_scale;
}
