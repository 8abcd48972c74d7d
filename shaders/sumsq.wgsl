// Sum of squares of a float32 range, or of a 16-bit one (`sumsq_bf16`, `sumsq_f16`), for the global
// grad norm and the params norm. Each workgroup folds a grid-stride slice into one partial sum; the
// host adds the partials in float64.

override WG: u32 = 256;

struct SumSqUniforms {
  n: u32,
  shift: u32,   // elements from the binding's (aligned) start to the data
}

@group(0) @binding(0) var<uniform> u: SumSqUniforms;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

var<workgroup> acc: array<f32, WG>;

// The workgroup's partial sum from each invocation's `s`.
fn fold(s: f32, w: u32, lid: u32) {
  acc[lid] = s;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    if (lid < half) {
      acc[lid] += acc[lid + half];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    partials[w] = acc[0];
  }
}

@compute @workgroup_size(WG)
fn sumsq(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  let stride = nwg.x * nwg.y * WG;
  var s = 0.0;
  for (var i = w * WG + lid; i < u.n; i += stride) {
    let v = values[i + u.shift];
    s += v * v;
  }
  fold(s, w, lid);
}

// 16-bit values, two a word (element e in the low half when e is even). Only `sumsq_bf16` and
// `sumsq_f16` use it.
@group(0) @binding(1) var<storage, read> words: array<u32>;

@compute @workgroup_size(WG)
fn sumsq_bf16(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  let stride = nwg.x * nwg.y * WG;
  var s = 0.0;
  for (var i = w * WG + lid; i < u.n; i += stride) {
    let e = i + u.shift;
    let word = words[e / 2u];
    let v = bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
    s += v * v;
  }
  fold(s, w, lid);
}

@compute @workgroup_size(WG)
fn sumsq_f16(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  let stride = nwg.x * nwg.y * WG;
  var s = 0.0;
  for (var i = w * WG + lid; i < u.n; i += stride) {
    let e = i + u.shift;
    let pair = unpack2x16float(words[e / 2u]);
    let v = select(pair.x, pair.y, (e & 1u) == 1u);
    s += v * v;
  }
  fold(s, w, lid);
}
