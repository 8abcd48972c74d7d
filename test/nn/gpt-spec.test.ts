import { describe, expect, it } from 'vitest';
import { numelOf } from '../../src/ddp/layout.js';
import { gptParamCount, gptParams } from '../../src/nn/gpt-spec.js';

const gpt2Small = { numLayers: 12, hiddenSize: 768, numAttentionHeads: 12, seqLength: 1024, vocabSize: 50257 };

describe('GPT parameter list', () => {
  it('GPT-2 small has 124,439,808 params with the head tied', () => {
    const params = gptParams(gpt2Small);
    expect(params.reduce((s, p) => s + numelOf(p.shape), 0)).toBe(124_439_808);
    expect(gptParamCount(gpt2Small)).toBe(124_439_808);
    expect(params[0]!.name).toBe('wte.weight');
    expect(params.map((p) => p.name)).toContain('blocks.11.attn.qkv.weight');
    expect(params.at(-1)!.name).toBe('ln_f.bias');
  });

  it('an untied head adds V·h; the closed form agrees for other shapes', () => {
    for (const s of [
      { ...gpt2Small, tiedHead: false },
      { numLayers: 4, hiddenSize: 128, numAttentionHeads: 4, seqLength: 64, vocabSize: 81 },
      { numLayers: 3, hiddenSize: 96, numAttentionHeads: 4, seqLength: 64, vocabSize: 81, ffnHiddenSize: 200 },
      { numLayers: 3, hiddenSize: 96, numAttentionHeads: 4, seqLength: 64, vocabSize: 81, positionEmbeddingType: 'rope' as const },
      { ...gpt2Small, positionEmbeddingType: 'none' as const, tiedHead: false },
      { ...gpt2Small, normalization: 'RMSNorm' as const, swiglu: true, addBiasLinear: false, ffnHiddenSize: 2048 },
      { ...gpt2Small, swiglu: true },
      { ...gpt2Small, addBiasLinear: false, addQkvBias: true, normalization: 'RMSNorm' as const },
      { ...gpt2Small, addBiasLinear: false },
      // --kv-channels: heads 128 wide where 768 / 12 gives 64 (Mistral-Nemo's shape), and with groups.
      { ...gpt2Small, kvChannels: 128 },
      { ...gpt2Small, kvChannels: 40, numQueryGroups: 4, addBiasLinear: false, addQkvBias: true },
      // --qk-layernorm: two norms of a head's width per layer, with biases under LayerNorm.
      { ...gpt2Small, qkLayernorm: true },
      { ...gpt2Small, qkLayernorm: true, kvChannels: 128, normalization: 'RMSNorm' as const },
    ]) {
      expect(gptParams(s).reduce((n, p) => n + numelOf(p.shape), 0)).toBe(gptParamCount(s));
    }
    // --ffn-hidden-size: the MLP's two weights and its first bias take the width.
    const narrow = gptParams({ numLayers: 1, hiddenSize: 8, numAttentionHeads: 2, seqLength: 4, vocabSize: 5, ffnHiddenSize: 12 });
    const shape = (name: string) => narrow.find((p) => p.name === name)!.shape;
    expect([shape('blocks.0.mlp.fc.weight'), shape('blocks.0.mlp.fc.bias'), shape('blocks.0.mlp.proj.weight')]).toEqual([
      [8, 12],
      [12],
      [12, 8],
    ]);
    expect(() => gptParams({ ...gpt2Small, ffnHiddenSize: 0 })).toThrow('ffnHiddenSize must be a positive integer, got 0');
    expect(() => gptParams({ ...gpt2Small, swiglu: true, squaredRelu: true })).toThrow('squaredRelu and swiglu exclude each other');
    // Squared ReLU changes no param: GPT-2's count.
    expect(gptParams({ ...gpt2Small, squaredRelu: true }).length).toBe(gptParams(gpt2Small).length);
    // --kv-channels: q, k and v are heads · d wide, and the projection takes heads · d back to h.
    const wide = gptParams({
      numLayers: 1,
      hiddenSize: 8,
      numAttentionHeads: 2,
      numQueryGroups: 1,
      seqLength: 4,
      vocabSize: 5,
      kvChannels: 6,
    });
    const of = (name: string) => wide.find((p) => p.name === name)!.shape;
    expect([of('blocks.0.attn.qkv.weight'), of('blocks.0.attn.proj.weight')]).toEqual([
      [8, (2 + 2) * 6],
      [12, 8],
    ]);
    // Without it, heads must divide the hidden size; with it they need not.
    expect(() => gptParams({ ...gpt2Small, numAttentionHeads: 10 })).toThrow('hiddenSize 768 is not divisible by numAttentionHeads 10');
    expect(gptParams({ ...gpt2Small, numAttentionHeads: 10, kvChannels: 64 }).length).toBe(gptParams(gpt2Small).length);
    expect(() => gptParams({ ...gpt2Small, kvChannels: 0 })).toThrow('kvChannels must be a positive integer, got 0');
  });

  it('rope and none have no position table: GPT-2 small less its 1024 × 768', () => {
    for (const positionEmbeddingType of ['rope', 'none'] as const) {
      const params = gptParams({ ...gpt2Small, positionEmbeddingType });
      expect(params.map((p) => p.name)).not.toContain('wpe.weight');
      expect(params.reduce((s, p) => s + numelOf(p.shape), 0)).toBe(124_439_808 - 1024 * 768);
    }
  });

  it('bad shapes are one-line errors naming the flag', () => {
    expect(() => gptParams({ ...gpt2Small, positionEmbeddingType: 'alibi' as 'rope' })).toThrow(
      'positionEmbeddingType must be one of learned_absolute, rope, none, got alibi',
    );
    expect(() => gptParams({ ...gpt2Small, positionEmbeddingType: 'rope', rotaryPercent: 0.01 })).toThrow(
      'rotaryPercent 0.01 of heads 64 wide rotates 0 channels; it must be at least 2 and at most 64',
    );
    expect(() => gptParams({ ...gpt2Small, positionEmbeddingType: 'rope', rotaryPercent: 1.5 })).toThrow(
      'rotaryPercent must be in (0, 1], got 1.5',
    );
    expect(() => gptParams({ ...gpt2Small, positionEmbeddingType: 'rope', rotaryBase: 1 })).toThrow(
      'rotaryBase must be a number above 1, got 1',
    );
    expect(() => gptParams({ ...gpt2Small, numQueryGroups: 5 })).toThrow('numQueryGroups 5 must divide numAttentionHeads 12');
    expect(() => gptParams({ ...gpt2Small, numLayers: -1 })).toThrow('numLayers must be a positive integer, got -1');
    expect(() => gptParams({ ...gpt2Small, numAttentionHeads: 7 })).toThrow(
      'hiddenSize 768 is not divisible by numAttentionHeads 7; pick sizes where it is',
    );
  });
});
