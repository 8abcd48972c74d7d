// GELU, tanh form (GPT-2's): gelu(v) = 0.5 v (1 + tanh(sqrt(2/pi) (v + 0.044715 v^3))), and its
// derivative, shared by the GELU kernels and the matmul epilogues that apply it.

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

fn inner(v: f32) -> f32 {
  // tanh saturates long before |15|; clamping keeps exp-based tanh implementations finite.
  return clamp(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v), -15.0, 15.0);
}

fn inner4(v: vec4<f32>) -> vec4<f32> {
  return clamp(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v), vec4<f32>(-15.0), vec4<f32>(15.0));
}

fn gelu4(v: vec4<f32>) -> vec4<f32> {
  return 0.5 * v * (1.0 + tanh(inner4(v)));
}

fn gelu_grad4(v: vec4<f32>) -> vec4<f32> {
  let t = tanh(inner4(v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
}
