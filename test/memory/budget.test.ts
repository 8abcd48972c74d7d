/** The budget check of `webtron train --max-device-memory`, against the calculator's own rows. */
import { describe, expect, it } from 'vitest';
import { budgetProblem, runBytes, type RunShape } from '../../src/memory/budget.js';
import { memoryRows } from '../../src/memory/calculator.js';
import { gptParams } from '../../src/nn/gpt-spec.js';

const gpt = { numLayers: 2, hiddenSize: 64, numAttentionHeads: 4, seqLength: 32, vocabSize: 128 };
const shape = (over: Partial<RunShape> = {}): RunShape => ({
  specs: gptParams(gpt, 'float32', 'float32'),
  gpt,
  dataParallelSize: 2,
  distributedOptimizer: false,
  stateDtypes: {},
  strategy: 'optim',
  gradAccumulation: 1,
  gradReduceInBf16: false,
  activations: { microBatchSize: 4, hiddenDropout: true, attentionDropout: true, attention: 'fused' },
  ...over,
});

describe('--max-device-memory', () => {
  it("counts what webtron memory's rows count: model state, activations and staging of one rank", () => {
    const rows = memoryRows(
      { kind: 'gpt', shape: gpt },
      { dataParallelSizes: [2], precisions: ['fp32'], distributed: [false, true], microBatchSize: 4 },
    );
    expect(runBytes(shape()).total).toBe(rows[0]!.total_bytes_per_rank);
    expect(runBytes(shape({ distributedOptimizer: true })).total).toBe(rows[1]!.total_bytes_per_rank);
  });

  it('is silent when the run fits; names the least change that fits; says when nothing does', () => {
    const plain = runBytes(shape()).total;
    const distributed = runBytes(shape({ distributedOptimizer: true })).total;
    const narrow = runBytes(shape({ distributedOptimizer: true, stateDtypes: { expAvg: 'bfloat16', expAvgSq: 'bfloat16' } })).total;
    expect(narrow).toBeLessThan(distributed);
    expect(distributed).toBeLessThan(plain);
    expect(budgetProblem(shape(), plain)).toBeNull();
    expect(budgetProblem(shape(), plain - 1)).toMatch(
      /this run needs .* per rank at its peak .*; with --use-distributed-optimizer it needs .* and fits$/,
    );
    expect(budgetProblem(shape(), distributed - 1)).toMatch(
      /; with --use-distributed-optimizer --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16 it needs .* and fits$/,
    );
    expect(budgetProblem(shape({ distributedOptimizer: true }), distributed - 1)).toMatch(
      /; with --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16 it needs .* and fits$/,
    );
    // Then every block recomputed in the backward: the activations of one block at a time.
    const recomputed = runBytes(shape({ activations: { ...shape().activations, recompute: { method: 'uniform', numLayers: 1 } } })).total;
    expect(recomputed).toBeLessThan(plain);
    expect(recomputed).toBeLessThan(narrow);
    expect(budgetProblem(shape(), narrow - 1)).toMatch(
      /; with --recompute-granularity full --recompute-method uniform it needs .* and fits$/,
    );
    expect(budgetProblem(shape(), recomputed - 1)).toMatch(/the smallest is with .*: .*; no optimizer setting fits/);
  });

  it("selective recomputation of the MLPs comes before full recomputation, with core_attn only for the fused attention's kernel", () => {
    const moments = { expAvg: 'bfloat16', expAvgSq: 'bfloat16' } as const;
    const run = (attention: 'fused' | 'unfused', recompute?: { method: 'mlp' }) =>
      shape({
        distributedOptimizer: true,
        stateDtypes: moments,
        activations: { ...shape().activations, attention, ...(recompute ? { recompute } : {}) },
      });
    for (const [attention, modules] of [
      ['fused', 'core_attn mlp'],
      ['unfused', 'mlp'],
    ] as const) {
      const whole = runBytes(run(attention)).total;
      const mlp = runBytes(run(attention, { method: 'mlp' })).total;
      expect(mlp).toBeLessThan(whole);
      expect(budgetProblem(run(attention), whole - 1)).toMatch(
        new RegExp(`; with --recompute-granularity selective --recompute-modules ${modules} it needs .* and fits$`),
      );
      // Full recomputation is offered where the MLPs' is not enough.
      expect(budgetProblem(run(attention), mlp - 1)).toMatch(
        /; with --recompute-granularity full --recompute-method uniform it needs .* and fits$/,
      );
      expect(budgetProblem(run(attention, { method: 'mlp' }), mlp - 1)).toMatch(
        /; with --recompute-granularity full --recompute-method uniform it needs .* and fits$/,
      );
    }
  });

  it('bf16 params: fp16 main params and bf16 grads come after 16-bit moments, counted as the calculator counts them', () => {
    const bf16 = (over: Partial<RunShape>) => shape({ specs: gptParams(gpt, 'bfloat16', 'float32'), distributedOptimizer: true, ...over });
    const moments = { expAvg: 'bfloat16', expAvgSq: 'bfloat16' } as const;
    const narrow = runBytes(bf16({ stateDtypes: moments })).total;
    const all = { ...moments, mainParams: 'float16', mainGrads: 'bfloat16' } as const;
    const rows = memoryRows(
      { kind: 'gpt', shape: gpt },
      { dataParallelSizes: [2], precisions: ['bf16'], distributed: [true], microBatchSize: 4, stateDtypes: all },
    );
    const narrowest = runBytes(
      bf16({
        stateDtypes: all,
        specs: gptParams(gpt, 'bfloat16', 'bfloat16'),
        activations: { ...shape().activations, halfGrads: true },
      }),
    ).total;
    expect(narrowest).toBe(rows[0]!.total_bytes_per_rank);
    expect(narrowest).toBeLessThan(narrow);
    expect(budgetProblem(bf16({}), narrow - 1)).toMatch(
      /; with --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16 --main-params-dtype fp16 --main-grads-dtype bf16 it needs .* and fits$/,
    );
  });
});
