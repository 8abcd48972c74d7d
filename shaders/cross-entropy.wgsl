// Cross-entropy over the vocabulary fused with log-softmax: loss_r = logsumexp(logits_r) -
// logits_r[target_r]; the mean over rows is reduced by one workgroup in a fixed order.
// Backward: dlogits = (softmax - onehot(target)) * dloss / rows.

//!include grid

struct CrossEntropyUniforms { rows: u32, v: u32 }

@group(0) @binding(0) var<uniform> u: CrossEntropyUniforms;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;     // per row: logsumexp, then loss
@group(0) @binding(4) var<storage, read_write> out: array<f32>;     // forward: mean loss; backward: dlogits
@group(0) @binding(5) var<storage, read> dloss: array<f32>;

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = flat_index(wid, nwg, lid);
  if (r >= u.rows) { return; }
  let base = r * u.v;
  var m = -3.4e38;
  for (var j = 0u; j < u.v; j++) { m = max(m, logits[base + j]); }
  var sum = 0.0;
  for (var j = 0u; j < u.v; j++) { sum += exp(logits[base + j] - m); }
  let l = m + log(sum);
  lse[2u * r] = l;
  lse[2u * r + 1u] = l - logits[base + min(targets[r], u.v - 1u)];
}

// One workgroup per row (hardware GPUs: GpuContext.reductionKernel `split`). Each lane keeps a
// running max and a sum of exps rescaled to it over every 256th logit of the row, so the row is read
// once and each load is contiguous across the lanes; the lanes' pairs then merge in a fixed tree.
var<workgroup> row_max: array<f32, 256>;
var<workgroup> row_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn rows_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x + wid.y * nwg.x;
  if (r >= u.rows) { return; }
  let base = r * u.v;
  var m = -3.4e38;
  var s = 0.0;
  for (var j = lid; j < u.v; j += 256u) {
    let x = logits[base + j];
    if (x > m) {
      s = s * exp(m - x) + 1.0;
      m = x;
    } else {
      s += exp(x - m);
    }
  }
  row_max[lid] = m;
  row_sum[lid] = s;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      let m1 = row_max[lid];
      let m2 = row_max[lid + stride];
      let top = max(m1, m2);
      row_sum[lid] = row_sum[lid] * exp(m1 - top) + row_sum[lid + stride] * exp(m2 - top);
      row_max[lid] = top;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let l = row_max[0] + log(row_sum[0]);
    lse[2u * r] = l;
    lse[2u * r + 1u] = l - logits[base + min(targets[r], u.v - 1u)];
  }
}

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn mean(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var r = lid; r < u.rows; r += 256u) { sum += lse[2u * r + 1u]; }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) { partial[lid] = partial[lid] + partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[0] = partial[0] / f32(u.rows); }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.v) { return; }
  let r = i / u.v;
  let j = i % u.v;
  let p = exp(logits[i] - lse[2u * r]);
  let onehot = select(0.0, 1.0, j == min(targets[r], u.v - 1u));
  out[i] = out[i] + (p - onehot) * dloss[0] / f32(u.rows);
}
