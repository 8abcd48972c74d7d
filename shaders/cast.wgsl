// fp32 main params -> 16-bit model params (bf16 or fp16 words, two per u32), round to nearest even;
// and back. fp16 main params (--main-params-dtype fp16) -> bf16 model params, and back. Lengths are
// even and ranges start at even elements (the layout's shards always do).

override WG: u32 = 256;

struct CastUniforms {
  pairs: u32,          // element pairs in this window
  shift_wide: u32,     // pairs from each binding's (aligned) start to its data
  shift_narrow: u32,
}

//!include half

@group(0) @binding(0) var<uniform> u: CastUniforms;
@group(0) @binding(1) var<storage, read_write> wide: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> narrow: array<u32>;
@group(0) @binding(3) var<storage, read_write> main16: array<u32>;


fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn f32_to_bf16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  let v = wide[i + u.shift_wide];
  narrow[i + u.shift_narrow] = (to_bf16(v.x) & 0xffffu) | (to_bf16(v.y) << 16u);
}

@compute @workgroup_size(WG)
fn bf16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  let w = narrow[i + u.shift_narrow];
  wide[i + u.shift_wide] = vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

@compute @workgroup_size(WG)
fn f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  let v = wide[i + u.shift_wide];
  narrow[i + u.shift_narrow] = to_f16(v.x) | (to_f16(v.y) << 16u);
}

@compute @workgroup_size(WG)
fn f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  wide[i + u.shift_wide] = unpack2x16float(narrow[i + u.shift_narrow]);
}

@compute @workgroup_size(WG)
fn f16_to_bf16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  let v = unpack2x16float(main16[i + u.shift_wide]);
  narrow[i + u.shift_narrow] = (to_bf16(v.x) & 0xffffu) | (to_bf16(v.y) << 16u);
}

@compute @workgroup_size(WG)
fn bf16_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= u.pairs) { return; }
  let w = narrow[i + u.shift_narrow];
  main16[i + u.shift_wide] = to_f16(bitcast<f32>(w << 16u)) | (to_f16(bitcast<f32>(w & 0xffff0000u)) << 16u);
}
