// Sum of squares of a float32 range, or of a 16-bit one (`sumsq_half`), for the global
// grad norm and the params norm. Each workgroup folds a grid-stride slice into one partial sum; the
// host adds the partials in float64. With ZEROS (--log-num-zeros-in-grad) each workgroup also counts
// the values that are exactly zero, into partials[NW + w] (NW: the partials of sums a window has).

override WG: u32 = 256;
override ZEROS: bool = false;
override NW: u32 = 256;

//!include half

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
  var z = 0.0;
  for (var i = w * WG + lid; i < u.n; i += stride) {
    let v = values[i + u.shift];
    s += v * v;
    if (ZEROS && v == 0.0) { z += 1.0; }
  }
  fold(s, w, lid);
  if (ZEROS) {
    fold(z, NW + w, lid);
  }
}

// 16-bit values, two a word (element e in the low half when e is even), stored as DTYPE (DTYPE_BF16
// or DTYPE_F16 of shaders/half.wgsl). Only `sumsq_half` uses it.
@group(0) @binding(1) var<storage, read> words: array<u32>;

override DTYPE: u32 = DTYPE_BF16;

@compute @workgroup_size(WG)
fn sumsq_half(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  let stride = nwg.x * nwg.y * WG;
  var s = 0.0;
  var z = 0.0;
  for (var i = w * WG + lid; i < u.n; i += stride) {
    let e = i + u.shift;
    let v = half_of(words[e / 2u], e, DTYPE);
    s += v * v;
    if (ZEROS && v == 0.0) { z += 1.0; }
  }
  fold(s, w, lid);
  if (ZEROS) {
    fold(z, NW + w, lid);
  }
}
