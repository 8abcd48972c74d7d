enable subgroups;

// The texture matmul (matmul-texture-body.wgsl) with B in fp16: an rgba16float texture, whose loads
// widen to f32.

//!include matmul-texture-body

@group(0) @binding(2) var Bt: texture_storage_2d<rgba16float, read>;

fn b_texel(x: u32, y: u32) -> vec4<f32> {
  return textureLoad(Bt, vec2<u32>(x, y));
}
