/**
 * Incremental decoding with a key/value cache: each new token runs the GPT on that one position
 * only, against the keys and values of every earlier position kept on the GPU (per layer, [T, G·hd]:
 * one k and v per key head, so grouped-query attention's cache is G / H of the heads'); a prompt
 * runs as a prefill, many positions per forward. The arithmetic is the training forward's, so the
 * logits equal those of a full forward over the sequence (test/nn/decode.test.ts).
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import type { Gpt, GptConfig } from './gpt.js';
import { attentionWidth, headDim, qkvWidth, queryGroups } from './gpt-spec.js';
import { Graph } from './graph.js';
import { add, embedding, matmulInto } from './ops.js';
import { ShapeMismatch, Tensor } from './tensor.js';

/** The most positions a decoder of `c` can hold: its position table's, or --max-position-embeddings (else --seq-length) without one. */
export const positionLimit = (c: GptConfig): number => c.maxPositionEmbeddings ?? c.seqLength;

export class GptDecoder {
  private readonly keys: DeviceBuffer[] = [];
  private readonly values: DeviceBuffer[] = [];
  /** Tokens in the cache. */
  private length = 0;
  /**
   * Positions per prefill forward: 256, or fewer where the scores every layer of one forward holds
   * until it ends (layers × heads × positions × cache) would pass 256 MiB.
   */
  readonly prefillChunk: number;
  /** Floats per position of a layer's key (or value) cache: G key heads of hd each. */
  private readonly kv: number;

