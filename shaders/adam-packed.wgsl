// Adam / AdamW as shaders/adam.wgsl computes it, with the (main) params and the two moments each
// stored as fp32, bf16 or fp16 (Megatron's precision-aware optimizer: --main-params-dtype,
// --exp-avg-dtype, --exp-avg-sq-dtype). Grads are fp32, or bf16 (--main-grads-dtype bf16: the
// `_bf16_grads` entry points). Every value is widened to fp32, updated in
// fp32 exactly as the fp32 kernel does (the new moments feed the param update unrounded), and
// rounded back to its storage, to nearest even.
//
// The three stored operands are bound as u32 words: an fp32 element is one word, two 16-bit
// elements share one (the element at the even index in the low half). `adam_vec4` updates four
// elements per item (four words or two, never a word another invocation writes); `adam_tail`
// updates the last (length mod 4) elements in one invocation, word by word.

override WG: u32 = 64;
override ITEMS: u32 = 16;
// Storage of each operand: DTYPE_F32, DTYPE_BF16 or DTYPE_F16 (shaders/half.wgsl).
override P_DTYPE: u32 = 0u;
override M_DTYPE: u32 = 0u;
override V_DTYPE: u32 = 0u;

//!include adam-update
//!include half

@group(0) @binding(0) var<uniform> u: AdamUniforms;
@group(0) @binding(1) var<storage, read_write> param: array<u32>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<u32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<u32>;

fn to_half(x: f32, dtype: u32) -> u32 {
  if (dtype == DTYPE_BF16) {
    return to_bf16(x);
  }
  return to_f16(x);
}

// Four elements from words w (fp32: w.x..w.w) or from the pair of words (16-bit: w.x, w.y).
fn widen(w: vec4<u32>, dtype: u32) -> vec4<f32> {
  if (dtype == DTYPE_F32) {
    return bitcast<vec4<f32>>(w);
  }
  return vec4<f32>(half_to_f32(w.x & 0xffffu, dtype), half_to_f32(w.x >> 16u, dtype),
                   half_to_f32(w.y & 0xffffu, dtype), half_to_f32(w.y >> 16u, dtype));
}

// The inverse of `widen`: four words (fp32) or two (16-bit, in .xy).
fn narrow(x: vec4<f32>, dtype: u32) -> vec4<u32> {
  if (dtype == DTYPE_F32) {
    return bitcast<vec4<u32>>(x);
  }
  return vec4<u32>(to_half(x.x, dtype) | (to_half(x.y, dtype) << 16u), to_half(x.z, dtype) | (to_half(x.w, dtype) << 16u), 0u, 0u);
}

// The word holding element e (shift included) and, for 16-bit storage, the half it is in.
fn word_of(e: u32, dtype: u32) -> u32 {
  return select(e / 2u, e, dtype == DTYPE_F32);
}

fn load4_p(e: u32) -> vec4<f32> {
  let i = word_of(e, P_DTYPE);
  if (P_DTYPE == DTYPE_F32) {
    return widen(vec4<u32>(param[i], param[i + 1u], param[i + 2u], param[i + 3u]), P_DTYPE);
  }
  return widen(vec4<u32>(param[i], param[i + 1u], 0u, 0u), P_DTYPE);
}

fn store4_p(e: u32, x: vec4<f32>) {
  let i = word_of(e, P_DTYPE);
  let w = narrow(x, P_DTYPE);
  param[i] = w.x;
  param[i + 1u] = w.y;
  if (P_DTYPE == DTYPE_F32) {
    param[i + 2u] = w.z;
    param[i + 3u] = w.w;
  }
}

fn load4_m(e: u32) -> vec4<f32> {
  let i = word_of(e, M_DTYPE);
  if (M_DTYPE == DTYPE_F32) {
    return widen(vec4<u32>(exp_avg[i], exp_avg[i + 1u], exp_avg[i + 2u], exp_avg[i + 3u]), M_DTYPE);
  }
  return widen(vec4<u32>(exp_avg[i], exp_avg[i + 1u], 0u, 0u), M_DTYPE);
}

fn store4_m(e: u32, x: vec4<f32>) {
  let i = word_of(e, M_DTYPE);
  let w = narrow(x, M_DTYPE);
  exp_avg[i] = w.x;
  exp_avg[i + 1u] = w.y;
  if (M_DTYPE == DTYPE_F32) {
    exp_avg[i + 2u] = w.z;
    exp_avg[i + 3u] = w.w;
  }
}

