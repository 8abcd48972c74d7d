// The device's fp32 arithmetic peak as WGSL reaches it (`npm run bench -- peak`): every invocation
// runs 8 independent chains of vec4 fma (32 lanes of work, 64 FLOPs per iteration) on registers
// only, with no memory traffic in the loop, so its rate is the ceiling any fp32 kernel here works
// under, and how that rate changes with the length of a dispatch says what the clock does.
//
// x <- fma(x, a, b) with a and b from the uniforms (1 and 1 in the bench), so the compiler can fold
// nothing; chain c starts at c, and after `iters` iterations holds c + iters. An invocation of the
// first `keep` workgroups writes the sum of its 32 lanes (496 + 32 iters, exact below 2^24); the
// others write nothing, but the compiler cannot know which.
//
// `fma_f32_staged` is the tiled matmul's inner loop at 4 x 4 per invocation (matmul-tiled-body.wgsl)
// with its operands in workgroup memory: each step reads a vec4 of 4 rows (the same for the 16
// invocations of a row of the workgroup) and a vec4 of 4 columns (neighbouring invocations,
// neighbouring vec4s), at step (i + skew) % 16 of a 64 x 64 tile 16 deep, and does 16 fma, 32
// FLOPs: what the kernel's workgroup-memory reads leave of the peak. Its 16 lanes start at 0 .. 15;
// with every staged value 1 each gains 1 per step (120 + 16 iters summed).

struct Peak {
  iters: u32,
  keep: u32,
  a: f32,
  b: f32,
  // 0 in the bench; the compiler cannot know it, so the staged steps' order is not known either.
  skew: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> u: Peak;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn fma_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
  // Read once: a uniform read in the loop's condition costs a CPU driver a load per lane per iteration.
  let iters = u.iters;
  let a = vec4<f32>(u.a);
  let b = vec4<f32>(u.b);
  var x0 = vec4<f32>(0.0, 1.0, 2.0, 3.0);
  var x1 = x0 + 4.0;
  var x2 = x0 + 8.0;
  var x3 = x0 + 12.0;
  var x4 = x0 + 16.0;
  var x5 = x0 + 20.0;
  var x6 = x0 + 24.0;
  var x7 = x0 + 28.0;
  for (var i = 0u; i < iters; i++) {
    x0 = fma(x0, a, b);
    x1 = fma(x1, a, b);
    x2 = fma(x2, a, b);
    x3 = fma(x3, a, b);
    x4 = fma(x4, a, b);
    x5 = fma(x5, a, b);
    x6 = fma(x6, a, b);
    x7 = fma(x7, a, b);
  }
  let w = wid.x + wid.y * nwg.x;
  if (w < u.keep) {
    let s = (x0 + x1) + (x2 + x3) + ((x4 + x5) + (x6 + x7));
    out[w * WG + li] = (s.x + s.y) + (s.z + s.w);
  }
}

// Step kk's 4 rows of A (16 vec4s, one per row of invocations, all a) then its 4 columns of B (16
// more, all b), for 16 steps.
var<workgroup> tile: array<vec4<f32>, 512>;

@compute @workgroup_size(256)
fn fma_f32_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
  let staged = select(vec4<f32>(u.b), vec4<f32>(u.a), li % 32u < 16u);
  tile[li] = staged;
  tile[li + 256u] = staged;
  workgroupBarrier();
  let iters = u.iters;
  let skew = u.skew;
  var acc0 = vec4<f32>(0.0, 1.0, 2.0, 3.0);
  var acc1 = acc0 + 4.0;
  var acc2 = acc0 + 8.0;
  var acc3 = acc0 + 12.0;
  for (var i = 0u; i < iters; i++) {
    let kk = ((i + skew) % 16u) * 32u;
    let a = tile[kk + li / 16u];
    let b = tile[kk + 16u + li % 16u];
    acc0 = fma(vec4<f32>(a.x), b, acc0);
    acc1 = fma(vec4<f32>(a.y), b, acc1);
    acc2 = fma(vec4<f32>(a.z), b, acc2);
    acc3 = fma(vec4<f32>(a.w), b, acc3);
  }
  let w = wid.x + wid.y * nwg.x;
  if (w < u.keep) {
    let s = (acc0 + acc1) + (acc2 + acc3);
    out[w * 256u + li] = (s.x + s.y) + (s.z + s.w);
  }
}
