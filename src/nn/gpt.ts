/**
 * GPT in nanoGPT's shape on webtron's ops: token + position embeddings, pre-LN blocks (attention
 * with a fused qkv projection, then a 4h GELU MLP, each added back to the residual stream), a final
 * layernorm and an output head tied to the token embedding (or its own `lm_head.weight`).
 * Params come from a name → tensor map (views into the param buffer; see params.ts).
 */
import type { GradDtype, ParamDtype, ParamSpec } from '../ddp/layout.js';
import type { Graph } from './graph.js';
import { gptParams, type GptShape } from './gpt-spec.js';
import { initParams } from './init.js';
import { add, causalAttention, crossEntropy, dropout, embedding, gelu, layerNorm, linear } from './ops.js';
import { ShapeMismatch, type Tensor } from './tensor.js';

export interface GptConfig extends GptShape {
  /** Dropout on embeddings, attention probabilities and residual branches (nanoGPT's one knob). */
  dropout?: number;
}

export class Gpt {
  constructor(
    readonly config: GptConfig,
    private readonly params: Map<string, Tensor>,
  ) {
    for (const spec of gptParams(config)) {
      const t = params.get(spec.name);
      if (!t) throw new ShapeMismatch(`GPT param '${spec.name}' is missing`);
      if (t.shape.join(',') !== spec.shape.join(',')) throw new ShapeMismatch(`GPT param '${spec.name}' is [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
  }

  static specs(config: GptConfig, dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32'): ParamSpec[] {
    return gptParams(config, dtype, gradDtype);
  }

  /** GPT-2's initialization from `seed`. */
  static init(config: GptConfig, seed: number): Map<string, Float32Array> {
    return initParams(gptParams(config), { seed, numLayers: config.numLayers });
  }

  private p(name: string): Tensor {
    return this.params.get(name)!;
  }

  /** Logits [B, T, V] for ids [B, T] (uint32), and the mean cross-entropy when targets [B, T] are given. */
  forward(g: Graph, ids: Tensor, targets?: Tensor): { logits: Tensor; loss?: Tensor } {
    const c = this.config;
    const [batch, t] = ids.shape as [number, number];
    if (t > c.seqLength) throw new ShapeMismatch(`sequence of ${t} tokens is longer than the model's --seq-length ${c.seqLength}`);
    const p = c.dropout ?? 0;
    let x = dropout(g, embedding(g, ids, this.p('wte.weight'), this.p('wpe.weight')), p);
    for (let l = 0; l < c.numLayers; l++) {
      const b = `blocks.${l}`;
      let h = layerNorm(g, x, this.p(`${b}.ln_1.weight`), this.p(`${b}.ln_1.bias`));
      h = linear(g, h, this.p(`${b}.attn.qkv.weight`), this.p(`${b}.attn.qkv.bias`));
      h = causalAttention(g, h, c.numAttentionHeads, p);
      h = dropout(g, linear(g, h, this.p(`${b}.attn.proj.weight`), this.p(`${b}.attn.proj.bias`)), p);
      x = add(g, x, h);
      h = layerNorm(g, x, this.p(`${b}.ln_2.weight`), this.p(`${b}.ln_2.bias`));
      h = gelu(g, linear(g, h, this.p(`${b}.mlp.fc.weight`), this.p(`${b}.mlp.fc.bias`)));
      h = dropout(g, linear(g, h, this.p(`${b}.mlp.proj.weight`), this.p(`${b}.mlp.proj.bias`)), p);
      x = add(g, x, h);
    }
    x = layerNorm(g, x, this.p('ln_f.weight'), this.p('ln_f.bias'));
    const head = c.tiedHead === false ? this.p('lm_head.weight') : this.p('wte.weight');
    const logits = linear(g, x, head, undefined, { transposed: true });
    if (!targets) return { logits };
    return { logits, loss: crossEntropy(g, logits.reshape([batch * t, c.vocabSize]), targets) };
  }
}