fn load4_v(e: u32) -> vec4<f32> {
  let i = word_of(e, V_DTYPE);
  if (V_DTYPE == DTYPE_F32) {
    return widen(vec4<u32>(exp_avg_sq[i], exp_avg_sq[i + 1u], exp_avg_sq[i + 2u], exp_avg_sq[i + 3u]), V_DTYPE);
  }
  return widen(vec4<u32>(exp_avg_sq[i], exp_avg_sq[i + 1u], 0u, 0u), V_DTYPE);
}

fn store4_v(e: u32, x: vec4<f32>) {
  let i = word_of(e, V_DTYPE);
  let w = narrow(x, V_DTYPE);
  exp_avg_sq[i] = w.x;
  exp_avg_sq[i + 1u] = w.y;
  if (V_DTYPE == DTYPE_F32) {
    exp_avg_sq[i + 2u] = w.z;
    exp_avg_sq[i + 3u] = w.w;
  }
}

// Four elements from element e on, with their grads g.
fn update4(e: u32, g: vec4<f32>) {
  let s = adam_update(load4_p(e + u.shift_p), g, load4_m(e + u.shift_m), load4_v(e + u.shift_v));
  store4_m(e + u.shift_m, s.m);
  store4_v(e + u.shift_v, s.v);
  store4_p(e + u.shift_p, s.p);
}

@compute @workgroup_size(WG)
fn adam_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let first = linear_workgroup(wid, nwg) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= u.n4) { return; }
    update4(4u * i, grad4[i + u.shift_g / 4u]);
  }
}

// bf16 grads (--main-grads-dtype bf16), read as they are: two elements a word. The entry points
// that read them (`adam_vec4_bf16_grads`, `adam_tail_bf16_grads`) use no other grad binding.
@group(0) @binding(2) var<storage, read> grad_bf16: array<u32>;

fn bf16_pair(w: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

@compute @workgroup_size(WG)
fn adam_vec4_bf16_grads(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let first = linear_workgroup(wid, nwg) * WG * ITEMS + lid;
  for (var k = 0u; k < ITEMS; k++) {
    let i = first + k * WG;
    if (i >= u.n4) { return; }
    let j = (4u * i + u.shift_g) / 2u; // shift_g is a multiple of 4: the pair of words of four grads
    update4(4u * i, vec4<f32>(bf16_pair(grad_bf16[j]), bf16_pair(grad_bf16[j + 1u])));
  }
}

// The grads seen as scalars, for the tail. Only `adam_tail` uses it, so sharing binding 2 with
// `grad4` is allowed.
@group(0) @binding(2) var<storage, read> grad1: array<f32>;

// Element e of an operand stored as `dtype` in `word` (the word `word_of(e, dtype)`).
fn element_of(word: u32, e: u32, dtype: u32) -> f32 {
  if (dtype == DTYPE_F32) {
    return bitcast<f32>(word);
  }
  return half_of(word, e, dtype);
}

// `word` with element e replaced by x.
fn with_element(word: u32, e: u32, x: f32, dtype: u32) -> u32 {
  if (dtype == DTYPE_F32) {
    return bitcast<u32>(x);
  }
  let h = to_half(x, dtype) & 0xffffu;
  return select((word & 0xffff0000u) | h, (word & 0xffffu) | (h << 16u), (e & 1u) == 1u);
}

// Element e alone, with its grad g, word by word.
fn update1(e: u32, g: f32) {
  let ep = e + u.shift_p;
  let em = e + u.shift_m;
  let ev = e + u.shift_v;
  let ip = word_of(ep, P_DTYPE);
  let im = word_of(em, M_DTYPE);
  let iv = word_of(ev, V_DTYPE);
  let s = adam_update(vec4(element_of(param[ip], ep, P_DTYPE)), vec4(g),
                      vec4(element_of(exp_avg[im], em, M_DTYPE)), vec4(element_of(exp_avg_sq[iv], ev, V_DTYPE)));
  exp_avg[im] = with_element(exp_avg[im], em, s.m.x, M_DTYPE);
  exp_avg_sq[iv] = with_element(exp_avg_sq[iv], ev, s.v.x, V_DTYPE);
  param[ip] = with_element(param[ip], ep, s.p.x, P_DTYPE);
}

@compute @workgroup_size(1)
fn adam_tail() {
  for (var k = 0u; k < u.tail_count; k++) {
    let e = u.tail_start + k;
    update1(e, grad1[e + u.shift_g]);
  }
}

@compute @workgroup_size(1)
fn adam_tail_bf16_grads() {
  for (var k = 0u; k < u.tail_count; k++) {
    let e = u.tail_start + k;
    let g = e + u.shift_g;
    update1(e, half_of(grad_bf16[g / 2u], g, DTYPE_BF16));
  }
}
