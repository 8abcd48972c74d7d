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

struct AdamUniforms {
  n4: u32,             // vec4 count in this window
  tail_start: u32,     // first element of the scalar tail, relative to the window
  tail_count: u32,     // 0..3
  decoupled: u32,      // 1: AdamW, 0: Adam with L2
  step_size: f32,
  bc2_sqrt: f32,
  beta1: f32,
  one_minus_beta1: f32,
  beta2: f32,
  one_minus_beta2: f32,
  eps: f32,
  weight_decay: f32,   // Adam's L2 coefficient (0 for AdamW)
  decay_factor: f32,   // AdamW's 1 - lr * weight_decay (1 for Adam)
  grad_scale: f32,     // clipping coefficient, negated when maximizing
  // Elements from each binding's (aligned) start to its data: p, g, m, v. Multiples of 4.
  shift_p: u32,
  shift_g: u32,
  shift_m: u32,
  shift_v: u32,
}

@group(0) @binding(0) var<uniform> u: AdamUniforms;
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;

fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

struct AdamState {
  p: vec4<f32>,
  m: vec4<f32>,
  v: vec4<f32>,
}

// The update for four elements; the scalar tail runs it on one lane.
fn adam_update(p0: vec4<f32>, grad: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>) -> AdamState {
  let g = u.grad_scale * grad + u.weight_decay * p0;
  let p = p0 * u.decay_factor;
  let m = u.beta1 * m0 + u.one_minus_beta1 * g;
  let v = u.beta2 * v0 + u.one_minus_beta2 * g * g;
  return AdamState(p - u.step_size * (m / (sqrt(v) / u.bc2_sqrt + u.eps)), m, v);
}

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
