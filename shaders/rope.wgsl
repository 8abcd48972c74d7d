// Rotary position embedding (rope), in place on a fused qkv [rows, width]: q of every query head,
// then k of every key head (width C + 2·G·hd, G = H without grouped-query attention). In each,
// channel pairs (a, b) rotate by the angle of their row's position and their pair's frequency:
//   a' = a cos − b sin,  b' = b cos + a sin.
// The pairs are (i, i + rot/2) of the first rot channels (Megatron's rotate-half form), or
// (2i, 2i + 1) with INTERLEAVED. v and the channels past rot stay. The backward rotates the grads
// back (sign −1: the transpose of a rotation is its inverse). cos and sin come from the host, one
// pair per (position, frequency): WGSL's cos and sin are only accurate to 2^-11 within [-π, π].

//!include grid

override INTERLEAVED: bool = false;

struct RopeUniforms {
  rows: u32, t: u32, width: u32, hd: u32, half: u32,  // half: rot / 2 pairs per head
  heads: u32,  // q and k heads together: H + G, the first `heads` heads of a row
  qkv_off: u32, sign: f32,
}

@group(0) @binding(0) var<uniform> u: RopeUniforms;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;  // [t, half] of (cos, sin)
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;

@compute @workgroup_size(WG)
fn rotate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  // i = (row · heads + head) · half + pair; k's heads follow q's, so a row's first `heads` heads.
  if (i >= u.rows * u.heads * u.half) { return; }
  let pair = i % u.half;
  let head = (i / u.half) % u.heads;
  let row = i / (u.half * u.heads);
  let cs = table[(row % u.t) * u.half + pair];
  let base = u.qkv_off + row * u.width + head * u.hd;
  let ia = base + select(pair, 2u * pair, INTERLEAVED);
  let ib = select(ia + u.half, ia + 1u, INTERLEAVED);
  let a = qkv[ia];
  let b = qkv[ib];
  let s = u.sign * cs.y;
  qkv[ia] = a * cs.x - b * s;
  qkv[ib] = b * cs.x + a * s;
}
