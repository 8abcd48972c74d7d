// The tensor cores' peak as WGSL reaches it (`npm run bench -- peak`), in the tensor-core matmul's
// pattern (matmul-mma-body.wgsl): each subgroup accumulates 2 x 4 fragments of C from 2 left
// fragments of A and 4 right ones of B, 8 products per step. `regs` loads its 6 fragments once and
// multiplies them `iters` times (the multiply-accumulate rate alone); `staged` loads them from
// workgroup memory at every step, from one of NS staged sets in turn, as the matmul's inner loop does
// (what the fragment loads cost on top). No global memory is touched in the loop.
//
// Set j of A holds 2 fragments of FM x FK, of B 4 of FK x FN, each row-major and f32 in A and B,
// staged into workgroup memory as f16 in the matmul's layout (each row followed by PAD halves).
// Step i uses set 0 (`regs`) or set (i + skew) % NS (`staged`). Subgroup g of workgroup w < keep
// writes its fragment f (row f / 4, column f % 4) row-major at C[((w NSUB + g) 8 + f) FM FN]; the
// others write nothing, but the compiler cannot know which. FM, FN, FK, NSUB, NS and PAD are defines.

struct Peak {
  iters: u32,
  keep: u32,
  // 0 in the bench; the compiler cannot know it, so the staged sets' order is not known either.
  skew: u32,
}

override SG: u32 = 32u;
override WG: u32 = NSUB * SG;

const SA: u32 = FK + PAD;
const SB: u32 = FN + PAD;
const FRAG: u32 = FM * FN;

@group(0) @binding(0) var<uniform> u: Peak;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

var<workgroup> As: array<array<f16, FM * SA>, 2u * NS>;
var<workgroup> Bs: array<array<f16, FK * SB>, 4u * NS>;

fn stage(li: u32) {
  for (var e = li; e < 2u * NS * FM * FK; e += WG) {
    let at = e % (FM * FK);
    As[e / (FM * FK)][(at / FK) * SA + at % FK] = f16(A[e]);
  }
  for (var e = li; e < 4u * NS * FK * FN; e += WG) {
    let at = e % (FK * FN);
    Bs[e / (FK * FN)][(at / FN) * SB + at % FN] = f16(B[e]);
  }
  workgroupBarrier();
}

fn flat_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}
