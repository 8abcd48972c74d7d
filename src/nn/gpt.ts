/**
 * GPT in nanoGPT's shape on webtron's ops: token + position embeddings (or rope on q and k), pre-norm
 * blocks (attention with a fused qkv projection, then a GELU MLP (4h unless given), each added back
 * to the residual stream), a final norm and an output head tied to the token embedding (or its own
 * `lm_head.weight`). Megatron's flags turn the block into Llama's (gpt-spec.ts): RMSNorm, SwiGLU,
 * no linear biases, and key and value heads shared by groups of query heads.
 * Params come from a name → tensor map (views into the param buffer; see params.ts).
 *
 * The forward runs in sections (embeddings, each block, the head). `forwardAwaiting` waits before
 * each section for its params (the distributed optimizer's overlapped param all-gather) and
 * submits the section's work before waiting for the next, so the GPU computes while the gather runs.
 *
 * With `recompute` (Megatron's full activation recomputation) a training forward runs each
 * recomputed span of blocks in a child graph and keeps only its output stream; one tape entry per
 * span runs the span again in a child graph in the backward, from its input stream, with the same
 * dropout masks, and backpropagates through it, so the span's activations live one span at a time.
 * With selective recomputation of the MLP (Megatron's --recompute-modules mlp) each block's MLP runs
 * that way on its own: the forward keeps its output, the backward runs its fc and activation again
 * from its input and records the projection's backward alone (linearBackwardOf).
 */
import type { GradDtype, ParamDtype, ParamSpec } from '../ddp/layout.js';
import type { Graph } from './graph.js';
import {
  type BlockSpan,
  blockSpans,
  gptParams,
  gptSections,
  type GptShape,
  learnedPositions,
  normBias,
  normEpsilon,
  queryGroups,
  type Recompute,
  recomputesMlp,
} from './gpt-spec.js';
import { addInto } from './add.js';
import { initParams } from './init.js';
import {
  addLayerNorm,
  addRmsNorm,
  causalAttention,
  crossEntropy,
  dropout,
  embedding,
  gelu,
  layerNorm,
  linear,
  linearBackwardOf,
  linearGelu,
  qkNorm,
  repeatKv,
  rmsNorm,
  squaredRelu,
  swiglu,
} from './ops.js';
import { rotary, rotaryTable } from './rope.js';
import { ShapeMismatch, type Tensor } from './tensor.js';
import { vocabWindows, windowedHead } from './vocab-windows.js';

export interface GptConfig extends GptShape {
  /** Dropout on the embeddings and on both residual branches (Megatron's --hidden-dropout). */
  hiddenDropout?: number;
  /** Dropout on the attention probabilities (Megatron's --attention-dropout). */
  attentionDropout?: number;
  /** Recompute spans of blocks, or each block's MLP, in the backward instead of keeping their activations (training graphs only). */
  recompute?: Recompute | null;
}

/** The residual stream between blocks: its value, and its value through the layernorm that reads it next. */
interface Stream {
  x: Tensor;
  normed: Tensor;
}

/** Rope's (cos, sin) table of one forward's positions (rope.ts), shared by its layers; null without rope. */
type Rotary = Tensor | null;

/** Waits until the named params hold their values for this step. */
export type ParamsReady = (names: string[]) => Promise<void>;

