/**
 * Incremental decoding with a key/value cache: each new token runs the GPT on that one position
 * only, against the keys and values of every earlier position kept on the GPU (per layer, [T, C]).
 * The arithmetic is the training forward's, position by position, so the logits equal those of a
 * full forward over the sequence (test/nn/decode.test.ts).
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import type { Gpt } from './gpt.js';
import { Graph } from './graph.js';
import { add, addInto, embedding, matmulInto } from './ops.js';
import { ShapeMismatch, Tensor } from './tensor.js';

export class GptDecoder {
  private readonly keys: DeviceBuffer[] = [];
  private readonly values: DeviceBuffer[] = [];
  /** Tokens in the cache. */
  private length = 0;
  readonly capacity: number;

  constructor(
    private readonly ctx: GpuContext,
    private readonly gpt: Gpt,
  ) {
    const c = gpt.config;
    this.capacity = c.maxPositionEmbeddings ?? c.seqLength;
    for (let l = 0; l < c.numLayers; l++) {
      for (const list of [this.keys, this.values]) {
        list.push(
          ctx.createBuffer({
            label: `kv cache ${l}`,
            size: this.capacity * c.hiddenSize * 4,
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
      throw new ShapeMismatch(
        `the KV cache holds ${this.capacity} positions (--max-position-embeddings); reset it or keep a shorter context`,
      );
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize)
      throw new ShapeMismatch(`token ${token} is not in the vocabulary of ${c.vocabSize}`);
    const h = c.hiddenSize;
    const heads = c.numAttentionHeads;
    const hd = h / heads;
    const n = this.length + 1;
    const at = this.length;
    const g = new Graph(this.ctx, { training: false });
    try {
      let x = embedding(g, g.input(Uint32Array.of(token), [1, 1], 'token'), this.gpt.param('wte.weight'), this.gpt.positions(), at);
      const rope = this.gpt.rotaryOf(g, 1, at);
      for (let l = 0; l < c.numLayers; l++) {
        const keys = new Tensor(this.keys[l]!, 0, [this.capacity * h], 'float32');
        const values = new Tensor(this.values[l]!, 0, [this.capacity * h], 'float32');
        const qkv = this.gpt.qkv(g, x, l, rope);
        // This position's k and v into row `at` of the caches (zero there since the last reset).
        addInto(g, new Tensor(this.keys[l]!, at * h, [h], 'float32'), new Tensor(qkv.buffer, qkv.offset + h, [h], 'float32'));
        addInto(g, new Tensor(this.values[l]!, at * h, [h], 'float32'), new Tensor(qkv.buffer, qkv.offset + 2 * h, [h], 'float32'));
        // Scores [heads, capacity]: q_h · K_h[j], then the causal softmax of a query at position `at`,
        // which zeroes every j > at. Over the whole cache (its unused rows are zeros) rather than
        // n = at + 1 positions: the same kernels at every step, compiled once.
        const all = this.capacity;
        const scores = g.tensor([heads, all], 'decode.scores');
        matmulInto(
          g,
          { m: 1, n: all, k: hd, nb1: heads },
          { t: qkv, rs: 3 * h, cs: 1, b1: hd },
          { t: keys, rs: 1, cs: h, b1: hd },
          { t: scores, rs: all, cs: 1, b1: all },
        );
        g.runner.dispatch(
          'softmax',
          'forward',
          { WG: 64 },
          { rows: heads, t: all, scale: 1 / Math.sqrt(hd), q: 1, qoff: at },
          { s: scores.binding(g.ctx).binding },
          Math.ceil(heads / 64),
        );
        const y = g.tensor([1, 1, h], 'decode.attention');
        matmulInto(
          g,
          { m: 1, n: hd, k: all, nb1: heads },
          { t: scores, rs: all, cs: 1, b1: all },
          { t: values, rs: h, cs: 1, b1: hd },
          { t: y, rs: h, cs: 1, b1: hd },
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
