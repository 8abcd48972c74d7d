// Adam / AdamW step with torch.optim.Adam / AdamW semantics, fp32 params, grads and moments.
//
//   g  = (maximize ? -1 : 1) * clip_coefficient * grad
//   Adam (L2):          g = g + weight_decay * p
//   AdamW (decoupled):  p = p * (1 - lr * weight_decay)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   p  = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
//
// Scalars that depend on the step (step_size, bc2_sqrt, 1 - lr*wd) are computed on the host in
// double precision, as PyTorch computes them in Python floats. `adam_vec4` covers whole vec4s of a
// window; `adam_tail` the last (length mod 4) elements of the last window.

override WG: u32 = 64;
// vec4s per invocation: fewer, fatter workgroups run faster on CPU Vulkan and cost nothing on GPUs.
override ITEMS: u32 = 16;

//!include adam-update

@group(0) @binding(0) var<uniform> u: AdamUniforms;
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn adam_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let first = linear_workgroup(wid, nwg) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= u.n4) { return; }
    let ip = i + u.shift_p / 4u;
    let im = i + u.shift_m / 4u;
    let iv = i + u.shift_v / 4u;
    let s = adam_update(param4[ip], grad4[i + u.shift_g / 4u], exp_avg4[im], exp_avg_sq4[iv]);
    exp_avg4[im] = s.m;
    exp_avg_sq4[iv] = s.v;
    param4[ip] = s.p;
  }
}

// The same buffers seen as scalars, for the last (length mod 4) elements. Only `adam_tail` uses
// these, so sharing binding numbers with the vec4 views is allowed.
@group(0) @binding(1) var<storage, read_write> param1: array<f32>;
@group(0) @binding(2) var<storage, read> grad1: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg1: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq1: array<f32>;

@compute @workgroup_size(4)
fn adam_tail(@builtin(local_invocation_index) lid: u32) {
  if (lid >= u.tail_count) { return; }
  let i = u.tail_start + lid;
  let ip = i + u.shift_p;
  let im = i + u.shift_m;
  let iv = i + u.shift_v;
  let s = adam_update(vec4(param1[ip]), vec4(grad1[i + u.shift_g]), vec4(exp_avg1[im]), vec4(exp_avg_sq1[iv]));
  exp_avg1[im] = s.m.x;
  exp_avg_sq1[iv] = s.v.x;
  param1[ip] = s.p.x;
}
