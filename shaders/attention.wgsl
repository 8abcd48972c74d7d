// Fused causal attention, flash-style: y = dropout(softmax(q kᵀ · scale, causal)) v for every (batch,
// head), reading q, k and v from the fused qkv [B, T, 3C] in place, never writing the T x T scores.
//
// forward: one workgroup per (batch · head, block of BR query rows), an invocation per row. Key and
//   value blocks of BC rows are staged in workgroup memory; for each block the row's scores, their
//   maximum and the rescaled running sum and output are updated once (the online softmax). It writes
//   y and the row's log-sum-exp L = m + log(l), all the backward needs besides q, k, v and dy.
// backward_d: D = rowsum(dy ∘ y) per (batch · head, row).
// backward_dq: per query row, P = exp(s - L) recomputed block by block; dq += Σ_j dS_j k_j · scale.
// backward_dkv: per key row, over the query rows at or after it; dv += Σ_t P̃_t dy_t,
//   dk += Σ_t dS_t q_t · scale. DKV (a pipeline constant) says which: 3 both in one pass, holding 4
//   rows (k, v, dk, dv) per invocation; 2 dv and 1 dk in two passes of 2 and 3 rows (the host picks
//   two passes where 4 rows would not fit a GPU's registers; the scores are computed twice).
// With dS = P (dP̃ - D), dP̃ = Z / (1 - p) (dy · v), and P̃ = Z P / (1 - p) the dropped-out
// probabilities: exactly the products of the unfused ops, so both paths agree to rounding.
//
// Dropout masks are the dropout op's (shaders/dropout.wgsl) for a [B, H, T, T] probabilities tensor:
// element (b, h, t, j) of sample `sample0 + b` at offset h T² + t T + j, so the fused and the unfused
// attention drop the same probabilities for a seed.
//
// With DOCS, each query sees only the keys of its own document (--reset-attention-mask): keys from
// starts[b T + t] (where the query's document starts in its sample, src/nn/documents.ts) to the query
// itself. Starts grow with t, so a workgroup's key blocks begin at its first row's start, and a key
// workgroup stops at the first query block whose first row starts after its last key.
//
// HD (the head dimension), HD4 (HD / 4 rounded up), BR, BC and UNROLLED are defines; the grads accumulate
// (+=) into dqkv. Rows are held and staged as HD4 vec4s, zero past HD, so each key a row visits
// costs HD4 vec4 reads of workgroup memory instead of HD scalar ones.

struct AttentionUniforms {
  B: u32,
  T: u32,
  H: u32,
  C: u32,
  scale: f32,
  seed: u32,
  p: f32,
  dropout: u32,
  sample0: u32,
  hd4: u32, // HD4 again, for row_quads on a CPU driver
}

@group(0) @binding(0) var<uniform> u: AttentionUniforms;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> yd: array<f32>;      // y, read in backward_d
@group(0) @binding(6) var<storage, read_write> dsum: array<f32>; // D
@group(0) @binding(7) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(8) var<storage, read> lse_in: array<f32>;
@group(0) @binding(9) var<storage, read> dsum_in: array<f32>;
@group(0) @binding(10) var<storage, read> starts: array<u32>;

override DOCS: bool = false;

var<workgroup> tile_a: array<vec4<f32>, BC * HD4>; // forward, dq: keys; dkv: queries
var<workgroup> tile_b: array<vec4<f32>, BC * HD4>; // forward, dq: values; dkv: dy
var<workgroup> tile_l: array<f32, BC>;      // dkv: L of the staged queries
var<workgroup> tile_d: array<f32, BC>;      // dkv: D of the staged queries
var<workgroup> tile_s: array<u32, BC>;      // dkv: where the staged queries' documents start

// The first key query row t of sample b sees: where its document starts, or 0.
fn doc_first(b: u32, t: u32) -> u32 {
  if (DOCS) { return starts[b * u.T + t]; }
  return 0u;
}

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// Whether probability (b, h, t, j) survives dropout (always, without it).
fn kept(b: u32, h: u32, t: u32, j: u32) -> bool {
  if (u.dropout == 0u) { return true; }
  let key = pcg(u.seed ^ pcg(u.sample0 + b));
  let h2 = pcg(key ^ (h * u.T * u.T + t * u.T + j));
  return f32(h2 >> 8u) * (1.0 / 16777216.0) >= u.p;
}

