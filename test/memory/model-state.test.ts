import { describe, expect, it } from 'vitest';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { modelStateBytes } from '../../src/memory/model-state.js';

const spec = (dtype: ParamSpec['dtype'], gradDtype: ParamSpec['gradDtype']): ParamSpec[] => [
  { name: 'a', shape: [1000, 64], dtype, gradDtype },
  { name: 'b', shape: [777], dtype, gradDtype },
];

describe("model-state bytes (Megatron's table)", () => {
  it.each([
    ['float16', 'float16', 20, (d: number) => 4 + 16 / d],
    ['bfloat16', 'float32', 18, (d: number) => 6 + 12 / d],
    ['float32', 'float32', 16, (d: number) => 8 + 8 / d],
  ] as const)('%s params / %s grads: %i vs the distributed formula, d = 1..64', (dtype, gradDtype, plain, distributed) => {
    for (let d = 1; d <= 64; d++) {
      expect(
        modelStateBytes(computeLayout(spec(dtype, gradDtype), { dataParallelSize: d, distributedOptimizer: false })).bytesPerParam,
      ).toBe(plain);
      expect(
        modelStateBytes(computeLayout(spec(dtype, gradDtype), { dataParallelSize: d, distributedOptimizer: true })).bytesPerParam,
      ).toBeCloseTo(distributed(d), 12);
    }
  });

  it('padding is reported on its own, per rank, and adds up', () => {
    const layout = computeLayout(spec('bfloat16', 'float32'), { dataParallelSize: 3, distributedOptimizer: true });
    // Placed in reverse: b at 0..777, a at pad(777, 64) = 832..64832; the bucket ends at
    // pad(64832, lcm(3, 128) = 384) = 64896: 55 elements of start padding and 64 of end padding.
    expect(layout.buffers[0]!.numel).toBe(64_896);
    const shard = 64_896 / 3;
    const padding = [55, 0, 64]; // rank 0 holds b's start padding, rank 2 the bucket's end
    for (const rank of [0, 1, 2]) {
      const m = modelStateBytes(layout, rank);
      expect(m.paramCount).toBe(64_777);
      expect(m.byCategory).toEqual({ params: 64_896 * 2, grads: 64_896 * 4, 'main-params': shard * 4, 'optimizer-state': shard * 8 });
      expect(m.paddingByCategory).toEqual({
        params: 119 * 2,
        grads: 119 * 4,
        'main-params': padding[rank]! * 4,
        'optimizer-state': padding[rank]! * 8,
      });
    }
    // Over all ranks: the table's bytes for every param once, plus all the padding.
    const all = [0, 1, 2].map((r) => modelStateBytes(layout, r));
    const optimizerSide = all.reduce(
      (s, m) =>
        s +
        m.byCategory['main-params'] +
        m.byCategory['optimizer-state'] -
        m.paddingByCategory['main-params'] -
        m.paddingByCategory['optimizer-state'],
      0,
    );
    expect(optimizerSide).toBe(64_777 * 12);
  });
});
