// Grouped-query attention's keys and values, repeated for the query heads that share them: a qkv of
// [rows, C + 2·G·hd] (q of H heads, k and v of G groups) becomes [rows, 3C], head h's k and v those
// of group h / (H / G), as transformers' repeat_kv does. The attention kernels then run as for one
// key and value head per query head. Backward (accumulated): q's grads as they are, each group's k
// and v grads the sum over its heads, in head order.

//!include grid

struct GqaUniforms { rows: u32, c: u32, hd: u32, groups: u32, rep: u32 }

@group(0) @binding(0) var<uniform> u: GqaUniforms;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // forward: compact qkv; backward: the expanded grad
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // forward: expanded qkv; backward: the compact grad (accumulated)

// Compact row width: C + 2 · G · hd.
fn width() -> u32 {
  return u.c + 2u * u.groups * u.hd;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * 3u * u.c) { return; }
  let r = i / (3u * u.c);
  let j = i % (3u * u.c);
  var src = j;
  if (j >= u.c) {
    let part = (j - u.c) / u.c;        // 0: k, 1: v
    let within = (j - u.c) % u.c;
    let group = within / u.hd / u.rep;
    src = u.c + part * u.groups * u.hd + group * u.hd + within % u.hd;
  }
  y[i] = x[r * width() + src];
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let w = width();
  if (i >= u.rows * w) { return; }
  let r = i / w;
  let j = i % w;
  if (j < u.c) {
    y[i] = y[i] + x[r * 3u * u.c + j];
    return;
  }
  let part = (j - u.c) / (u.groups * u.hd);
  let within = (j - u.c) % (u.groups * u.hd);
  let group = within / u.hd;
  let d = within % u.hd;
  var sum = 0.0;
  for (var k = 0u; k < u.rep; k++) {
    sum += x[r * 3u * u.c + u.c + part * u.c + (group * u.rep + k) * u.hd + d];
  }
  y[i] = y[i] + sum;
}
