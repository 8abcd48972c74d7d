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
//   dk += Σ_t dS_t q_t · scale.
// With dS = P (dP̃ - D), dP̃ = Z / (1 - p) (dy · v), and P̃ = Z P / (1 - p) the dropped-out
// probabilities: exactly the products of the unfused ops, so both paths agree to rounding.
//
// Dropout masks are the dropout op's (shaders/dropout.wgsl) for a [B, H, T, T] probabilities tensor:
// element (b, h, t, j) of sample `sample0 + b` at offset h T² + t T + j, so the fused and the unfused
// attention drop the same probabilities for a seed.
//
// HD (the head dimension), BR and BC are defines; the grads accumulate (+=) into dqkv.

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

var<workgroup> tile_a: array<f32, BC * HD>; // forward, dq: keys; dkv: queries
var<workgroup> tile_b: array<f32, BC * HD>; // forward, dq: values; dkv: dy
var<workgroup> tile_l: array<f32, BC>;      // dkv: L of the staged queries
var<workgroup> tile_d: array<f32, BC>;      // dkv: D of the staged queries

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

// Stage rows r0 .. r0 + BC of the keys (into tile_a) and values (tile_b); zeros past T.
fn stage_kv(b: u32, h: u32, r0: u32, li: u32) {
  for (var e = li; e < BC * HD; e += BR) {
    let r = r0 + e / HD;
    let d = e % HD;
    let inside = r < u.T;
    let rc = min(r, u.T - 1u);
    tile_a[e] = select(0.0, qkv[at(b, rc, 1u, h, d)], inside);
    tile_b[e] = select(0.0, qkv[at(b, rc, 2u, h, d)], inside);
  }
}

// Stage rows r0 .. r0 + BC of the queries (tile_a) and of dy (tile_b); zeros past T.
fn stage_q_dy(b: u32, h: u32, r0: u32, li: u32) {
  for (var e = li; e < BC * HD; e += BR) {
    let r = r0 + e / HD;
    let d = e % HD;
    let inside = r < u.T;
    let rc = min(r, u.T - 1u);
    tile_a[e] = select(0.0, qkv[at(b, rc, 0u, h, d)], inside);
    tile_b[e] = select(0.0, dy[(b * u.T + rc) * u.C + h * HD + d], inside);
  }
}

