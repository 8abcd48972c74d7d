/**
 * Plain TypeScript references for the nn ops, in float64, written from the math (not from the
 * shaders): forward values and vector-Jacobian products for a given output grad.
 */
export type Vec = Float64Array;

export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i]! - want[i]!) ** 2;
    den += want[i]! ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** C[m, n] = sum_k A[m, k] B[k, n], row-major. */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Vec {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p]!;
      for (let j = 0; j < n; j++) c[i * n + j]! += av * b[p * n + j]!;
    }
  return c;
}

export function transpose(a: ArrayLike<number>, rows: number, cols: number): Vec {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

/** y = x W + b with W [in, out]; grads for dy. */
export function linear(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | null,
  rows: number,
  inF: number,
  outF: number,
  dy: ArrayLike<number>,
) {
  const y = matmul(x, w, rows, inF, outF);
  if (b) for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) y[r * outF + j]! += b[j]!;
  const dx = matmul(dy, transpose(w, inF, outF), rows, outF, inF);
  const dw = matmul(transpose(x, rows, inF), dy, inF, rows, outF);
  const db = new Float64Array(outF);
  for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) db[j]! += dy[r * outF + j]!;
  return { y, dx, dw, db };
}

export function embedding(
  ids: ArrayLike<number>,
  wte: ArrayLike<number>,
  wpe: ArrayLike<number>,
  batch: number,
  t: number,
  c: number,
  dy: ArrayLike<number>,
  vocab: number,
  positions?: ArrayLike<number>,
) {
  const y = new Float64Array(batch * t * c);
  const dwte = new Float64Array(vocab * c);
  const dwpe = new Float64Array(wpe.length);
  for (let r = 0; r < batch * t; r++) {
    const id = ids[r]!;
    const p = positions ? positions[r]! : r % t;
    for (let j = 0; j < c; j++) {
      y[r * c + j] = wte[id * c + j]! + wpe[p * c + j]!;
      dwte[id * c + j]! += dy[r * c + j]!;
      dwpe[p * c + j]! += dy[r * c + j]!;
    }
  }
  return { y, dwte, dwpe };
}

export function layerNorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number>,
  rows: number,
  c: number,
  dy: ArrayLike<number>,
  eps = 1e-5,
) {
  const y = new Float64Array(rows * c);
  const dx = new Float64Array(rows * c);
  const dw = new Float64Array(c);
  const db = new Float64Array(c);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let j = 0; j < c; j++) mean += x[r * c + j]!;
    mean /= c;
    let v = 0;
    for (let j = 0; j < c; j++) v += (x[r * c + j]! - mean) ** 2;
    v /= c;
    const rstd = 1 / Math.sqrt(v + eps);
    const xhat = new Float64Array(c);
    for (let j = 0; j < c; j++) {
      xhat[j] = (x[r * c + j]! - mean) * rstd;
      y[r * c + j] = xhat[j]! * w[j]! + b[j]!;
      dw[j]! += dy[r * c + j]! * xhat[j]!;
      db[j]! += dy[r * c + j]!;
    }
    // Full Jacobian of xhat w.r.t. x: d xhat_j / d x_i = rstd (δij - 1/c - xhat_i xhat_j / c).
    for (let i = 0; i < c; i++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += dy[r * c + j]! * w[j]! * rstd * ((i === j ? 1 : 0) - 1 / c - (xhat[i]! * xhat[j]!) / c);
      dx[r * c + i] = s;
    }
  }
  return { y, dx, dw, db };
}

/** RMSNorm: y = x · w / sqrt(mean(x²) + eps), its grads through the full Jacobian. */
export function rmsNorm(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, c: number, dy: ArrayLike<number>, eps = 1e-5) {
  const y = new Float64Array(rows * c);
  const dx = new Float64Array(rows * c);
  const dw = new Float64Array(c);
  for (let r = 0; r < rows; r++) {
    let ms = 0;
    for (let j = 0; j < c; j++) ms += x[r * c + j]! ** 2;
    const rstd = 1 / Math.sqrt(ms / c + eps);
    for (let j = 0; j < c; j++) {
      y[r * c + j] = x[r * c + j]! * rstd * w[j]!;
      dw[j]! += dy[r * c + j]! * x[r * c + j]! * rstd;
    }
    // d y_j / d x_i = w_j (δij rstd - rstd³ x_i x_j / c).
    for (let i = 0; i < c; i++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += dy[r * c + j]! * w[j]! * ((i === j ? rstd : 0) - (rstd ** 3 * x[r * c + i]! * x[r * c + j]!) / c);
      dx[r * c + i] = s;
    }
  }
  return { y, dx, dw };
}

