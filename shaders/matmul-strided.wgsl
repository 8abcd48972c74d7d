// The operands every strided matmul kernel reads (src/nn/matmul-operands.ts fills the uniforms):
// sizes, each operand's offset and strides in its binding (A_RS / A_CS: row and column stride,
// A_B0 / A_B1: the two batch strides; the same for B and C), alpha, and FLAGS (1: add the bias,
// 2: accumulate into C, 4: also write gelu(C) to H where the kernel has it). B and the bias are
// words, read in the param dtype (B_DTYPE) by b_at and bias_at below. Included by matmul-body,
// matmul-tiled-body and matmul-mma-body, after their B_DTYPE and the half include.

struct MatmulUniforms {
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
  alpha: f32,
  M: u32,
  N: u32,
  K: u32,
  NB1: u32,
  A_RS: u32,
  A_CS: u32,
  A_B0: u32,
  A_B1: u32,
  B_RS: u32,
  B_CS: u32,
  B_B0: u32,
  B_B1: u32,
  C_RS: u32,
  C_B0: u32,
  C_B1: u32,
  FLAGS: u32,
}

@group(0) @binding(0) var<uniform> u: MatmulUniforms;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<u32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;

// Element e of B and of the bias, read in the param dtype (B_DTYPE), as f32.
fn b_at(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(B[e]);
  }
  return half_of(B[e >> 1u], e, B_DTYPE);
}

fn bias_at(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(bias[e]);
  }
  return half_of(bias[e >> 1u], e, B_DTYPE);
}