fn drop_scale() -> f32 {
  return select(1.0, 1.0 / (1.0 - u.p), u.dropout != 0u);
}

// Element d of part (0 q, 1 k, 2 v) of head h at (b, t).
fn at(b: u32, t: u32, part: u32, h: u32, d: u32) -> u32 {
  return (b * u.T + t) * 3u * u.C + part * u.C + h * HD + d;
}

// Four elements of a row from `first` (column d = 4 d4 of a head), zero past HD. Components are
// named, not indexed: lavapipe's compiler took minutes over indexed ones. One function per binding,
// so that each entry point uses only its own.
fn row4(b: u32, t: u32, part: u32, h: u32, d4: u32) -> vec4<f32> {
  let d = 4u * d4;
  let first = at(b, t, part, h, d);
  var v = vec4<f32>(qkv[first], 0.0, 0.0, 0.0);
  if (d + 1u < HD) { v.y = qkv[first + 1u]; }
  if (d + 2u < HD) { v.z = qkv[first + 2u]; }
  if (d + 3u < HD) { v.w = qkv[first + 3u]; }
  return v;
}

fn dy4(b: u32, t: u32, h: u32, d4: u32) -> vec4<f32> {
  let d = 4u * d4;
  let first = (b * u.T + t) * u.C + h * HD + d;
  var v = vec4<f32>(dy[first], 0.0, 0.0, 0.0);
  if (d + 1u < HD) { v.y = dy[first + 1u]; }
  if (d + 2u < HD) { v.z = dy[first + 2u]; }
  if (d + 3u < HD) { v.w = dy[first + 3u]; }
  return v;
}

// How many vec4s the loops over a row take: HD4 itself on hardware (UNROLLED is 1), a constant the
// GPU's compiler unrolls so the rows stay in registers; on a CPU driver the same count from the
// uniforms, since lavapipe's LLVM took minutes to unroll those loops (and runs them as loops anyway).
fn row_quads() -> u32 {
  return select(u.hd4, HD4, UNROLLED == 1u);
}

// A row held in registers as scalars (vec4 arrays there took lavapipe's compiler minutes), read
// and written a vec4 at a time.
alias Row = array<f32, 4u * HD4>;

fn get4(r: ptr<function, Row>, d4: u32) -> vec4<f32> {
  return vec4<f32>((*r)[4u * d4], (*r)[4u * d4 + 1u], (*r)[4u * d4 + 2u], (*r)[4u * d4 + 3u]);
}

fn set4(r: ptr<function, Row>, d4: u32, v: vec4<f32>) {
  (*r)[4u * d4] = v.x;
  (*r)[4u * d4 + 1u] = v.y;
  (*r)[4u * d4 + 2u] = v.z;
  (*r)[4u * d4 + 3u] = v.w;
}

// Store y's vec4 d4 of a row from `first`, the components inside HD.
fn put_y(first: u32, d4: u32, v: vec4<f32>) {
  let d = 4u * d4;
  y[first] = v.x;
  if (d + 1u < HD) { y[first + 1u] = v.y; }
  if (d + 2u < HD) { y[first + 2u] = v.z; }
  if (d + 3u < HD) { y[first + 3u] = v.w; }
}

// Accumulate v into dqkv's vec4 d4 of a row from `first`.
fn add_dqkv(first: u32, d4: u32, v: vec4<f32>) {
  let d = 4u * d4;
  dqkv[first] += v.x;
  if (d + 1u < HD) { dqkv[first + 1u] += v.y; }
  if (d + 2u < HD) { dqkv[first + 2u] += v.z; }
  if (d + 3u < HD) { dqkv[first + 3u] += v.w; }
}

// Stage rows r0 .. r0 + BC of the keys (into tile_a) and values (tile_b); zeros past T.
fn stage_kv(b: u32, h: u32, r0: u32, li: u32) {
  for (var e = li; e < BC * HD4; e += BR) {
    let r = r0 + e / HD4;
    let d4 = e % HD4;
    let inside = r < u.T;
    let rc = min(r, u.T - 1u);
    tile_a[e] = select(vec4<f32>(0.0), row4(b, rc, 1u, h, d4), inside);
    tile_b[e] = select(vec4<f32>(0.0), row4(b, rc, 2u, h, d4), inside);
  }
}

