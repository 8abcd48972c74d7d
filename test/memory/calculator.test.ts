import { describe, expect, it } from 'vitest';
import { activationBytes, memoryRows, type ModelSource } from '../../src/memory/calculator.js';

const gpt2Small: ModelSource = {
  kind: 'gpt',
  shape: { numLayers: 12, hiddenSize: 768, numAttentionHeads: 12, seqLength: 1024, vocabSize: 50257 },
};
const table = {
  fp16: [20, (d: number) => 4 + 16 / d],
  bf16: [18, (d: number) => 6 + 12 / d],
  fp32: [16, (d: number) => 8 + 8 / d],
} as const;

describe('memory calculator', () => {
  it("GPT-2 small, d = 1, 2, 4, 8, three precisions, both optimizers: Megatron's rows exactly", () => {
    const rows = memoryRows(gpt2Small, {
      dataParallelSizes: [1, 2, 4, 8],
      precisions: ['fp32', 'bf16', 'fp16'],
      distributed: [false, true],
      microBatchSize: 1,
    });
    expect(rows).toHaveLength(24);
    for (const r of rows) {
      const [plain, formula] = table[r.precision];
      expect(r.params).toBe(124_439_808);
      expect(r.bytes_per_param).toBeCloseTo(r.distributed ? formula(r.data_parallel_size) : plain, 12);
      const c = r.by_category;
      // Model state = the table's bytes for every param + the padding reported on its own.
      expect(c.params + c.grads + c.main_params + c.optimizer_state + c.padding).toBe(r.model_state_bytes_per_rank);
      expect(r.total_bytes_per_rank).toBe(r.model_state_bytes_per_rank + c.activations + c.staging);
      if (!r.distributed) expect(r.saving_bytes).toBe(0);
      else if (r.data_parallel_size === 1)
        expect(r.saving_bytes).toBeLessThanOrEqual(0); // only its padding
      else expect(r.saving_bytes).toBeGreaterThan(0);
    }
    const fp16d8 = rows.find((r) => r.precision === 'fp16' && r.data_parallel_size === 8 && r.distributed)!;
    // Per rank, without padding: params and grads 2 B each on all params; main params, main grads
    // and moments for rank 0's shard (1/8 of the padded buckets, less rank 0's padding).
    expect(fp16d8.by_category.params).toBe(124_439_808 * 2);
  });

  it('under a budget: whether each configuration fits, and the deepest GPT of the family that does', () => {
    const budget = 2 * 2 ** 30;
    const rows = memoryRows(gpt2Small, {
      dataParallelSizes: [1, 8],
      precisions: ['fp16'],
      distributed: [false, true],
      microBatchSize: 1,
      gpuMemory: budget,
    });
    for (const r of rows) {
      const L = r.largest_fitting!.num_layers!;
      const total = (layers: number) =>
        memoryRows(
          { kind: 'gpt', shape: { ...gpt2Small.shape, numLayers: layers } },
          { dataParallelSizes: [r.data_parallel_size], precisions: ['fp16'], distributed: [r.distributed], microBatchSize: 1 },
        )[0]!.total_bytes_per_rank;
      expect(total(L)).toBeLessThanOrEqual(budget);
      expect(total(L + 1)).toBeGreaterThan(budget);
      expect(r.fits).toBe(r.total_bytes_per_rank <= budget);
    }
    const [plain, distributed] = [
      rows.find((r) => r.data_parallel_size === 8 && !r.distributed)!,
      rows.find((r) => r.data_parallel_size === 8 && r.distributed)!,
    ];
    expect(distributed.largest_fitting!.num_layers!).toBeGreaterThan(plain.largest_fitting!.num_layers!);
  });

  it("activations are webtron's graph buffers (test/memory/activations.test.ts measures them), linear in the micro-batch", () => {
    const a1 = activationBytes(gpt2Small, 1, 'float32', true, 'unfused');
    // fp32, each buffer with a grad of the same size, but for the residual stream: its tensors share
    // one grad (each residual add hands its output's grad on to its input). Per layer: 20 of s·h
    // (ln_1 1, qkv 3, attention 1, projection and its dropout 2, add 1, ln_2 1, fc and gelu 8,
    // projection and its dropout 2, add 1), all but the two adds with a grad, and the probabilities
    // and their dropout, 2·a·s², plus two layernorms' stats (2s each, no grad). Outside: ids and targets
    // (s each), the embedding (with a grad) and its dropout (the stream's first tensor), the one grad
    // of the stream, ln_f and its stats, the logits s·V, the log-sum-exp rows (2s) and the loss (one
    // 16-byte buffer and its grad).
    const s = 1024,
      h = 768,
      a = 12,
      V = 50257;
    const perLayer = 8 * (18 * s * h + 2 * a * s * s) + 4 * (2 * s * h) + 4 * (2 * s + 2 * s);
    const outside = 8 * (2 * s * h + s * V) + 4 * (s * h) + 4 * (s * h) + 4 * (s + s + 2 * s + 2 * s) + 2 * 16;
    expect(a1).toBe(12 * perLayer + outside);
    // Fused attention keeps no probabilities: instead a log-sum-exp per row and head, and in the
    // backward a row sum (4·a·s each, no grad).
    expect(activationBytes(gpt2Small, 1)).toBe(a1 - 12 * (8 * 2 * a * s * s - 4 * 2 * a * s));
    expect(activationBytes(gpt2Small, 4)).toBeGreaterThan(3.99 * activationBytes(gpt2Small, 1));
    expect(activationBytes(gpt2Small, 4, 'float32', false)).toBeLessThan(activationBytes(gpt2Small, 4));
    expect(activationBytes({ kind: 'params', count: 10 }, 4)).toBe(0);
  });
});
