// Gradient accumulation: dst += src (fp32), and fp16 or bf16 grads += fp32 partial grads rounded
// once, to nearest even (pairs of elements per invocation: two 16-bit grads share a u32 word).

//!include grid
//!include half

struct AccumulateUniforms {
  n: u32,         // elements (add_f32) or element pairs (add_to_f16, add_to_bf16)
  dst_shift: u32, // elements (add_f32) or words (add_to_f16, add_to_bf16) from the binding start to the data
  src_shift: u32, // elements
  scale: f32,
  a_shift: u32,   // elements (sum_f32_4's first operand)
}

@group(0) @binding(0) var<uniform> u: AccumulateUniforms;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst16: array<u32>;

@compute @workgroup_size(WG)
fn add_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  dst[u.dst_shift + i] = dst[u.dst_shift + i] + u.scale * src[u.src_shift + i];
}

@compute @workgroup_size(WG)
fn add_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  let old = unpack2x16float(dst16[u.dst_shift + i]);
  let s = u.src_shift + 2u * i;
  dst16[u.dst_shift + i] = to_f16(old.x + u.scale * src[s]) | (to_f16(old.y + u.scale * src[s + 1u]) << 16u);
}

@compute @workgroup_size(WG)
fn add_to_bf16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n) { return; }
  let old = dst16[u.dst_shift + i];
  let s = u.src_shift + 2u * i;
  let x = bitcast<f32>(old << 16u) + u.scale * src[s];
  let y = bitcast<f32>(old & 0xffff0000u) + u.scale * src[s + 1u];
  dst16[u.dst_shift + i] = (to_bf16(x) & 0xffffu) | (to_bf16(y) << 16u);
}

// add_f32 four elements at a time, for aligned data (n, both shifts multiples of 4; bindings of vec4s).
@group(0) @binding(4) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dst4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn add_f32_4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  let d = u.dst_shift / 4u + i;
  dst4[d] = dst4[d] + u.scale * src4[u.src_shift / 4u + i];
}

// dst = a + scale · src, four elements at a time, without reading dst (a new output: the residual
// add's forward, one pass instead of two adds into zeros).
@group(0) @binding(6) var<storage, read> a4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn sum_f32_4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.n / 4u) { return; }
  dst4[u.dst_shift / 4u + i] = a4[u.a_shift / 4u + i] + u.scale * src4[u.src_shift / 4u + i];
}
