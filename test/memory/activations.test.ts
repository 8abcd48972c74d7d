/** The activation prediction equals what the allocator counts on a real forward and backward. */
import { afterAll, describe, expect, it } from 'vitest';
import type { GradDtype, ParamDtype } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { gptActivationBytes } from '../../src/memory/activations.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { Graph } from '../../src/nn/graph.js';
import { learnedPositions } from '../../src/nn/gpt-spec.js';
import { documentInputs, documentStarts } from '../../src/nn/documents.js';
import { LocalParams } from '../../src/nn/params.js';

/** Llama's block at a tiny size: RMSNorm, SwiGLU, no linear biases. */
const LLAMA = {
  numLayers: 2,
  hiddenSize: 8,
  numAttentionHeads: 2,
  seqLength: 5,
  vocabSize: 11,
  normalization: 'RMSNorm',
  swiglu: true,
  addBiasLinear: false,
} as const;

const contexts = {
  fused: await GpuContext.create({ attentionKernel: 'fused' }),
  unfused: await GpuContext.create({ attentionKernel: 'unfused' }),
};
afterAll(() => {
  for (const c of Object.values(contexts)) c.destroy();
});

async function measured(
  ctx: GpuContext,
  config: GptConfig,
  batch: number,
  dtype: ParamDtype,
  gradDtype: GradDtype,
  training: boolean,
): Promise<number> {
  return (await run(ctx, config, batch, dtype, gradDtype, training)).bytes;
}

/** One forward (and backward when training) of a GPT: the activation bytes it held, its loss and its params' grads. */
async function run(
  ctx: GpuContext,
  config: GptConfig,
  batch: number,
  dtype: ParamDtype,
  gradDtype: GradDtype,
  training: boolean,
  documents?: { positions: boolean; attention: boolean },
) {
  const params = new LocalParams(ctx, Gpt.specs(config, dtype, gradDtype));
  params.set(Gpt.init(config, 3));
  const gpt = new Gpt(config, params.tensors);
  const before = ctx.memoryReport().live.activations;
  const g = new Graph(ctx, { training, seed: 5, samples: { first: 0, count: batch } });
  const n = batch * config.seqLength;
  const ids = Uint32Array.from({ length: n }, (_, i) => (i * 7) % config.vocabSize);
  const targets = Uint32Array.from({ length: n }, (_, i) => (i * 5 + 2) % config.vocabSize);
  // Documents end at token 0 (every few tokens of these ids).
  // Positions only for a learned table, as training makes them (batchDocuments).
  const reset = documents && { ...documents, positions: documents.positions && learnedPositions(config) };
  if (reset) g.documents = documentInputs(g, documentStarts(ids, config.seqLength, 0), config.seqLength, reset);
  const { loss } = gpt.forward(g, g.input(ids, [batch, config.seqLength], 'ids'), g.input(targets, [n], 'targets'));
  if (training) g.backward(loss!);
  const value = (await g.read(loss!))[0]!;
  const bytes = ctx.memoryReport().live.activations - before;
  g.release();
  const grads = new Map<string, Float32Array>();
  if (training) for (const spec of Gpt.specs(config)) grads.set(spec.name, await params.read(spec.name, true));
  params.destroy();
  return { bytes, loss: value, grads };
}

