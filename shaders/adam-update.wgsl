// What every Adam kernel shares (included with `//!include adam-update`): the step's scalars, the
// update of four elements (in fp32 whatever the storage of the operands) and the flat workgroup
// index. The including shader declares `u: AdamUniforms`.

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

// The flat index of a workgroup the host laid out on a 2-D grid (past 65535 of them).
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}
