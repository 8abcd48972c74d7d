// Streaming copy, dst = src as vec4s, laid out like Adam's work (ITEMS vec4s per invocation, WG
// apart). It is the least a kernel can do per element, one read and one write, so the Adam
// benchmark runs it beside Adam and the copy command: it shows what a shader can stream on this
// device, which on CPU Vulkan drivers is far below what a copy command moves.

override WG: u32 = 64;
override ITEMS: u32 = 16;

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let n4 = arrayLength(&dst);
  let first = (wid.x + wid.y * nwg.x) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= n4) { return; }
    dst[i] = src[i];
  }
}
