// The optimizers of Megatron's --optimizer besides Adam, fp32 params and state, in the layout
// shaders/adam.wgsl uses (windows, vec4s with a scalar tail, shifts to the data):
//
//   g = (maximize ? -1 : 1) * clip_coefficient * grad
//   SGD (torch.optim.SGD: dampening 0, not Nesterov; weight decay as L2):
//     g = g + weight_decay * p
//     b = momentum * b + g          (b starts at 0, so the first step's b is g, as torch's)
//     p = p - lr * b                (`plain_*`, momentum 0: p = p - lr * g, and no state)
//   Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; decoupled decay):
//     c = beta1 * m + (1 - beta1) * g
//     p = p * (1 - lr * weight_decay) - lr * sign(c)
//     m = beta2 * m + (1 - beta2) * g
//
// Grads are fp32, or bf16 (--grad-reduce-in-bf16: two a word) when BF16_GRADS is 1; both are read
// as words.

override WG: u32 = 64;
override ITEMS: u32 = 16;
// 0: SGD with momentum; 1: Lion.
override ALGO: u32 = 0u;
override BF16_GRADS: u32 = 0u;

struct MomentumUniforms {
  n4: u32,             // vec4 count in this window
  tail_start: u32,     // first element of the scalar tail, relative to the window
  tail_count: u32,     // 0..3
  lr: f32,
  beta1: f32,          // SGD: the momentum; Lion: beta1
  one_minus_beta1: f32,
  beta2: f32,          // Lion
  one_minus_beta2: f32,
  weight_decay: f32,   // SGD's L2 coefficient (0 for Lion)
  decay_factor: f32,   // Lion's 1 - lr * weight_decay (1 for SGD)
  grad_scale: f32,     // clipping coefficient, negated when maximizing
  // Elements from each binding's (aligned) start to its data: p, g, m. Multiples of 4.
  shift_p: u32,
  shift_g: u32,
  shift_m: u32,
}

@group(0) @binding(0) var<uniform> u: MomentumUniforms;
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<u32>;
@group(0) @binding(3) var<storage, read_write> state4: array<vec4<f32>>;

fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

fn bf16_of(w: u32, high: bool) -> f32 {
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, high));
}

// Grad element e of the window (shift not yet added), scaled.
fn grad_at(e: u32) -> f32 {
  let i = e + u.shift_g;
  if (BF16_GRADS == 1u) {
    return u.grad_scale * bf16_of(grad[i / 2u], i % 2u == 1u);
  }
  return u.grad_scale * bitcast<f32>(grad[i]);
}

fn grad4_at(i: u32) -> vec4<f32> {
  let e = 4u * i;
  return vec4<f32>(grad_at(e), grad_at(e + 1u), grad_at(e + 2u), grad_at(e + 3u));
}

struct Updated {
  p: vec4<f32>,
  m: vec4<f32>,
}

fn update(p0: vec4<f32>, g0: vec4<f32>, m0: vec4<f32>) -> Updated {
  if (ALGO == 1u) {
    let c = u.beta1 * m0 + u.one_minus_beta1 * g0;
    return Updated(p0 * u.decay_factor - u.lr * sign(c), u.beta2 * m0 + u.one_minus_beta2 * g0);
  }
  let g = g0 + u.weight_decay * p0;
  let m = u.beta1 * m0 + g;
  return Updated(p0 - u.lr * m, m);
}

@compute @workgroup_size(WG)
fn step_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let first = linear_workgroup(wid, nwg) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= u.n4) { return; }
    let ip = i + u.shift_p / 4u;
    let im = i + u.shift_m / 4u;
    let s = update(param4[ip], grad4_at(i), state4[im]);
    state4[im] = s.m;
    param4[ip] = s.p;
  }
}

@compute @workgroup_size(WG)
fn plain_vec4(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let first = linear_workgroup(wid, nwg) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= u.n4) { return; }
    let ip = i + u.shift_p / 4u;
    let p = param4[ip];
    param4[ip] = p - u.lr * (grad4_at(i) + u.weight_decay * p);
  }
}

// The same buffers seen as scalars, for the last (length mod 4) elements. Only the `_tail` entry
// points use these, so sharing binding numbers with the vec4 views is allowed.
@group(0) @binding(1) var<storage, read_write> param1: array<f32>;
@group(0) @binding(3) var<storage, read_write> state1: array<f32>;

@compute @workgroup_size(4)
fn step_tail(@builtin(local_invocation_index) lid: u32) {
  if (lid >= u.tail_count) { return; }
  let i = u.tail_start + lid;
  let s = update(vec4(param1[i + u.shift_p]), vec4(grad_at(i)), vec4(state1[i + u.shift_m]));
  state1[i + u.shift_m] = s.m.x;
  param1[i + u.shift_p] = s.p.x;
}

@compute @workgroup_size(4)
fn plain_tail(@builtin(local_invocation_index) lid: u32) {
  if (lid >= u.tail_count) { return; }
  let i = u.tail_start + lid;
  let p = param1[i + u.shift_p];
  param1[i + u.shift_p] = p - u.lr * (grad_at(i) + u.weight_decay * p);
}
