// Token + position embedding: y[r, c] = wte[ids[r], c] + wpe[r % T, c] (params in P_DTYPE; no wpe
// without POSITIONS), or wpe[pos[r], c] with POSITION_IDS (positions in documents, src/nn/documents.ts,
// whose table grads backward_tokens adds up with the positions as the ids). A token table over the storage binding limit is bound a window of tokens at a
// time, [first, first + count), one dispatch each; each row is written by its token's window.
// Backward scatter-adds into the embedding grads without atomics: one invocation per column walks
// the tokens in order, so duplicate ids add up deterministically. backward_tokens_sorted (hardware
// GPUs) does the same additions in the same order, with one invocation per distinct token and column.

//!include grid
//!include half

override P_DTYPE: u32 = 0u;
// false: no position table (rope, or none): y is the token embedding alone, `table2` unread.
override POSITIONS: bool = true;
override POSITION_IDS: bool = false;

struct EmbeddingUniforms {
  rows: u32, c: u32, t: u32, vocab: u32,
  wte_off: u32, wpe_off: u32,   // elements from each binding's start (wte in `table`, wpe in `table2`)
  dwte_off: u32, dwpe_off: u32,
  distinct: u32, starts_off: u32, tokens_off: u32,  // backward_tokens_sorted
  first: u32, count: u32,  // forward: the tokens `table` holds (a window of a table over the binding limit)
}

@group(0) @binding(0) var<uniform> u: EmbeddingUniforms;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> table2: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> pos: array<u32>;

fn load_p(e: u32, second: bool) -> f32 {
  if (P_DTYPE == DTYPE_F32) {
    return bitcast<f32>(select(table[e], table2[e], second));
  }
  return half_of(select(table[e >> 1u], table2[e >> 1u], second), e, P_DTYPE);
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.rows * u.c) { return; }
  let r = i / u.c;
  let col = i % u.c;
  let id = min(ids[r], u.vocab - 1u); // ids are checked on the host; never read out of the table
  if (id < u.first || id - u.first >= u.count) { return; } // another window's token
  var e = load_p(u.wte_off + (id - u.first) * u.c + col, false);
  if (POSITIONS) {
    var p = r % u.t;
    if (POSITION_IDS) { p = pos[r]; }
    e += load_p(u.wpe_off + p * u.c + col, true);
  }
  y[i] = e;
}

// Backward bindings: dy at 1, grads at 2.
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(WG)
fn backward_tokens(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let col = flat_index(wid, nwg, lid);
  if (col >= u.c) { return; }
  for (var r = 0u; r < u.rows; r++) {
    let at = u.dwte_off + min(ids[r], u.vocab - 1u) * u.c + col;
    grad[at] = grad[at] + dy[r * u.c + col];
  }
}

@compute @workgroup_size(WG)
fn backward_positions(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.t * u.c) { return; }
  var sum = 0.0;
  for (var r = i / u.c; r < u.rows; r += u.t) {
    sum += dy[r * u.c + i % u.c];
  }
  grad[u.dwpe_off + i] = grad[u.dwpe_off + i] + sum;
}

// The rows sorted by token on the host, stably (src/nn/split-sums.ts, tokenOrder): `index` holds
// the sorted rows, then per distinct token where its rows start (and one past the last), then the
// distinct tokens. Invocation (k, col) adds the k-th distinct token's rows in row order, as
// backward_tokens does for that grad element, so the grads are the same to the bit; distinct tokens
// run in parallel.
@group(0) @binding(7) var<storage, read> index: array<u32>;

@compute @workgroup_size(WG)
fn backward_tokens_sorted(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= u.distinct * u.c) { return; }
  let k = i / u.c;
  let col = i % u.c;
  let at = u.dwte_off + index[u.tokens_off + k] * u.c + col;
  var acc = grad[at];
  for (var j = index[u.starts_off + k]; j < index[u.starts_off + k + 1u]; j++) {
    acc = acc + dy[index[j] * u.c + col];
  }
  grad[at] = acc;
}
