// Matmul for CPU Vulkan drivers (lavapipe): C = alpha * A @ B (+ bias) (+ C when accumulating), with
// A and B read from read-only storage textures that hold copies of them (src/nn/matmul-texture.ts
// copies each operand in with copyBufferToTexture, a memcpy there).
//
// Why textures: lavapipe runs a storage-buffer load lane by lane, with an exec-mask test, a bounds
// check and a branch per component (about 40 instructions and 10 branches per lane for a vec4). Its
// storage-image load is one branch-free gather for the whole SIMD batch (about 45 instructions for
// 8 lanes x 4 floats). Measured on lavapipe (Mesa 25.0, 8 lanes), 1024^3: 78 GFLOP/s against 58 for
// the same tiling on storage buffers and 40 for matmul-body.wgsl.
//
// One workgroup is one subgroup of 8 lanes and computes a tile of 32 rows x 64 columns: lane l holds
// the column quads l and l + 8 of the tile (so a texel load of the 8 lanes reads 128 contiguous
// bytes) for all 32 rows. Per step of 4 in k it loads 4 texels of A and 8 of B, and each row's 4 A
// values reach every lane by subgroupShuffle. Each row's 4 products are summed before they are added
// to the accumulator: inside a loop every write to a variable is blended with the exec mask, so
// one write per 4 multiply-adds instead of 4 (1.35x on its own).
//
// The accumulators are 8 arrays of 8 rows, each touched only by 8-iteration loops: Mesa unrolls
// those every time, while a 32-row array under 32-iteration loops was unrolled or not depending on
// unrelated code in the shader (a store's index), and when not, every row went through memory (3x
// slower).
//
// A texture holds a whole tensor as it lies in its buffer, one buffer row per texture row (x counts
// texels of 4 elements). An operand is a block of it: for batch (z0, z1) its origin is
// (x0 + z0 bx0 + z1 bx1, y0 + z0 by0 + z1 by1), so one copy of qkv serves q, k and v of every head,
// and one copy of dy serves both products that read it. Within the block (t = texel of 4):
//   A_T false: row m, texel k / 4      A contiguous along k (an activation x)
//   A_T true:  row k, texel m / 4      A contiguous along m (x read as xᵀ: dW = xᵀ dy)
//   B_T false: row k, texel n / 4      (a weight [in, out])
//   B_T true:  row n, texel k / 4      (a weight read transposed: dx = dy Wᵀ, a tied head)
// K must be a multiple of 4; rows past M and columns past N are computed from whatever the
// textures hold there and not stored. C is stored as vec4s (N, C's start, row and batch strides
// multiples of 4).
//
// The including module declares the B texture in its format and provides
//   fn b_texel(x: u32, y: u32) -> vec4<f32>

//!include half
//!include gelu-math

override B_DTYPE: u32 = 0u;
override A_T: bool = false;
override B_T: bool = false;

struct MatmulUniforms {
  M: u32,
  N: u32,
  K: u32,
  NB1: u32,
  a_x0: u32,
  a_y0: u32,
  a_bx0: u32,
  a_by0: u32,
  a_bx1: u32,
  a_by1: u32,
  b_x0: u32,
  b_y0: u32,
  b_bx0: u32,
  b_by0: u32,
  b_bx1: u32,
  b_by1: u32,
  c_off: u32,
  C_RS: u32,
  C_B0: u32,
  C_B1: u32,
  bias_off: u32,
  alpha: f32,
  FLAGS: u32,
}

@group(0) @binding(0) var<uniform> u: MatmulUniforms;
@group(0) @binding(1) var At: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> C4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<u32>;
// gelu(C), when FLAGS has 4 (an MLP's fc layer: C, its pre-activation, is kept for the backward);
// a dummy otherwise.
@group(0) @binding(6) var<storage, read_write> H4: array<vec4<f32>>;

// Rows k .. k+3 of B at the column quad q4 of the block at `o`: element [j][c] is B[k + j, 4 q4 + c].
fn b_rows(o: vec2<u32>, q4: u32, k: u32) -> array<vec4<f32>, 4> {
  var b: array<vec4<f32>, 4>;
  if (B_T) {
    // Four columns' texels along k, read as rows by swapping the indices (free in SIMD registers).
    var t: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
      t[c] = b_texel(o.x + k / 4u, o.y + 4u * q4 + c);
    }
    for (var j = 0u; j < 4u; j++) {
      b[j] = vec4<f32>(t[0][j], t[1][j], t[2][j], t[3][j]);
    }
  } else {
    for (var j = 0u; j < 4u; j++) {
      b[j] = b_texel(o.x + q4, o.y + k + j);
    }
  }
  return b;
}

fn dot4(s: vec4<f32>, b: array<vec4<f32>, 4>) -> vec4<f32> {
  return s.x * b[0] + s.y * b[1] + s.z * b[2] + s.w * b[3];
}