// Stage rows r0 .. r0 + BC of the queries (tile_a) and of dy (tile_b); zeros past T.
fn stage_q_dy(b: u32, h: u32, r0: u32, li: u32) {
  for (var e = li; e < BC * HD4; e += BR) {
    let r = r0 + e / HD4;
    let d4 = e % HD4;
    let inside = r < u.T;
    let rc = min(r, u.T - 1u);
    tile_a[e] = select(vec4<f32>(0.0), row4(b, rc, 0u, h, d4), inside);
    tile_b[e] = select(vec4<f32>(0.0), dy4(b, rc, h, d4), inside);
  }
}

@compute @workgroup_size(BR)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n4 = row_quads();
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let t0 = wid.x * BR;
  let t = t0 + li;
  let live = t < u.T;
  var q: Row;
  var o: Row;
  for (var d4 = 0u; d4 < n4; d4++) {
    set4(&q, d4, select(vec4<f32>(0.0), row4(b, min(t, u.T - 1u), 0u, h, d4) * u.scale, live));
    set4(&o, d4, vec4<f32>(0.0));
  }
  var m = -3.0e38;
  var l = 0.0;
  let lo = doc_first(b, min(t, u.T - 1u));
  // Key blocks from the one holding the first row's first key, up to the workgroup's last row (causal).
  let first = doc_first(b, t0);
  let last = min(t0 + BR, u.T);
  for (var j0 = first - first % BC; j0 < last; j0 += BC) {
    workgroupBarrier();
    stage_kv(b, h, j0, li);
    workgroupBarrier();
    var s: array<f32, BC>;
    var block_max = -3.0e38;
    for (var j = 0u; j < BC; j++) {
      var qk = 0.0;
      for (var d4 = 0u; d4 < n4; d4++) {
        qk += dot(get4(&q, d4), tile_a[j * HD4 + d4]);
      }
      let visible = live && j0 + j <= t && j0 + j >= lo;
      s[j] = select(-3.0e38, qk, visible);
      block_max = max(block_max, s[j]);
    }
    // (No continue before the next block: its barriers need every invocation.)
    if (live && block_max > -3.0e38) {
      let m_new = max(m, block_max);
      let correction = exp(m - m_new);
      l *= correction;
      for (var d = 0u; d < 4u * n4; d++) {
        o[d] *= correction;
      }
      for (var j = 0u; j < BC; j++) {
        if (j0 + j > t) { break; }
        if (j0 + j < lo) { continue; }
        let e = exp(s[j] - m_new);
        l += e;
        if (kept(b, h, t, j0 + j)) {
          for (var d4 = 0u; d4 < n4; d4++) {
            set4(&o, d4, get4(&o, d4) + e * tile_b[j * HD4 + d4]);
          }
        }
      }
      m = m_new;
    }
  }
  if (!live) { return; }
  let norm = drop_scale() / l;
  for (var d4 = 0u; d4 < n4; d4++) {
    put_y((b * u.T + t) * u.C + h * HD + 4u * d4, d4, get4(&o, d4) * norm);
  }
  lse[wid.y * u.T + t] = m + log(l);
}

// D[b·H + h, t] = Σ_d dy · y; one invocation per (b, h, t) over a 1-D grid of BR-wide workgroups.
@compute @workgroup_size(BR)
fn backward_d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
  let i = (wid.x + wid.y * nwg.x) * BR + li;
  if (i >= u.B * u.H * u.T) { return; }
  let z = i / u.T;
  let t = i % u.T;
  let b = z / u.H;
  let h = z % u.H;
  var sum = 0.0;
  for (var d = 0u; d < HD; d++) {
    let e = (b * u.T + t) * u.C + h * HD + d;
    sum += dy[e] * yd[e];
  }
  dsum[i] = sum;
}