/** SwiGLU of rows of 2f (gate, then value): y = silu(gate) · value, and dx under dy, in float64. */
export function swiglu(x: ArrayLike<number>, rows: number, f: number, dy: ArrayLike<number>) {
  const y = new Float64Array(rows * f);
  const dx = new Float64Array(rows * 2 * f);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < f; j++) {
      const a = x[r * 2 * f + j]!;
      const v = x[r * 2 * f + f + j]!;
      const s = 1 / (1 + Math.exp(-a));
      y[r * f + j] = a * s * v;
      dx[r * 2 * f + j] = dy[r * f + j]! * v * (s + a * s * (1 - s));
      dx[r * 2 * f + f + j] = dy[r * f + j]! * a * s;
    }
  }
  return { y, dx };
}

export function gelu(x: ArrayLike<number>, dy: ArrayLike<number>) {
  const k = Math.sqrt(2 / Math.PI);
  const y = new Float64Array(x.length);
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    const f = (z: number) => 0.5 * z * (1 + Math.tanh(k * (z + 0.044715 * z ** 3)));
    y[i] = f(v);
    const h = 1e-4; // central difference of the float64 function: an independent check of the closed form
    dx[i] = (dy[i]! * (f(v + h) - f(v - h))) / (2 * h);
  }
  return { y, dx };
}

/**
 * Causal attention on qkv [B, T, 3C] with H heads; grads for dy [B, T, C]. With `starts` (one per
 * query, [B · T]), query i of sample b sees keys starts[b T + i] ..= i only.
 */
export function attention(
  qkv: ArrayLike<number>,
  batch: number,
  t: number,
  c: number,
  heads: number,
  dy: ArrayLike<number>,
  starts?: ArrayLike<number>,
) {
  const hd = c / heads;
  const scale = 1 / Math.sqrt(hd);
  const y = new Float64Array(batch * t * c);
  const dqkv = new Float64Array(qkv.length);
  const at = (b: number, i: number, part: number, h: number, d: number) => b * t * 3 * c + i * 3 * c + part * c + h * hd + d;
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++) {
      const p = new Float64Array(t * t);
      for (let i = 0; i < t; i++) {
        const lo = starts ? starts[b * t + i]! : 0;
        let m = -Infinity;
        const s = new Float64Array(i + 1);
        for (let j = lo; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += qkv[at(b, i, 0, h, d)]! * qkv[at(b, j, 1, h, d)]!;
          s[j] = dot * scale;
          m = Math.max(m, s[j]!);
        }
        let sum = 0;
        for (let j = lo; j <= i; j++) sum += Math.exp(s[j]! - m);
        for (let j = lo; j <= i; j++) p[i * t + j] = Math.exp(s[j]! - m) / sum;
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let j = lo; j <= i; j++) acc += p[i * t + j]! * qkv[at(b, j, 2, h, d)]!;
          y[b * t * c + i * c + h * hd + d] = acc;
        }
      }
      for (let i = 0; i < t; i++) {
        const lo = starts ? starts[b * t + i]! : 0;
        const dyi = (d: number) => dy[b * t * c + i * c + h * hd + d]!;
        const dp = new Float64Array(i + 1);
        for (let j = lo; j <= i; j++) {
          for (let d = 0; d < hd; d++) {
            dp[j]! += dyi(d) * qkv[at(b, j, 2, h, d)]!;
            dqkv[at(b, j, 2, h, d)]! += p[i * t + j]! * dyi(d);
          }
        }
        let dot = 0;
        for (let j = lo; j <= i; j++) dot += p[i * t + j]! * dp[j]!;
        for (let j = lo; j <= i; j++) {
          const ds = p[i * t + j]! * (dp[j]! - dot) * scale;
          for (let d = 0; d < hd; d++) {
            dqkv[at(b, i, 0, h, d)]! += ds * qkv[at(b, j, 1, h, d)]!;
            dqkv[at(b, j, 1, h, d)]! += ds * qkv[at(b, i, 0, h, d)]!;
          }
        }
      }
    }
  return { y, dqkv };
}

/** Mean cross-entropy; dlogits for d loss = dloss. */
export function crossEntropy(logits: ArrayLike<number>, targets: ArrayLike<number>, rows: number, v: number, dloss = 1) {
  let loss = 0;
  const dlogits = new Float64Array(rows * v);
  // Rows whose target is 0xffffffff are masked: not summed, not counted (Megatron clamps the count to 1).
  let counted = 0;
  for (let r = 0; r < rows; r++) if (targets[r] !== 0xffffffff) counted += 1;
  const n = Math.max(counted, 1);
  for (let r = 0; r < rows; r++) {
    if (targets[r] === 0xffffffff) continue;
    let m = -Infinity;
    for (let j = 0; j < v; j++) m = Math.max(m, logits[r * v + j]!);
    let sum = 0;
    for (let j = 0; j < v; j++) sum += Math.exp(logits[r * v + j]! - m);
    const lse = m + Math.log(sum);
    loss += lse - logits[r * v + targets[r]!]!;
    for (let j = 0; j < v; j++) dlogits[r * v + j] = ((Math.exp(logits[r * v + j]! - lse) - (j === targets[r] ? 1 : 0)) * dloss) / n;
  }
  return { loss: loss / n, dlogits };
}

/** PCG hash (the dropout mask's generator, written from its published constants). */
export function pcg(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}
