/**
 * Incremental decoding with a key/value cache: each new token runs the GPT on that one position
 * only, against the keys and values of every earlier position kept on the GPU (per layer, [T, G·hd]:
 * one k and v per key head, so grouped-query attention's cache is G / H of the heads').
 * The arithmetic is the training forward's, position by position, so the logits equal those of a
 * full forward over the sequence (test/nn/decode.test.ts).
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import type { Gpt, GptConfig } from './gpt.js';
import { queryGroups } from './gpt-spec.js';
import { Graph } from './graph.js';
import { add, addInto, embedding, matmulInto } from './ops.js';
import { ShapeMismatch, Tensor } from './tensor.js';

/** The most positions a decoder of `c` can hold: its position table's, or --max-position-embeddings (else --seq-length) without one. */
export const positionLimit = (c: GptConfig): number => c.maxPositionEmbeddings ?? c.seqLength;

export class GptDecoder {
  private readonly keys: DeviceBuffer[] = [];
  private readonly values: DeviceBuffer[] = [];
  /** Tokens in the cache. */
  private length = 0;

  /** A cache of `capacity` positions (at most positionLimit) per layer, for k and v of each key head. */
  constructor(
    private readonly ctx: GpuContext,
    private readonly gpt: Gpt,
    readonly capacity = positionLimit(gpt.config),
  ) {
    const c = gpt.config;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > positionLimit(c))
      throw new ShapeMismatch(`a KV cache of ${capacity} positions: this model holds 1 to ${positionLimit(c)} (--max-position-embeddings)`);
    const width = queryGroups(c) * (c.hiddenSize / c.numAttentionHeads);
    for (let l = 0; l < c.numLayers; l++) {
      for (const list of [this.keys, this.values]) {
        list.push(
          ctx.createBuffer({
            label: `kv cache ${l}`,
            size: capacity * width * 4,
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

  /** Forget every token. */
  reset(): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: 'kv cache reset' });
    for (const b of [...this.keys, ...this.values]) encoder.clearBuffer(b.gpu);
    this.ctx.submit([encoder.finish()]);
    this.length = 0;
  }

  /** Append `token` at the next position; the logits for the position after it. */
  async step(token: number): Promise<Float32Array> {
    const c = this.gpt.config;
    if (this.length >= this.capacity)
      throw new ShapeMismatch(`the KV cache holds ${this.capacity} positions; reset it or keep a shorter context`);
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize)
      throw new ShapeMismatch(`token ${token} is not in the vocabulary of ${c.vocabSize}`);
    const h = c.hiddenSize;
    const hd = h / c.numAttentionHeads;
    // Each of the G key heads serves `rep` query heads, whose q are adjacent: one batch of rep rows per group.
    const groups = queryGroups(c);
    const rep = c.numAttentionHeads / groups;
    const kv = groups * hd;
    const n = this.length + 1;
    const at = this.length;
    const g = new Graph(this.ctx, { training: false });
    try {
      let x = embedding(g, g.input(Uint32Array.of(token), [1, 1], 'token'), this.gpt.param('wte.weight'), this.gpt.positions(), at);
      const rope = this.gpt.rotaryOf(g, 1, at);
      for (let l = 0; l < c.numLayers; l++) {
        const keys = new Tensor(this.keys[l]!, 0, [n * kv], 'float32');
        const values = new Tensor(this.values[l]!, 0, [n * kv], 'float32');
        const qkv = this.gpt.groupedQkv(g, x, l, rope);
        // This position's k and v into row `at` of the caches (zero there since the last reset).
        addInto(g, new Tensor(this.keys[l]!, at * kv, [kv], 'float32'), new Tensor(qkv.buffer, qkv.offset + h, [kv], 'float32'));
        addInto(g, new Tensor(this.values[l]!, at * kv, [kv], 'float32'), new Tensor(qkv.buffer, qkv.offset + h + kv, [kv], 'float32'));
        // Scores [heads, n]: q_h · K_g[j] over the n positions so far, then the softmax.
        const scores = g.tensor([c.numAttentionHeads, n], 'decode.scores');
        matmulInto(
          g,
          { m: rep, n, k: hd, nb1: groups },
          { t: qkv, rs: hd, cs: 1, b1: rep * hd },
          { t: keys, rs: 1, cs: kv, b1: hd },
          { t: scores, rs: n, cs: 1, b1: rep * n },
        );
        g.runner.dispatch(
          'softmax',
          'forward',
          { WG: 64 },
          { rows: c.numAttentionHeads, t: n, scale: 1 / Math.sqrt(hd), q: 1, qoff: at },
          { s: scores.binding(g.ctx).binding },
          Math.ceil(c.numAttentionHeads / 64),
        );
        const y = g.tensor([1, 1, h], 'decode.attention');
        matmulInto(
          g,
          { m: rep, n: hd, k: n, nb1: groups },
          { t: scores, rs: n, cs: 1, b1: rep * n },
          { t: values, rs: kv, cs: 1, b1: hd },
          { t: y, rs: hd, cs: 1, b1: rep * hd },
        );
        x = add(g, x, this.gpt.projection(g, y, l));
        x = add(g, x, this.gpt.mlp(g, x, l));
      }
      const logits = this.gpt.logits(g, x);
      const out = await g.read(logits);
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
