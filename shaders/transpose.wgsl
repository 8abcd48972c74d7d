// dst = the transpose of a rows x cols block of src: src[src_off + r * src_rs + c] goes to
// dst[c * rows + r]. The tiled matmul's `packed` plan for deep products
// (src/nn/matmul-tiled.ts) copies an A whose rows are far apart into this m-fast layout first.
//
// A workgroup moves a 32 x 32 block through workgroup memory (transposeWorkgroups in
// src/gpu/matmul-tuner.ts lays out the grid): it reads rows of the block (neighbouring
// invocations, neighbouring words of src) and writes its columns (neighbouring words of dst). The
// tile's rows are padded by one word, so reading a column of it touches 32 different banks.

struct TransposeUniforms { rows: u32, cols: u32, src_off: u32, src_rs: u32 }

@group(0) @binding(0) var<uniform> u: TransposeUniforms;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const T: u32 = 32u;
var<workgroup> tile: array<array<f32, T + 1u>, T>;

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let r0 = wid.y * T;
  let c0 = wid.x * T;
  for (var i = 0u; i < T; i += 8u) {
    let r = r0 + lid.y + i;
    let c = c0 + lid.x;
    if (r < u.rows && c < u.cols) {
      tile[lid.y + i][lid.x] = src[u.src_off + r * u.src_rs + c];
    }
  }
  workgroupBarrier();
  for (var i = 0u; i < T; i += 8u) {
    let c = c0 + lid.y + i;
    let r = r0 + lid.x;
    if (r < u.rows && c < u.cols) {
      dst[c * u.rows + r] = tile[lid.x][lid.y + i];
    }
  }
}
