// The tiled matmul for hardware GPUs (matmul-tiled-body.wgsl), staging fp32: exact for fp32 params
// and for 16-bit params widened to fp32.

alias S = f32;

fn stage_a(x: f32) -> S {
  return x;
}

fn stage_b(word: u32, e: u32) -> S {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(word);
  }
  return half_of(word, e, B_DTYPE);
}

fn unstage(x: S) -> f32 {
  return x;
}

//!include matmul-tiled-body
