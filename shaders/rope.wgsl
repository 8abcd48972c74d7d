// Rotary position embedding (rope), in place on a fused qkv [rows, 3C]: in q and k of every head,
// channel pairs (a, b) rotate by the angle of their row's position and their pair's frequency:
//   a' = a cos − b sin,  b' = b cos + a sin.
// The pairs are (i, i + rot/2) of the first rot channels (Megatron's rotate-half form), or
// (2i, 2i + 1) with INTERLEAVED. v and the channels past rot stay. The backward rotates the grads
// back (sign −1: the transpose of a rotation is its inverse). cos and sin come from the host, one
// pair per (position, frequency): WGSL's cos and sin are only accurate to 2^-11 within [-π, π].

//!include grid

override INTERLEAVED: bool = false;

struct RopeUniforms {
  rows: u32, t: u32, c: u32, hd: u32, half: u32,  // half: rot / 2 pairs per head
  qkv_off: u32, sign: f32,
}

@group(0) @binding(0) var<uniform> u: RopeUniforms;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;  // [t, half] of (cos, sin)
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;

@compute @workgroup_size(WG)
fn rotate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let heads = u.c / u.hd;
  // i = ((row · 2 + part) · heads + head) · half + pair; part 0 is q, 1 is k.
  if (i >= u.rows * 2u * heads * u.half) { return; }
  let pair = i % u.half;
  let head = (i / u.half) % heads;
  let part = (i / (u.half * heads)) % 2u;
  let row = i / (u.half * heads * 2u);
  let cs = table[(row % u.t) * u.half + pair];
  let base = u.qkv_off + row * 3u * u.c + part * u.c + head * u.hd;
  let ia = base + select(pair, 2u * pair, INTERLEAVED);
  let ib = select(ia + u.half, ia + 1u, INTERLEAVED);
  let a = qkv[ia];
  let b = qkv[ib];
  let s = u.sign * cs.y;
  qkv[ia] = a * cs.x - b * s;
  qkv[ib] = b * cs.x + a * s;
}
