// fp32 main params -> 16-bit model params (bf16 words, two per u32), round to nearest even; and back.
// Lengths are even and ranges start at even elements (the layout's shards always do).

override WG: u32 = 256;

struct CastUniforms {
  pairs: u32,          // element pairs in this window
  shift_wide: u32,     // pairs from each binding's (aligned) start to its data
  shift_narrow: u32,
}

@group(0) @binding(0) var<uniform> u: CastUniforms;
@group(0) @binding(1) var<storage, read_write> wide: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> narrow: array<u32>;

fn to_bf16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) {
    return (bits >> 16u) | 0x40u; // NaN stays NaN
  }
  return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}

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

// fp16 words, converted with integer operations: WGSL leaves the rounding direction of f32 -> f16
// to the implementation, and the main params must round the same way on every adapter.
fn to_f16(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let exponent = i32((bits >> 23u) & 0xffu);
  var mantissa = bits & 0x7fffffu;
  if (exponent == 255) {
    return sign | 0x7c00u | select(0u, 0x200u, mantissa != 0u); // inf, NaN
  }
  let e = exponent - 112; // rebias 127 -> 15
  if (e >= 31) {
    return sign | 0x7c00u; // overflow -> inf
  }
  if (e <= 0) {
    if (e < -10) {
      return sign; // underflow -> signed zero
    }
    mantissa = mantissa | 0x800000u;
    let shift = u32(14 - e);
    let half = 1u << (shift - 1u);
    var h = mantissa >> shift;
    let rest = mantissa & ((1u << shift) - 1u);
    if (rest > half || (rest == half && (h & 1u) == 1u)) {
      h = h + 1u;
    }
    return sign | h;
  }
  var h = (u32(e) << 10u) | (mantissa >> 13u);
  let rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u) == 1u)) {
    h = h + 1u; // a carry into the exponent is still right
  }
  return sign | h;
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
