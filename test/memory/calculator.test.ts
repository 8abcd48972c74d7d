import { describe, expect, it } from 'vitest';
import { activationBytes, memoryRows, type ModelSource } from '../../src/memory/calculator.js';

const gpt2Small: ModelSource = { kind: 'gpt', shape: { numLayers: 12, hiddenSize: 768, numAttentionHeads: 12, seqLength: 1024, vocabSize: 50257 } };
const table = { fp16: [20, (d: number) => 4 + 16 / d], bf16: [18, (d: number) => 6 + 12 / d], fp32: [16, (d: number) => 8 + 8 / d] } as const;

describe('memory calculator', () => {
  it('GPT-2 small, d = 1, 2, 4, 8, three precisions, both optimizers: Megatron\'s rows exactly', () => {
    const rows = memoryRows(gpt2Small, { dataParallelSizes: [1, 2, 4, 8], precisions: ['fp32', 'bf16', 'fp16'], distributed: [false, true], microBatchSize: 1 });
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
      else if (r.data_parallel_size === 1) expect(r.saving_bytes).toBeLessThanOrEqual(0); // only its padding
      else expect(r.saving_bytes).toBeGreaterThan(0);
    }
    const fp16d8 = rows.find((r) => r.precision === 'fp16' && r.data_parallel_size === 8 && r.distributed)!;
    // Per rank, without padding: params and grads 2 B each on all params; main params, main grads
    // and moments for rank 0's shard (1/8 of the padded buckets, less rank 0's padding).
    expect(fp16d8.by_category.params).toBe(124_439_808 * 2);
  });

  it('under a budget: whether each configuration fits, and the deepest GPT of the family that does', () => {
    const budget = 2 * 2 ** 30;
    const rows = memoryRows(gpt2Small, { dataParallelSizes: [1, 8], precisions: ['fp16'], distributed: [false, true], microBatchSize: 1, gpuMemory: budget });
    for (const r of rows) {
      const L = r.largest_fitting!.num_layers!;
      const total = (layers: number) => memoryRows({ kind: 'gpt', shape: { ...gpt2Small.shape, numLayers: layers } }, { dataParallelSizes: [r.data_parallel_size], precisions: ['fp16'], distributed: [r.distributed], microBatchSize: 1 })[0]!.total_bytes_per_rank;
      expect(total(L)).toBeLessThanOrEqual(budget);
      expect(total(L + 1)).toBeGreaterThan(budget);
      expect(r.fits).toBe(r.total_bytes_per_rank <= budget);
    }
    const [plain, distributed] = [rows.find((r) => r.data_parallel_size === 8 && !r.distributed)!, rows.find((r) => r.data_parallel_size === 8 && r.distributed)!];
    expect(distributed.largest_fitting!.num_layers!).toBeGreaterThan(plain.largest_fitting!.num_layers!);
  });

  it('activations follow the per-layer formula for fp32 activations and grow with the micro-batch', () => {
    const a1 = activationBytes(gpt2Small, 1);
    expect(a1).toBe(2 * 12 * 1024 * 768 * (34 + (5 * 12 * 1024) / 768) + 8 * 1024 * 50257);
    expect(activationBytes(gpt2Small, 4)).toBe(4 * a1);
    expect(activationBytes({ kind: 'params', count: 10 }, 4)).toBe(0);
  });
});
