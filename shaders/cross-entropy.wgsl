// Cross-entropy over the vocabulary fused with log-softmax: loss_r = logsumexp(logits_r) -
// logits_r[target_r]; the mean over the counted rows is reduced by one workgroup in a fixed order.
// A row whose target is IGNORED (a masked token: Megatron's loss mask, PyTorch's ignore_index) adds
// nothing and is not counted; with every row masked the loss is 0 (Megatron clamps the count to 1).
// Backward: dlogits = (softmax - onehot(target)) * dloss / counted, and 0 in a masked row.

//!include grid

struct CrossEntropyUniforms { rows: u32, v: u32 }

const IGNORED = 0xffffffffu;

@group(0) @binding(0) var<uniform> u: CrossEntropyUniforms;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// Per row: logsumexp, then the row's loss; `mean` overwrites the loss with the count of rows the
// mean divides by (0 in a masked row), which the backward reads.
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
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
  lse[2u * r + 1u] = select(l - logits[base + min(targets[r], u.v - 1u)], 0.0, targets[r] == IGNORED);
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
    lse[2u * r + 1u] = select(l - logits[base + min(targets[r], u.v - 1u)], 0.0, targets[r] == IGNORED);
  }
}

var<workgroup> partial: array<f32, 256>;
var<workgroup> counted: array<u32, 256>;

@compute @workgroup_size(256)
fn mean(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  var count = 0u;
  for (var r = lid; r < u.rows; r += 256u) {
    sum += lse[2u * r + 1u]; // a masked row's is 0
    count += select(1u, 0u, targets[r] == IGNORED);
  }
  partial[lid] = sum;
  counted[lid] = count;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
    if (lid < stride) {
      partial[lid] = partial[lid] + partial[lid + stride];
      counted[lid] = counted[lid] + counted[lid + stride];
    }
    workgroupBarrier();
  }
  let n = f32(max(counted[0], 1u));
  if (lid == 0u) { out[0] = partial[0] / n; }
  for (var r = lid; r < u.rows; r += 256u) { lse[2u * r + 1u] = select(n, 0.0, targets[r] == IGNORED); }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.v) { return; }
  let r = i / u.v;
  let j = i % u.v;
  if (targets[r] == IGNORED) { return; }
  let p = exp(logits[i] - lse[2u * r]);
  let onehot = select(0.0, 1.0, j == min(targets[r], u.v - 1u));
  out[i] = out[i] + (p - onehot) * dloss[0] / lse[2u * r + 1u];
}
