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
  // Grouped-query attention: 4 heads sharing 2 key and value heads, or 1 (multi-query).
  // --kv-channels 6: heads 6 wide where 16 / 4 gives 4.
  for (const [dtype, tiedHead, positions, groups, kvChannels] of [
    ['float32', true, 'learned_absolute', undefined, undefined],
    ['bfloat16', false, 'learned_absolute', undefined, undefined],
    ['float32', true, 'rope', 2, undefined],
    ['float32', false, 'rope', 1, undefined],
    ['float32', true, 'rope', 2, 6],
  ] as const) {
    const grouping = `${groups ? `, ${groups} key head${groups > 1 ? 's' : ''}` : ''}${kvChannels ? `, heads of ${kvChannels}` : ''}`;
    it(`${dtype} params, ${tiedHead ? 'tied' : 'untied'} head, ${positions} positions${grouping}: each step's logits equal the full forward's at that position`, async () => {
      const config: GptConfig = {
        numLayers: 2,
        hiddenSize: 16,
        numAttentionHeads: 4,
        seqLength: 8,
        maxPositionEmbeddings: 10,
        vocabSize: 13,
        tiedHead,
        positionEmbeddingType: positions,
        ...(groups ? { numQueryGroups: groups } : {}),
        // Heads of 6 also with --qk-layernorm: the decoder's q and k go through the same norms.
        ...(kvChannels ? { kvChannels, qkLayernorm: true } : {}),
      };
      const params = new LocalParams(ctx, Gpt.specs(config, dtype as ParamDtype));
      // Larger than GPT-2's init so that attention is far from uniform.
      params.set(Gpt.init(config, 5, 0.3));
      const gpt = new Gpt(config, params.tensors);
      const tokens = [3, 7, 7, 1, 12, 0, 5, 9];
      const g = new Graph(ctx, { training: false });
      const full = await g.read(gpt.forward(g, g.input(Uint32Array.from(tokens), [1, tokens.length], 'ids')).logits);
      g.release();
      // A cache of just the positions this run needs (the model holds 10): per layer k and v of each
      // key head, G · hd floats a position.
      const before = ctx.memoryReport().live.activations;
      const decoder = new GptDecoder(ctx, gpt, tokens.length);
      const keyHeads = groups ?? config.numAttentionHeads;
      expect(ctx.memoryReport().live.activations - before).toBe(
        2 * config.numLayers * tokens.length * keyHeads * (kvChannels ?? 16 / 4) * 4,
      );
      for (const [i, t] of tokens.entries()) {
        const logits = await decoder.step(t);
        const want = full.subarray(i * config.vocabSize, (i + 1) * config.vocabSize);
        expect(relativeError(logits, want), `position ${i}`).toBeLessThanOrEqual(1e-5);
      }
      expect(decoder.position).toBe(tokens.length);
      // After a reset the cache starts over: the first logits again.
      decoder.reset();
      expect(relativeError(await decoder.step(tokens[0]!), full.subarray(0, config.vocabSize))).toBeLessThanOrEqual(1e-5);
      // A prefill of five tokens in forwards of 2, 2 and 1 (after the one above): the logits after
      // the last, then each step's against a cache the prefill filled.
      const v = config.vocabSize;
      const prefilled = await decoder.append(tokens.slice(1, 6), 2);
      expect(relativeError(prefilled, full.subarray(5 * v, 6 * v)), 'after the prefill').toBeLessThanOrEqual(1e-5);
      expect(decoder.position).toBe(6);
      for (let i = 6; i < tokens.length; i++)
        expect(
          relativeError(await decoder.step(tokens[i]!), full.subarray(i * v, (i + 1) * v)),
          `position ${i} after the prefill`,
        ).toBeLessThanOrEqual(1e-5);
      // Every position's logits from one prefill in forwards of 3, 3 and 2: the full forward's rows.
      decoder.reset();
      const every = await decoder.appendEvery(tokens, 3);
      expect(every.length).toBe(tokens.length * v);
      expect(relativeError(every, full.subarray(0, tokens.length * v)), 'every position of a prefill').toBeLessThanOrEqual(1e-5);
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
      /the KV cache holds 2 positions \(2 filled, 1 more asked\); reset it or keep a shorter context/,
    );
    decoder.reset();
    await expect(decoder.append([1, 2, 3])).rejects.toThrow(/holds 2 positions \(0 filled, 3 more asked\)/);
    await expect(decoder.append([])).rejects.toThrow(/append: no tokens/);
    await expect(decoder.step(9)).rejects.toThrow(/token 9 is not in the vocabulary of 5/);
    decoder.destroy();
    for (const capacity of [0, 3, 1.5])
      expect(() => new GptDecoder(ctx, new Gpt(config, params.tensors), capacity)).toThrow(
        new RegExp(`a KV cache of ${capacity} positions: this model holds 1 to 2 \\(--max-position-embeddings\\)`),
      );
    params.destroy();
  });
});
