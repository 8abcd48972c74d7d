/** Decoding with the key/value cache gives, position by position, the logits of a full forward. */
import { afterAll, describe, expect, it } from 'vitest';
import type { ParamDtype } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { GptDecoder } from '../../src/nn/decode.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { Graph } from '../../src/nn/graph.js';
import { LocalParams } from '../../src/nn/params.js';
import { relativeError } from '../helpers/hash.js';

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());

describe('GPT decoding with a KV cache', () => {
  for (const [dtype, tiedHead, positions] of [
    ['float32', true, 'learned_absolute'],
    ['bfloat16', false, 'learned_absolute'],
    ['float32', true, 'rope'],
  ] as const) {
    const groups = positions === 'rope' ? 2 : undefined;
    it(`${dtype} params, ${tiedHead ? 'tied' : 'untied'} head, ${positions} positions: each step's logits equal the full forward's at that position`, async () => {
      const config: GptConfig = {
        numLayers: 2,
        hiddenSize: 16,
        numAttentionHeads: 4,
        seqLength: 8,
        maxPositionEmbeddings: 10,
        vocabSize: 13,
        tiedHead,
        positionEmbeddingType: positions,
        // With rope, grouped-query attention too: 4 heads sharing 2 key and value heads.
        ...(groups ? { numQueryGroups: groups } : {}),
      };
      const params = new LocalParams(ctx, Gpt.specs(config, dtype as ParamDtype));
      // Larger than GPT-2's init so that attention is far from uniform.
      params.set(Gpt.init(config, 5, 0.3));
      const gpt = new Gpt(config, params.tensors);
      const tokens = [3, 7, 7, 1, 12, 0, 5, 9];
      const g = new Graph(ctx, { training: false });
      const full = await g.read(gpt.forward(g, g.input(Uint32Array.from(tokens), [1, tokens.length], 'ids')).logits);
      g.release();
      const decoder = new GptDecoder(ctx, gpt);
      for (const [i, t] of tokens.entries()) {
        const logits = await decoder.step(t);
        const want = full.subarray(i * config.vocabSize, (i + 1) * config.vocabSize);
        expect(relativeError(logits, want), `position ${i}`).toBeLessThanOrEqual(1e-5);
      }
      expect(decoder.position).toBe(tokens.length);
      // After a reset the cache starts over: the first logits again.
      decoder.reset();
      expect(relativeError(await decoder.step(tokens[0]!), full.subarray(0, config.vocabSize))).toBeLessThanOrEqual(1e-5);
      decoder.destroy();
      params.destroy();
    });
  }

  it('a full cache is an error that says what to do', async () => {
    const config: GptConfig = { numLayers: 1, hiddenSize: 8, numAttentionHeads: 2, seqLength: 2, vocabSize: 5 };
    const params = new LocalParams(ctx, Gpt.specs(config));
    params.set(Gpt.init(config, 1));
    const decoder = new GptDecoder(ctx, new Gpt(config, params.tensors));
    await decoder.step(1);
    await decoder.step(2);
    await expect(decoder.step(3)).rejects.toThrow(
      /the KV cache holds 2 positions \(--max-position-embeddings\); reset it or keep a shorter context/,
    );
    decoder.reset();
    await expect(decoder.step(9)).rejects.toThrow(/token 9 is not in the vocabulary of 5/);
    decoder.destroy();
    params.destroy();
  });
});
