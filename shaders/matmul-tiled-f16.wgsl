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

fn stage_a(x: f32) -> S {
  return f16(clamp(x, -F16_MAX, F16_MAX));
}

fn stage_b(word: u32, e: u32) -> S {
  if (B_DTYPE == DTYPE_F16) {
    return f16(half_of(word, e, DTYPE_F16)); // exact: the value is an f16
  }
  if (B_DTYPE == DTYPE_BF16) {
    return stage_a(half_of(word, e, DTYPE_BF16));
  }
  return stage_a(bitcast<f32>(word));
}

fn unstage(x: S) -> f32 {
  return f32(x);
}

//!include matmul-tiled-body
