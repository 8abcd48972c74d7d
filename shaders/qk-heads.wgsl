// The heads of q and k out of a fused qkv and back, for the norms of q and k (Megatron's
// --qk-layernorm): a qkv row r of width W = (H + 2·G)·hd holds q of H heads, then k and v of G
// groups. `gather` writes q's heads as rows [r·H + j, hd] of `q` and k's as rows [r·G + j, hd] of
// `k`; `scatter` writes them back into the q and k parts of `y`; `values` copies the v part of `x`
// into `y`'s. With ACC each adds to what the destination holds (the backwards), else overwrites it.

//!include grid

override ACC: bool = false;

struct HeadsUniforms { rows: u32, hd: u32, heads: u32, groups: u32 }

@group(0) @binding(0) var<uniform> u: HeadsUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // gather, values: a [rows, W] tensor
@group(0) @binding(2) var<storage, read_write> q: array<f32>;    // gather: written; scatter: read
@group(0) @binding(3) var<storage, read_write> k: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;    // scatter, values: a [rows, W] tensor

fn width() -> u32 {
  return (u.heads + 2u * u.groups) * u.hd;
}

// Element i of the rows' q and k heads (H + G of them a row): its index in the [rows, W] tensor,
// and in q (below rows·H·hd) or in k (at rows·H·hd and after).
fn place(i: u32) -> vec2<u32> {
  let per = (u.heads + u.groups) * u.hd;
  let r = i / per;
  let j = i % per;
  let head = j / u.hd;
  let d = j % u.hd;
  if (head < u.heads) {
    return vec2<u32>(r * width() + j, (r * u.heads + head) * u.hd + d);
  }
  return vec2<u32>(r * width() + j, u.rows * u.heads * u.hd + (r * u.groups + head - u.heads) * u.hd + d);
}

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * (u.heads + u.groups) * u.hd) { return; }
  let p = place(i);
  let v = x[p.x];
  let split = u.rows * u.heads * u.hd;
  if (p.y < split) {
    q[p.y] = select(v, q[p.y] + v, ACC);
  } else {
    k[p.y - split] = select(v, k[p.y - split] + v, ACC);
  }
}

@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * (u.heads + u.groups) * u.hd) { return; }
  let p = place(i);
  let split = u.rows * u.heads * u.hd;
  var v: f32;
  if (p.y < split) {
    v = q[p.y];
  } else {
    v = k[p.y - split];
  }
  y[p.x] = select(v, y[p.x] + v, ACC);
}

@compute @workgroup_size(WG)
fn values(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let n = u.groups * u.hd;
  if (i >= u.rows * n) { return; }
  let at = (i / n) * width() + (u.heads + u.groups) * u.hd + i % n;
  y[at] = select(x[at], y[at] + x[at], ACC);
}
