enable subgroups;

// The texture matmul (matmul-texture-body.wgsl) with B in bf16: an rgba16uint texture of the raw
// words (WebGPU has no bf16 format), each widened to f32 by placing it in the high half.

//!include matmul-texture-body

@group(0) @binding(2) var Bt: texture_storage_2d<rgba16uint, read>;

fn b_texel(x: u32, y: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(textureLoad(Bt, vec2<u32>(x, y)) << vec4<u32>(16u));
}