export class Gpt {
  constructor(
    readonly config: GptConfig,
    private readonly params: Map<string, Tensor>,
  ) {
    for (const spec of gptParams(config)) {
      const t = params.get(spec.name);
      if (!t) throw new ShapeMismatch(`GPT param '${spec.name}' is missing`);
      if (t.shape.join(',') !== spec.shape.join(','))
        throw new ShapeMismatch(`GPT param '${spec.name}' is [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
  }

  static specs(config: GptConfig, dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32'): ParamSpec[] {
    return gptParams(config, dtype, gradDtype);
  }

  /** GPT-2's initialization from `seed` (Megatron's --init-method-std, default 0.02). */
  static init(config: GptConfig, seed: number, std = 0.02): Map<string, Float32Array> {
    return initParams(gptParams(config), {
      seed,
      numLayers: config.numLayers,
      std,
      zeroCenteredNorms: config.applyLayernorm1p ?? false,
    });
  }

  /**
   * The params of each forward section, in the order the forward reads them: the embeddings with
   * the first block's first layernorm, each block with the layernorm after its last residual add
   * (the next block's first, or the final one), then the head.
   */
  sections(): string[][] {
    return gptSections(this.config);
  }

  private p(name: string): Tensor {
    return this.params.get(name)!;
  }

  /** The param `name` where the model has it (a bias the flags leave out: undefined). */
  private maybe(name: string): Tensor | undefined {
    return this.params.get(name);
  }

  /** The norm `prefix` (ln_1, ln_2, ln_f) of `x`: a layernorm, or an RMSNorm. */
  private norm(g: Graph, x: Tensor, prefix: string): Tensor {
    const w = this.p(`${prefix}.weight`);
    const eps = normEpsilon(this.config);
    const centered = this.config.applyLayernorm1p ?? false;
    return normBias(this.config) ? layerNorm(g, x, w, this.p(`${prefix}.bias`), eps, centered) : rmsNorm(g, x, w, eps, centered);
  }

  /** s = a + b and the norm `prefix` of s, fused. */
  private addNorm(g: Graph, a: Tensor, b: Tensor, prefix: string): { sum: Tensor; y: Tensor } {
    const w = this.p(`${prefix}.weight`);
    const eps = normEpsilon(this.config);
    const centered = this.config.applyLayernorm1p ?? false;
    return normBias(this.config)
      ? addLayerNorm(g, a, b, w, this.p(`${prefix}.bias`), eps, centered)
      : addRmsNorm(g, a, b, w, eps, centered);
  }

  /** Logits [B, T, V] for ids [B, T] (uint32), and the mean cross-entropy when targets [B, T] are given. */
  forward(g: Graph, ids: Tensor, targets?: Tensor): { logits: Tensor; loss?: Tensor } {
    let s = this.embedNormed(g, ids);
    const rope = this.rotaryOf(g, ids.shape[1]!);
    for (const span of this.spans(g)) {
      const run = this.spanRun(g, s, span, rope);
      let t = s;
      for (let l = span.first; l < span.end; l++) t = this.block(run.graph, t, l, rope);
      s = run.done(t);
    }
    return this.head(g, s.normed, ids, targets);
  }

  /** The spans of blocks a forward on `g` runs: recomputed ones only where `g` trains. */
  private spans(g: Graph): BlockSpan[] {
    return blockSpans(this.config.numLayers, g.training ? this.config.recompute : null);
  }

  /**
   * Where a span's blocks run and what the forward goes on with: `g` and their output for a span
   * kept whole; for a recomputed span a child graph, released once its output stream is copied into
   * `g`, and a tape entry that runs the span again in the backward (`recomputeBackward`).
   */
  private spanRun(g: Graph, input: Stream, span: BlockSpan, rope: Rotary): { graph: Graph; done: (out: Stream) => Stream } {
    if (!span.recompute) return { graph: g, done: (out) => out };
    const dropoutCalls = g.dropoutCalls;
    const child = g.child();
    child.dropoutCalls = dropoutCalls;
    return {
      graph: child,
      done: (inChild) => {
        const out = { x: copyInto(g, inChild.x, 'recompute.x'), normed: copyInto(g, inChild.normed, 'recompute.normed') };
        g.dropoutCalls = child.dropoutCalls;
        child.release();
        const params = this.sections()
          .slice(span.first + 1, span.end + 1)
          .flat()
          .map((name) => this.p(name));
        g.record('recompute', [input.x, input.normed, ...params], () => this.recomputeBackward(g, input, out, span, rope, dropoutCalls));
        return out;
      },
    };
  }

  /**
   * A recomputed span's backward: its blocks again in a child graph from the span's input stream
   * (the dropout masks of the first pass: the same calls on the same seed and samples), the child's
   * backward from the grads `g` has for the span's output, into `g`'s grads of its input. The
   * residual stream's grad passes through as one buffer, as it does without recomputation.
   */
  private recomputeBackward(g: Graph, input: Stream, out: Stream, span: BlockSpan, rope: Rotary, dropoutCalls: number): void {
    const child = g.child();
    child.dropoutCalls = dropoutCalls;
    child.seedGrad(input.normed, g.gradOf(input.normed));
    let t = input;
    for (let l = span.first; l < span.end; l++) t = this.block(child, t, l, rope);
    child.seedGrad(t.x, g.gradOf(out.x));
    child.seedGrad(t.normed, g.gradOf(out.normed));
    child.backwardSeeded();
    const dx = child.gradIfAny(input.x);
    if (dx && !g.adoptGrad(input.x, dx)) addInto(g, g.gradOf(input.x), dx);
    child.release();
  }

  /** With rope, the (cos, sin) table of `t` positions from `position`, uploaded once for every layer. */
  rotaryOf(g: Graph, t: number, position = 0): Rotary {
    if (this.config.positionEmbeddingType !== 'rope') return null;
    const table = rotaryTable(this.config, t, position);
    return g.input(table, [table.length], 'rope.table');
  }

  /** The same forward, waiting before each section until its params are ready. */
  async forwardAwaiting(
    g: Graph,
    ids: Tensor,
    targets: Tensor | undefined,
    ready: ParamsReady,
  ): Promise<{ logits: Tensor; loss?: Tensor }> {
    const sections = this.sections();
    await ready(sections[0]!);
    let s = this.embedNormed(g, ids);
    const rope = this.rotaryOf(g, ids.shape[1]!);
    for (const span of this.spans(g)) {
      const run = this.spanRun(g, s, span, rope);
      let t = s;
      for (let l = span.first; l < span.end; l++) {
        g.runner.flush(); // the GPU works on what is recorded while the next section's params arrive
        await ready(sections[l + 1]!);
        t = this.block(run.graph, t, l, rope);
      }
      s = run.done(t);
    }
    g.runner.flush();
    await ready(sections.at(-1)!);
    return this.head(g, s.normed, ids, targets);
  }

  /** The embeddings and the first layernorm after them (the first block's, or the final one). */
  private embedNormed(g: Graph, ids: Tensor): Stream {
    const x = this.embed(g, ids);
    const first = this.config.numLayers > 0 ? 'blocks.0.ln_1' : 'ln_f';
    return { x, normed: this.norm(g, x, first) };
  }

  private embed(g: Graph, ids: Tensor): Tensor {
    const t = ids.shape[1]!;
    if (ids.shape.length !== 2) throw new ShapeMismatch(`GPT input must be ids [batch, time], got [${ids.shape.join(', ')}]`);
    if (t > this.config.seqLength)
      throw new ShapeMismatch(`sequence of ${t} tokens is longer than the model's seqLength ${this.config.seqLength}`, ['seqLength']);
    return dropout(g, embedding(g, ids, this.p('wte.weight'), this.positions()), this.config.hiddenDropout ?? 0);
  }

  /** The learned position table, or null (rope, or none). */
  positions(): Tensor | null {
    return learnedPositions(this.config) ? this.p('wpe.weight') : null;
  }

  /**
   * Block `l` on the residual stream `s` (its value and its value normalized by this block's first
   * layernorm). Each residual add is fused with the layernorm that follows it: this block's second,
   * then the next block's first (or the final one).
   */
  private block(g: Graph, s: Stream, l: number, rope: Rotary): Stream {
    const b = `blocks.${l}`;
    const hidden = this.config.hiddenDropout ?? 0;
    const y = causalAttention(g, this.qkvOf(g, s.normed, l, rope), this.config.numAttentionHeads, this.config.attentionDropout ?? 0);
    const mid = this.addNorm(g, s.x, dropout(g, this.projection(g, y, l), hidden), `${b}.ln_2`);
    const m = g.training && recomputesMlp(this.config.recompute) ? this.recomputedMlp(g, mid.y, l) : this.mlpOf(g, mid.y, l);
    const next = l + 1 < this.config.numLayers ? `blocks.${l + 1}.ln_1` : 'ln_f';
    const out = this.addNorm(g, mid.sum, dropout(g, m, hidden), next);
    return { x: out.sum, normed: out.y };
  }

  // The pieces of a block around the attention itself, shared with the KV-cache decoder (decode.ts),
  // which runs each layernorm on its own.

  /**
   * Block `l`'s q, k and v of the residual stream `x`, rotated, before any repeat: [B, T, C + 2·G·hd]
   * (q of H heads, k and v of G groups), what a key/value cache keeps.
   */
  groupedQkv(g: Graph, x: Tensor, l: number, rope: Rotary): Tensor {
    return this.groupedQkvOf(g, this.norm(g, x, `blocks.${l}.ln_1`), l, rope);
  }

  /** The same after block `l`'s first layernorm; grouped-query attention's k and v repeated for its heads. */
  private qkvOf(g: Graph, normed: Tensor, l: number, rope: Rotary): Tensor {
    const qkv = this.groupedQkvOf(g, normed, l, rope);
    const heads = this.config.numAttentionHeads;
    return queryGroups(this.config) < heads ? repeatKv(g, qkv, heads, queryGroups(this.config)) : qkv;
  }

  /** With --qk-layernorm q's and k's heads normalized, then rope rotates each group's k once, before the repeat. */
  private groupedQkvOf(g: Graph, normed: Tensor, l: number, rope: Rotary): Tensor {
    const b = `blocks.${l}`;
    let qkv = linear(g, normed, this.p(`${b}.attn.qkv.weight`), this.maybe(`${b}.attn.qkv.bias`));
    if (this.config.qkLayernorm)
      qkv = qkNorm(g, qkv, this.config.numAttentionHeads, queryGroups(this.config), (x, part) => this.norm(g, x, `${b}.attn.ln_${part}`));
    if (rope) rotary(g, qkv, this.config, rope);
    return qkv;
  }

  /** Block `l`'s output projection of the attention `y` (before dropout). */
  projection(g: Graph, y: Tensor, l: number): Tensor {
    return linear(g, y, this.p(`blocks.${l}.attn.proj.weight`), this.maybe(`blocks.${l}.attn.proj.bias`));
  }

  /** Block `l`'s MLP branch of the residual stream `x` (before dropout). */
  mlp(g: Graph, x: Tensor, l: number): Tensor {
    return this.mlpOf(g, this.norm(g, x, `blocks.${l}.ln_2`), l);
  }

  /** The same of the stream after block `l`'s second norm: its activation, then the projection. */
  private mlpOf(g: Graph, normed: Tensor, l: number): Tensor {
    return linear(g, this.mlpHidden(g, normed, l), this.p(`blocks.${l}.mlp.proj.weight`), this.maybe(`blocks.${l}.mlp.proj.bias`));
  }

  /**
   * Block `l`'s MLP up to its projection: fc with its GELU (bias and GELU in the matmul's epilogue
   * where there is a bias), or with SwiGLU or squared ReLU.
   */
  private mlpHidden(g: Graph, normed: Tensor, l: number): Tensor {
    const b = `blocks.${l}`;
    const [w, bias] = [this.p(`${b}.mlp.fc.weight`), this.maybe(`${b}.mlp.fc.bias`)];
    return this.config.swiglu
      ? swiglu(g, linear(g, normed, w, bias))
      : this.config.squaredRelu
        ? squaredRelu(g, linear(g, normed, w, bias))
        : bias
          ? linearGelu(g, normed, w, bias)
          : gelu(g, linear(g, normed, w));
  }

  /**
   * Block `l`'s MLP branch under --recompute-modules mlp: run in a child graph, whose buffers go back
   * to the spares once its output is copied into `g`, and a tape entry that runs it again in a child
   * graph in the backward, from its input, up to the projection (whose backward needs its input, not
   * its output), and backpropagates through it into `g`'s grad of the input and the params' grads.
   * So the MLP's wide activations live one block at a time, for one more fc and activation a block.
   */
  private recomputedMlp(g: Graph, normed: Tensor, l: number): Tensor {
    const first = g.child();
    const out = copyInto(g, this.mlpOf(first, normed, l), 'recompute.mlp');
    first.release();
    const params = ['fc.weight', 'fc.bias', 'proj.weight', 'proj.bias'].flatMap((name) => this.maybe(`blocks.${l}.mlp.${name}`) ?? []);
    g.record('recompute.mlp', [normed, ...params], () => {
      const again = g.child();
      again.seedGrad(normed, g.gradOf(normed));
      const h = this.mlpHidden(again, normed, l);
      linearBackwardOf(again, h, this.p(`blocks.${l}.mlp.proj.weight`), this.maybe(`blocks.${l}.mlp.proj.bias`), g.gradOf(out));
      again.backwardSeeded();
      again.release();
    });
    return out;
  }

  /** The final layernorm and the output head: logits [.., V]. */
  logits(g: Graph, x: Tensor): Tensor {
    return this.logitsOf(g, this.norm(g, x, 'ln_f'));
  }

  /** The output head of the final layernorm's output (a head over the binding limit, without grads: window by window). */
  private logitsOf(g: Graph, normed: Tensor): Tensor {
    const head = this.config.tiedHead === false ? this.p('lm_head.weight') : this.p('wte.weight');
    const windows = vocabWindows(g.ctx, head);
    if (windows.length > 1) return windowedHead(g, normed, head, windows);
    return linear(g, normed, head, undefined, { transposed: true });
  }

  private head(g: Graph, normed: Tensor, ids: Tensor, targets?: Tensor): { logits: Tensor; loss?: Tensor } {
    const [batch, t] = ids.shape as [number, number];
    const logits = this.logitsOf(g, normed);
    if (!targets) return { logits };
    return { logits, loss: crossEntropy(g, logits.reshape([batch * t, this.config.vocabSize]), targets) };
  }

  /** For decoding (decode.ts): the param tensor of `name`. */
  param(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) throw new ShapeMismatch(`GPT has no param '${name}'`);
    return t;
  }
}

/** A copy of the whole activation `t` in a new buffer of `g`, with a grad like any activation's. */
function copyInto(g: Graph, t: Tensor, label: string): Tensor {
  const copy = g.output(t.shape, label, true);
  g.runner.copyBuffer(t.buffer, t.offset * 4, copy.buffer, t.numel * 4);
  return copy;
}