@compute @workgroup_size(BR)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let t0 = wid.x * BR;
  let t = t0 + li;
  let live = t < u.T;
  var q: array<f32, HD>;
  var o: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    q[d] = select(0.0, qkv[at(b, min(t, u.T - 1u), 0u, h, d)] * u.scale, live);
    o[d] = 0.0;
  }
  var m = -3.0e38;
  var l = 0.0;
  // Key blocks up to the workgroup's last row (causal).
  let last = min(t0 + BR, u.T);
  for (var j0 = 0u; j0 < last; j0 += BC) {
    workgroupBarrier();
    stage_kv(b, h, j0, li);
    workgroupBarrier();
    var s: array<f32, BC>;
    var block_max = -3.0e38;
    for (var j = 0u; j < BC; j++) {
      var dot = 0.0;
      for (var d = 0u; d < HD; d++) {
        dot += q[d] * tile_a[j * HD + d];
      }
      let visible = live && j0 + j <= t;
      s[j] = select(-3.0e38, dot, visible);
      block_max = max(block_max, s[j]);
    }
    // (No continue before the next block: its barriers need every invocation.)
    if (live && block_max > -3.0e38) {
      let m_new = max(m, block_max);
      let correction = exp(m - m_new);
      l *= correction;
      for (var d = 0u; d < HD; d++) {
        o[d] *= correction;
      }
      for (var j = 0u; j < BC; j++) {
        if (j0 + j > t) { break; }
        let e = exp(s[j] - m_new);
        l += e;
        if (kept(b, h, t, j0 + j)) {
          for (var d = 0u; d < HD; d++) {
            o[d] += e * tile_b[j * HD + d];
          }
        }
      }
      m = m_new;
    }
  }
  if (!live) { return; }
  let norm = drop_scale() / l;
  for (var d = 0u; d < HD; d++) {
    y[(b * u.T + t) * u.C + h * HD + d] = o[d] * norm;
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
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let t0 = wid.x * BR;
  let t = t0 + li;
  let live = t < u.T;
  let tc = min(t, u.T - 1u);
  var q: array<f32, HD>;
  var g: array<f32, HD>; // dy of the row
  var dq: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    q[d] = qkv[at(b, tc, 0u, h, d)] * u.scale;
    g[d] = dy[(b * u.T + tc) * u.C + h * HD + d];
    dq[d] = 0.0;
  }
  let L = lse_in[wid.y * u.T + tc];
  let D = dsum_in[wid.y * u.T + tc];
  let keep_scale = drop_scale();
  let last = min(t0 + BR, u.T);
  for (var j0 = 0u; j0 < last; j0 += BC) {
    workgroupBarrier();
    stage_kv(b, h, j0, li);
    workgroupBarrier();
    for (var j = 0u; j < BC; j++) {
      if (!live || j0 + j > t) { break; }
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < HD; d++) {
        s += q[d] * tile_a[j * HD + d];
        dp += g[d] * tile_b[j * HD + d];
      }
      let p = exp(s - L);
      let dp_kept = select(0.0, dp * keep_scale, kept(b, h, t, j0 + j));
      let ds = p * (dp_kept - D) * u.scale;
      for (var d = 0u; d < HD; d++) {
        dq[d] += ds * tile_a[j * HD + d];
      }
    }
  }
  if (!live) { return; }
  for (var d = 0u; d < HD; d++) {
    let e = at(b, t, 0u, h, d);
    dqkv[e] = dqkv[e] + dq[d];
  }
}

@compute @workgroup_size(BR)
fn backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wid.y / u.H;
  let h = wid.y % u.H;
  let j0 = wid.x * BR;
  let j = j0 + li;
  let live = j < u.T;
  let jc = min(j, u.T - 1u);
  var k: array<f32, HD>;
  var v: array<f32, HD>;
  var dk: array<f32, HD>;
  var dv: array<f32, HD>;
  for (var d = 0u; d < HD; d++) {
    k[d] = qkv[at(b, jc, 1u, h, d)];
    v[d] = qkv[at(b, jc, 2u, h, d)];
    dk[d] = 0.0;
    dv[d] = 0.0;
  }
  let keep_scale = drop_scale();
  // Query blocks from the one holding the workgroup's first key row (causal).
  for (var t0 = j0 - j0 % BC; t0 < u.T; t0 += BC) {
    workgroupBarrier();
    stage_q_dy(b, h, t0, li);
    for (var e = li; e < BC; e += BR) {
      let t = min(t0 + e, u.T - 1u);
      tile_l[e] = lse_in[wid.y * u.T + t];
      tile_d[e] = dsum_in[wid.y * u.T + t];
    }
    workgroupBarrier();
    for (var i = 0u; i < BC; i++) {
      let t = t0 + i;
      if (!live || t >= u.T) { break; }
      if (t < j) { continue; }
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < HD; d++) {
        s += tile_a[i * HD + d] * k[d];
        dp += tile_b[i * HD + d] * v[d];
      }
      let p = exp(s * u.scale - tile_l[i]);
      let keep = kept(b, h, t, j);
      let p_kept = select(0.0, p * keep_scale, keep);
      let ds = p * (select(0.0, dp * keep_scale, keep) - tile_d[i]) * u.scale;
      for (var d = 0u; d < HD; d++) {
        dv[d] += p_kept * tile_b[i * HD + d];
        dk[d] += ds * tile_a[i * HD + d];
      }
    }
  }
  if (!live) { return; }
  for (var d = 0u; d < HD; d++) {
    let ek = at(b, j, 1u, h, d);
    let ev = at(b, j, 2u, h, d);
    dqkv[ek] = dqkv[ek] + dk[d];
    dqkv[ev] = dqkv[ev] + dv[d];
  }
}
