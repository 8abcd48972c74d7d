// The tiled matmul for hardware GPUs (matmul-tiled-body.wgsl), staging fp32: exact for fp32 params
// and for 16-bit params widened to fp32.

alias S = f32;

fn stage(x: vec4<f32>) -> vec4<S> {
  return x;
}

fn unstage(x: vec4<S>) -> vec4<f32> {
  return x;
}

//!include matmul-tiled-body