  /** A cache of `capacity` positions (at most positionLimit) per layer, for k and v of each key head. */
  constructor(
    private readonly ctx: GpuContext,
    private readonly gpt: Gpt,
    readonly capacity = positionLimit(gpt.config),
  ) {
    const c = gpt.config;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > positionLimit(c))
      throw new ShapeMismatch(`a KV cache of ${capacity} positions: this model holds 1 to ${positionLimit(c)} (--max-position-embeddings)`);
    this.kv = queryGroups(c) * headDim(c);
    this.prefillChunk = Math.max(1, Math.min(256, Math.floor(2 ** 26 / (c.numLayers * c.numAttentionHeads * capacity))));
    for (let l = 0; l < c.numLayers; l++) {
      for (const list of [this.keys, this.values]) {
        list.push(
          ctx.createBuffer({
            label: `kv cache ${l}`,
            size: capacity * this.kv * 4,
            usage: storageUsage(),
            category: 'activations',
          }),
        );
      }
    }
    this.reset();
  }

  /** Tokens the cache holds. */
  get position(): number {
    return this.length;
  }

  /** Forget every token (a row is written before attention reads it). */
  reset(): void {
    this.length = 0;
  }

  /** Append `token` at the next position; the logits for the position after it. */
  step(token: number): Promise<Float32Array> {
    return this.append([token]);
  }

  /**
   * Append `tokens` at the next positions (a prompt's prefill), `chunk` positions per forward; the
   * logits for the position after the last. Each chunk's queries attend to the cache and to each
   * other causally, as a full forward's would.
   */
  async append(tokens: readonly number[], chunk = this.prefillChunk): Promise<Float32Array> {
    this.check(tokens);
    let logits: Float32Array | null = null;
    for (let from = 0; from < tokens.length; from += chunk) logits = await this.forward(tokens.slice(from, from + chunk), false);
    return logits!;
  }

  /**
   * As append, but the logits after every one of `tokens`: tokens.length rows of the vocabulary,
   * row i the logits for the position after tokens[i] (what a prompt's log-probabilities need).
   */
  async appendEvery(tokens: readonly number[], chunk = this.prefillChunk): Promise<Float32Array> {
    this.check(tokens);
    const vocab = this.gpt.config.vocabSize;
    const rows = new Float32Array(tokens.length * vocab);
    for (let from = 0; from < tokens.length; from += chunk)
      rows.set(await this.forward(tokens.slice(from, from + chunk), true), from * vocab);
    return rows;
  }

  /** Tokens that fit in the cache and are in the vocabulary, or an error saying which is not. */
  private check(tokens: readonly number[]): void {
    const c = this.gpt.config;
    if (tokens.length === 0) throw new ShapeMismatch('append: no tokens');
    if (this.length + tokens.length > this.capacity)
      throw new ShapeMismatch(
        `the KV cache holds ${this.capacity} positions (${this.length} filled, ${tokens.length} more asked); reset it or keep a shorter context`,
      );
    for (const token of tokens)
      if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize)
        throw new ShapeMismatch(`token ${token} is not in the vocabulary of ${c.vocabSize}`);
  }

  /** One forward of `tokens` at positions from `length`: their k and v into the caches, the last one's logits (or every one's). */
  private async forward(tokens: readonly number[], every: boolean): Promise<Float32Array> {
    const c = this.gpt.config;
    const h = c.hiddenSize;
    const heads = c.numAttentionHeads;
    const hd = headDim(c);
    // q of every head, and the attention's output: H·hd wide (h unless --kv-channels says otherwise).
    const a = attentionWidth(c);
    // Each of the G key heads serves `rep` query heads, whose q are adjacent: one batch per (group, head of it).
    const groups = queryGroups(c);
    const rep = heads / groups;
    const kv = this.kv;
    const t = tokens.length;
    const at = this.length;
    const n = at + t;
    const g = new Graph(this.ctx, { training: false });
    try {
      let x = embedding(g, g.input(Uint32Array.from(tokens), [1, t], 'tokens'), this.gpt.param('wte.weight'), this.gpt.positions(), at);
      const rope = this.gpt.rotaryOf(g, t, at);
      for (let l = 0; l < c.numLayers; l++) {
        const keys = new Tensor(this.keys[l]!, 0, [this.capacity * kv], 'float32');
        const values = new Tensor(this.values[l]!, 0, [this.capacity * kv], 'float32');
        const qkv = this.gpt.groupedQkv(g, x, l, rope);
        const Q = qkv.binding(g.ctx);
        g.runner.dispatch(
          'kv-cache',
          'append',
          { WG: 256 },
          { rows: t, width: qkvWidth(c), c: a, kv, at, qkv_off: Q.shift },
          { qkv: Q.binding, keys: keys.binding(g.ctx).binding, values: values.binding(g.ctx).binding },
          Math.ceil((t * kv) / 256),
        );
        // Scores [heads, t, n]: q of each new position against the n keys so far, then the causal
        // softmax of queries at positions at.. (key j > a query's position is zeroed).
        const scores = g.tensor([heads, t, n], 'decode.scores');
        matmulInto(
          g,
          { m: t, n, k: hd, nb0: rep, nb1: groups },
          { t: qkv, rs: qkvWidth(c), cs: 1, b0: hd, b1: rep * hd },
          { t: keys, rs: 1, cs: kv, b0: 0, b1: hd },
          { t: scores, rs: n, cs: 1, b0: t * n, b1: rep * t * n },
        );
        g.runner.dispatch(
          'softmax',
          'forward',
          { WG: 64 },
          { rows: heads * t, t: n, scale: 1 / Math.sqrt(hd), q: t, qoff: at },
          { s: scores.binding(g.ctx).binding, starts: g.runner.dummy },
          Math.ceil((heads * t) / 64),
        );
        const y = g.tensor([1, t, a], 'decode.attention');
        matmulInto(
          g,
          { m: t, n: hd, k: n, nb0: rep, nb1: groups },
          { t: scores, rs: n, cs: 1, b0: t * n, b1: rep * t * n },
          { t: values, rs: kv, cs: 1, b0: 0, b1: hd },
          { t: y, rs: a, cs: 1, b0: hd, b1: rep * hd },
        );
        x = add(g, x, this.gpt.projection(g, y, l));
        x = add(g, x, this.gpt.mlp(g, x, l));
      }
      const last = every ? x : new Tensor(x.buffer, x.offset + (t - 1) * h, [1, 1, h], 'float32');
      const out = await g.read(this.gpt.logits(g, last));
      this.length = n;
      return Float32Array.from(out);
    } finally {
      g.release();
    }
  }

  destroy(): void {
    for (const b of [...this.keys, ...this.values]) b.destroy();
  }
}