describe('GPT activation bytes', () => {
  // The shapes of test/nn/gpt.test.ts, so that the shader cache compiles their kernels once for both.
  it.each([
    [{ numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11 }, 2, 'float32', 'float32', 0.2, 0.2],
    [{ numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, tiedHead: false }, 2, 'float32', 'float32', 0, 0.1],
    [{ numLayers: 1, hiddenSize: 16, numAttentionHeads: 2, seqLength: 8, vocabSize: 13 }, 3, 'bfloat16', 'float32', 0.1, 0],
    [{ numLayers: 1, hiddenSize: 16, numAttentionHeads: 2, seqLength: 8, vocabSize: 13 }, 3, 'float16', 'float16', 0, 0],
    // 16-bit grads: fp32 scratches reused from layer to layer; the tied embedding's lives through the pass.
    [{ numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11 }, 2, 'bfloat16', 'bfloat16', 0.1, 0.1],
    [{ numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, tiedHead: false }, 2, 'bfloat16', 'bfloat16', 0, 0],
    // rope: no position table, one (cos, sin) table for every layer.
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, positionEmbeddingType: 'rope' },
      2,
      'float32',
      'float32',
      0.2,
      0.2,
    ],
    [
      { numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, positionEmbeddingType: 'rope' },
      2,
      'bfloat16',
      'bfloat16',
      0,
      0,
    ],
    // Llama's block: RMSNorm, SwiGLU, no linear biases; then GELU without a bias (no fused epilogue).
    [{ ...LLAMA, ffnHiddenSize: 12 }, 2, 'float32', 'float32', 0.2, 0],
    [
      { numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, normalization: 'RMSNorm', swiglu: true },
      2,
      'bfloat16',
      'bfloat16',
      0,
      0.1,
    ],
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, addBiasLinear: false, addQkvBias: true },
      2,
      'float16',
      'float16',
      0,
      0,
    ],
    // Grouped-query attention: the narrower qkv, and k and v repeated for every head.
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 4, numQueryGroups: 2, seqLength: 5, vocabSize: 11 },
      2,
      'float32',
      'float32',
      0.1,
      0.1,
    ],
    // --qk-layernorm: q's and k's heads as rows, their norms, the new qkv; with 16-bit grads, the
    // norms' fp32 scratches too.
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, numQueryGroups: 1, seqLength: 5, vocabSize: 11, qkLayernorm: true },
      2,
      'bfloat16',
      'bfloat16',
      0.1,
      0.1,
    ],
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, qkLayernorm: true, normalization: 'RMSNorm' },
      2,
      'float32',
      'float32',
      0,
      0,
    ],
    // --kv-channels: heads 3 wide where 8 / 2 gives 4, so every attention buffer is 6 wide, not 8.
    [
      { numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, numQueryGroups: 1, seqLength: 5, vocabSize: 11, kvChannels: 3 },
      2,
      'float32',
      'float32',
      0.1,
      0.1,
    ],
  ] as const)(
    '%j, micro-batch %i, %s params: predicted = measured, both attention kernels',
    async (shape, batch, dtype, gradDtype, hidden, attention) => {
      for (const [kernel, ctx] of Object.entries(contexts) as ['fused' | 'unfused', GpuContext][]) {
        if (dtype === 'float16' && !ctx.hasF16) return;
        const config: GptConfig = { ...shape, hiddenDropout: hidden, attentionDropout: attention };
        const got = await measured(ctx, config, batch, dtype, gradDtype, true);
        expect(got, kernel).toBe(
          gptActivationBytes(config, {
            microBatchSize: batch,
            hiddenDropout: hidden > 0,
            attentionDropout: attention > 0,
            halfGrads: gradDtype !== 'float32',
            attention: kernel,
          }),
        );
        // Evaluation: forward only, dropout off.
        expect(await measured(ctx, config, batch, dtype, gradDtype, false), kernel).toBe(
          gptActivationBytes(config, { microBatchSize: batch, forwardOnly: true, attention: kernel }),
        );
      }
    },
  );

  // --reset-position-ids and --reset-attention-mask: a position per token (for a learned table only)
  // and a document start per token, inputs of the graph.
  it.each([
    [{ positions: true, attention: false }, 'learned_absolute'],
    [{ positions: false, attention: true }, 'learned_absolute'],
    [{ positions: true, attention: true }, 'rope'],
  ] as const)('documents %j, %s positions: predicted = measured, both attention kernels', async (documents, positions) => {
    for (const [kernel, ctx] of Object.entries(contexts) as ['fused' | 'unfused', GpuContext][]) {
      const config: GptConfig = {
        numLayers: 2,
        hiddenSize: 8,
        numAttentionHeads: 2,
        seqLength: 5,
        vocabSize: 11,
        positionEmbeddingType: positions,
      };
      for (const training of [true, false])
        expect((await run(ctx, config, 2, 'float32', 'float32', training, documents)).bytes, `${kernel}, training ${training}`).toBe(
          gptActivationBytes(config, { microBatchSize: 2, forwardOnly: !training, attention: kernel, documents }),
        );
    }
  });

  // Megatron's full recomputation: each recomputed span runs in a child graph, forward and again in
  // the backward, whose buffers the next span's child takes by size.
  it.each([
    [
      { numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11 },
      { method: 'uniform', numLayers: 1 },
      'float32',
      0.1,
      0.1,
    ],
    // A shorter last span; rope.
    [
      { numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, positionEmbeddingType: 'rope' },
      { method: 'uniform', numLayers: 2 },
      'float32',
      0.1,
      0,
    ],
    // The first two blocks recomputed, the third kept; Llama's block with 16-bit grads (fp32 scratches in the children).
    [
      { numLayers: 3, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, normalization: 'RMSNorm', swiglu: true },
      { method: 'block', numLayers: 2 },
      'bfloat16',
      0,
      0.1,
    ],
    [
      {
        numLayers: 4,
        hiddenSize: 8,
        numAttentionHeads: 2,
        numQueryGroups: 1,
        seqLength: 5,
        vocabSize: 11,
        qkLayernorm: true,
        tiedHead: false,
      },
      { method: 'uniform', numLayers: 2 },
      'bfloat16',
      0.1,
      0.1,
    ],
    // A width the fused add and norm cannot take as vec4s: the unfused add hands the stream's grad on.
    [
      { numLayers: 3, hiddenSize: 6, numAttentionHeads: 2, seqLength: 5, vocabSize: 11 },
      { method: 'uniform', numLayers: 1 },
      'float32',
      0.1,
      0,
    ],
    // Selective recomputation of each block's MLP (--recompute-modules mlp): GPT-2's (bias and GELU in
    // the fc's epilogue), Llama's SwiGLU with 16-bit grads, squared ReLU at a width that is no vec4.
    [{ numLayers: 2, hiddenSize: 8, numAttentionHeads: 2, seqLength: 5, vocabSize: 11 }, { method: 'mlp' }, 'float32', 0.1, 0.1],
    [LLAMA, { method: 'mlp' }, 'bfloat16', 0, 0.1],
    [
      { numLayers: 2, hiddenSize: 6, numAttentionHeads: 2, seqLength: 5, vocabSize: 11, squaredRelu: true, ffnHiddenSize: 10 },
      { method: 'mlp' },
      'float32',
      0.1,
      0,
    ],
  ] as const)(
    '%j recomputed %j, %s grads: the loss and every grad of the run without, bit for bit; predicted = measured, both attention kernels',
    async (shape, recompute, grads, hidden, attention) => {
      for (const [kernel, ctx] of Object.entries(contexts) as ['fused' | 'unfused', GpuContext][]) {
        const whole: GptConfig = { ...shape, hiddenDropout: hidden, attentionDropout: attention };
        const config: GptConfig = { ...whole, recompute };
        const dtype = grads === 'float32' ? 'float32' : 'bfloat16';
        const [want, got] = [await run(ctx, whole, 2, dtype, grads, true), await run(ctx, config, 2, dtype, grads, true)];
        expect(got.loss, kernel).toBe(want.loss);
        for (const [name, g] of want.grads) expect(got.grads.get(name), `${kernel}: ${name}'s grad`).toEqual(g);
        const options = {
          microBatchSize: 2,
          hiddenDropout: hidden > 0,
          attentionDropout: attention > 0,
          halfGrads: grads !== 'float32',
          attention: kernel,
        };
        expect(want.bytes, kernel).toBe(gptActivationBytes(whole, options));
        expect(got.bytes, kernel).toBe(gptActivationBytes(config, { ...options, recompute }));
        expect(got.bytes, kernel).toBeLessThan(want.bytes);
      }
    },
  );
});