// Rows 8 g .. 8 g + 7 of the tile, both column quads. `a` is this lane's part of A for k .. k+3:
//   A_T false: a[g] = A[m0 + 8 g + lane, k .. k+3], so row 8 g + l is a[g] of lane l;
//   A_T true:  a[j] = A[m0 + 4 lane .. +3, k + j], so row 4 i + c is component c of lane i.
fn rows8(g: u32, a: array<vec4<f32>, 4>, b0: array<vec4<f32>, 4>, b1: array<vec4<f32>, 4>,
         acc0: ptr<function, array<vec4<f32>, 8>>, acc1: ptr<function, array<vec4<f32>, 8>>) {
  for (var l = 0u; l < 8u; l++) {
    var s: vec4<f32>;
    if (A_T) {
      let r = 8u * g + l;
      s = vec4<f32>(subgroupShuffle(a[0][r % 4u], r / 4u), subgroupShuffle(a[1][r % 4u], r / 4u),
                    subgroupShuffle(a[2][r % 4u], r / 4u), subgroupShuffle(a[3][r % 4u], r / 4u));
    } else {
      s = subgroupShuffle(a[g], l);
    }
    (*acc0)[l] += dot4(s, b0);
    (*acc1)[l] += dot4(s, b1);
  }
}

fn load_bias(e: u32) -> f32 {
  if (B_DTYPE == DTYPE_F32) {
    return bitcast<f32>(bias[e]);
  }
  return half_of(bias[e >> 1u], e, B_DTYPE);
}

fn bias_quad(q4: u32) -> vec4<f32> {
  var add = vec4<f32>(0.0);
  if ((u.FLAGS & 1u) != 0u) {
    for (var c = 0u; c < 4u; c++) {
      add[c] = load_bias(u.bias_off + min(4u * q4 + c, u.N - 1u));
    }
  }
  return add;
}

// Rows m0 .. m0 + 7 of the column quad q4 into C at c_base.
fn store8(c_base: u32, m0: u32, q4: u32, acc: array<vec4<f32>, 8>) {
  let add = bias_quad(q4);
  let accumulate = (u.FLAGS & 2u) != 0u;
  for (var l = 0u; l < 8u; l++) {
    let m = m0 + l;
    if (m < u.M && 4u * q4 < u.N) {
      let q = (c_base + m * u.C_RS) / 4u + q4;
      let v = acc[l] * u.alpha + add;
      if (accumulate) {
        C4[q] = C4[q] + v;
      } else {
        C4[q] = v;
      }
      if ((u.FLAGS & 4u) != 0u) {
        H4[q] = gelu4(v);
      }
    }
  }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  let q0 = wid.x * 16u + lid;
  let q1 = q0 + 8u;
  let m0 = wid.y * 32u;
  let z0 = wid.z / u.NB1;
  let z1 = wid.z % u.NB1;
  let ao = vec2<u32>(u.a_x0 + z0 * u.a_bx0 + z1 * u.a_bx1, u.a_y0 + z0 * u.a_by0 + z1 * u.a_by1);
  let bo = vec2<u32>(u.b_x0 + z0 * u.b_bx0 + z1 * u.b_bx1, u.b_y0 + z0 * u.b_by0 + z1 * u.b_by1);
  let c_base = u.c_off + z0 * u.C_B0 + z1 * u.C_B1;
  var acc00: array<vec4<f32>, 8>;
  var acc01: array<vec4<f32>, 8>;
  var acc10: array<vec4<f32>, 8>;
  var acc11: array<vec4<f32>, 8>;
  var acc20: array<vec4<f32>, 8>;
  var acc21: array<vec4<f32>, 8>;
  var acc30: array<vec4<f32>, 8>;
  var acc31: array<vec4<f32>, 8>;
  for (var k = 0u; k < u.K; k += 4u) {
    var a: array<vec4<f32>, 4>;
    if (A_T) {
      for (var j = 0u; j < 4u; j++) {
        a[j] = textureLoad(At, ao + vec2<u32>(m0 / 4u + lane, k + j));
      }
    } else {
      for (var g = 0u; g < 4u; g++) {
        a[g] = textureLoad(At, ao + vec2<u32>(k / 4u, m0 + 8u * g + lane));
      }
    }
    let b0 = b_rows(bo, q0, k);
    let b1 = b_rows(bo, q1, k);
    rows8(0u, a, b0, b1, &acc00, &acc01);
    rows8(1u, a, b0, b1, &acc10, &acc11);
    rows8(2u, a, b0, b1, &acc20, &acc21);
    rows8(3u, a, b0, b1, &acc30, &acc31);
  }
  store8(c_base, m0, q0, acc00);
  store8(c_base, m0, q1, acc01);
  store8(c_base, m0 + 8u, q0, acc10);
  store8(c_base, m0 + 8u, q1, acc11);
  store8(c_base, m0 + 16u, q0, acc20);
  store8(c_base, m0 + 16u, q1, acc21);
  store8(c_base, m0 + 24u, q0, acc30);
  store8(c_base, m0 + 24u, q1, acc31);
}
