// A key/value cache's append: the k and v of `rows` new positions, from a compact fused qkv
// [rows, width] (q of H heads, then k and v of G key heads: width = C + 2·kv, kv = G·hd), into
// the caches [positions, kv] from row `at`. One invocation per k value; it moves the v beside it too.

//!include grid

struct CacheUniforms { rows: u32, width: u32, c: u32, kv: u32, at: u32, qkv_off: u32 }

@group(0) @binding(0) var<uniform> u: CacheUniforms;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> keys: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;

@compute @workgroup_size(WG)
fn append(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.kv) { return; }
  let r = i / u.kv;
  let j = i % u.kv;
  let src = u.qkv_off + r * u.width + u.c + j;
  let dst = (u.at + r) * u.kv + j;
  keys[dst] = qkv[src];
  values[dst] = qkv[src + u.kv];
}
