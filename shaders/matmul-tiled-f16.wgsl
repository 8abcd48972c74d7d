enable f16;

// The tiled matmul for hardware GPUs (matmul-tiled-body.wgsl), staging fp16 for the 16-bit
// precisions (--fp16, --bf16): half the workgroup memory and its traffic, products accumulated in
// f32. Conversion rules (src/nn/matmul.ts says when they apply):
//   - A (fp32 activations) and bf16 params go to f16 after saturating at ±65504 (f16's largest
//     finite value), so nothing becomes infinite; the rounding is the device's f32 -> f16
//     conversion (to nearest even on the GPUs webtron knows of). Magnitudes below 2^-24 become 0.
//   - fp16 params are staged as they are.

alias S = f16;

const F16_MAX: f32 = 65504.0;

// Params arrive here as f32 values (fp16 ones exactly), so one rule serves A and every param dtype.
fn stage(x: vec4<f32>) -> vec4<S> {
  return vec4<f16>(clamp(x, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

fn unstage(x: vec4<S>) -> vec4<f32> {
  return vec4<f32>(x);
}

//!include matmul-tiled-body