@compute @workgroup_size(BR)
fn backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n4 = row_quads();
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let t0 = wid.x * BR;
  let t = t0 + li;
  let live = t < u.T;
  let tc = min(t, u.T - 1u);
  var q: Row;
  var g: Row; // dy of the row
  var dq: Row;
  for (var d4 = 0u; d4 < n4; d4++) {
    set4(&q, d4, row4(b, tc, 0u, h, d4) * u.scale);
    set4(&g, d4, dy4(b, tc, h, d4));
    set4(&dq, d4, vec4<f32>(0.0));
  }
  let L = lse_in[wid.y * u.T + tc];
  let D = dsum_in[wid.y * u.T + tc];
  let keep_scale = drop_scale();
  let lo = doc_first(b, tc);
  let first = doc_first(b, t0);
  let last = min(t0 + BR, u.T);
  for (var j0 = first - first % BC; j0 < last; j0 += BC) {
    workgroupBarrier();
    stage_kv(b, h, j0, li);
    workgroupBarrier();
    for (var j = 0u; j < BC; j++) {
      if (!live || j0 + j > t) { break; }
      if (j0 + j < lo) { continue; }
      var s = 0.0;
      var dp = 0.0;
      for (var d4 = 0u; d4 < n4; d4++) {
        s += dot(get4(&q, d4), tile_a[j * HD4 + d4]);
        dp += dot(get4(&g, d4), tile_b[j * HD4 + d4]);
      }
      let p = exp(s - L);
      let dp_kept = select(0.0, dp * keep_scale, kept(b, h, t, j0 + j));
      let ds = p * (dp_kept - D) * u.scale;
      for (var d4 = 0u; d4 < n4; d4++) {
        set4(&dq, d4, get4(&dq, d4) + ds * tile_a[j * HD4 + d4]);
      }
    }
  }
  if (!live) { return; }
  for (var d4 = 0u; d4 < n4; d4++) {
    add_dqkv(at(b, t, 0u, h, 4u * d4), d4, get4(&dq, d4));
  }
}

override DKV: u32 = 3u;

@compute @workgroup_size(BR)
fn backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n4 = row_quads();
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let j0 = wid.x * BR;
  let j = j0 + li;
  let live = j < u.T;
  let jc = min(j, u.T - 1u);
  var k: Row;
  var v: Row;
  var dk: Row;
  var dv: Row;
  let want_dk = (DKV & 1u) != 0u;
  let want_dv = (DKV & 2u) != 0u;
  for (var d4 = 0u; d4 < n4; d4++) {
    set4(&k, d4, row4(b, jc, 1u, h, d4));
    if (want_dk) {
      set4(&v, d4, row4(b, jc, 2u, h, d4));
      set4(&dk, d4, vec4<f32>(0.0));
    }
    if (want_dv) {
      set4(&dv, d4, vec4<f32>(0.0));
    }
  }
  let keep_scale = drop_scale();
  // Query blocks from the one holding the workgroup's first key row (causal), up to the first whose
  // first query's document starts after the workgroup's last key.
  let last_key = min(j0 + BR, u.T) - 1u;
  for (var t0 = j0 - j0 % BC; t0 < u.T; t0 += BC) {
    if (doc_first(b, t0) > last_key) { break; }
    workgroupBarrier();
    stage_q_dy(b, h, t0, li);
    for (var e = li; e < BC; e += BR) {
      let t = min(t0 + e, u.T - 1u);
      tile_l[e] = lse_in[wid.y * u.T + t];
      tile_d[e] = dsum_in[wid.y * u.T + t];
      tile_s[e] = doc_first(b, t);
    }
    workgroupBarrier();
    for (var i = 0u; i < BC; i++) {
      let t = t0 + i;
      if (!live || t >= u.T) { break; }
      if (t < j || tile_s[i] > j) { continue; }
      var s = 0.0;
      var dp = 0.0;
      for (var d4 = 0u; d4 < n4; d4++) {
        s += dot(tile_a[i * HD4 + d4], get4(&k, d4));
        if (want_dk) {
          dp += dot(tile_b[i * HD4 + d4], get4(&v, d4));
        }
      }
      let p = exp(s * u.scale - tile_l[i]);
      let keep = kept(b, h, t, j);
      let p_kept = select(0.0, p * keep_scale, keep);
      let ds = p * (select(0.0, dp * keep_scale, keep) - tile_d[i]) * u.scale;
      for (var d4 = 0u; d4 < n4; d4++) {
        if (want_dv) {
          set4(&dv, d4, get4(&dv, d4) + p_kept * tile_b[i * HD4 + d4]);
        }
        if (want_dk) {
          set4(&dk, d4, get4(&dk, d4) + ds * tile_a[i * HD4 + d4]);
        }
      }
    }
  }
  if (!live) { return; }
  for (var d4 = 0u; d4 < n4; d4++) {
    if (want_dk) {
      add_dqkv(at(b, j, 1u, h, 4u * d4), d4, get4(&dk, d4));
    }
    if (want_dv) {
      add_dqkv(at(b, j, 2u, h, 4u * d4), d4, get4(&dv, d4));
    }
  }
}
