import { describe, expect, it } from 'vitest';
import { computeLayout, defaultBucketSize, findParam, type ParamSpec } from '../../src/ddp/layout.js';
import { shardRanges } from '../../src/optimizer/ranges.js';

const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype: 'float32', gradDtype: 'float32' });
// Registration order a, b, c, d: placement order d, c, b, a.
const model = [f32('a', 10, 10), f32('b', 300), f32('c', 7, 101), f32('d', 5)];

describe('layout (Megatron rules)', () => {
  it('distributed optimizer, d = 2, bucket size 1000: exact offsets', () => {
    // d [0,5); c starts at pad(5,64)=64, ends 771; b at pad(771,64)=832..1132: 1132 >= 1000 closes
    // bucket 0, padded to lcm(2,128)=128 -> 1152. a at 1152..1252; bucket 1 padded to 1280.
    const layout = computeLayout(model, { dataParallelSize: 2, distributedOptimizer: true, bucketSize: 1000 });
    const buffer = layout.buffers[0]!;
    expect(buffer.params.map((p) => [p.name, p.start, p.end, p.bucket])).toEqual([
      ['d', 0, 5, 0],
      ['c', 64, 771, 0],
      ['b', 832, 1132, 0],
      ['a', 1152, 1252, 1],
    ]);
    expect(buffer.buckets.map((b) => [b.start, b.end, b.numelUnpadded, b.params])).toEqual([
      [0, 1152, 1132, ['d', 'c', 'b']],
      [1152, 1280, 100, ['a']],
    ]);
    expect(buffer.numel).toBe(1280);
    expect(buffer.paramNumel).toBe(1112);
    expect(layout.paramCount).toBe(1112);
    expect(findParam(layout, 'c').placement.start).toBe(64);
  });

  it('without the distributed optimizer: params start at multiples of 4, no other padding', () => {
    const layout = computeLayout(model, { dataParallelSize: 2, distributedOptimizer: false, bucketSize: 1000 });
    const buffer = layout.buffers[0]!;
    expect(buffer.params.map((p) => [p.name, p.start, p.end])).toEqual([
      ['d', 0, 5],
      ['c', 8, 715],
      ['b', 716, 1016],
      ['a', 1016, 1116],
    ]);
    expect(buffer.buckets.map((b) => [b.start, b.end])).toEqual([
      [0, 1016],
      [1016, 1116],
    ]);
    expect(buffer.numel).toBe(1116);
  });

  it('16-bit params without the distributed optimizer: starts at multiples of 4, buckets end at even elements', () => {
    const bf = (name: string, n: number): ParamSpec => ({ name, shape: [n], dtype: 'bfloat16', gradDtype: 'float32' });
    const layout = computeLayout([bf('a', 3), bf('b', 5), bf('c', 4)], { dataParallelSize: 2, distributedOptimizer: false, bucketSize: 6 });
    const buffer = layout.buffers[0]!;
    expect(buffer.params.map((p) => [p.name, p.start, p.end])).toEqual([
      ['c', 0, 4],
      ['b', 4, 9],
      ['a', 12, 15],
    ]);
    expect(buffer.buckets.map((b) => [b.start, b.end])).toEqual([
      [0, 10],
      [10, 16],
    ]);
  });

  it('one buffer per (param dtype, grad dtype), in order of first appearance', () => {
    const layout = computeLayout(
      [
        { name: 'x', shape: [3], dtype: 'float16', gradDtype: 'float16' },
        f32('y', 4),
        { name: 'z', shape: [5], dtype: 'float16', gradDtype: 'float16' },
        { name: 'w', shape: [6], dtype: 'bfloat16', gradDtype: 'float32' },
      ],
      { dataParallelSize: 3, distributedOptimizer: true },
    );
    expect(layout.buffers.map((b) => [b.paramDtype, b.gradDtype, b.params.map((p) => p.name), b.numel])).toEqual([
      ['float16', 'float16', ['z', 'x'], 384], // z [0,5), x [64,67): padded to lcm(3,128)=384
      ['float32', 'float32', ['y'], 384],
      ['bfloat16', 'float32', ['w'], 384],
    ]);
  });

  it('default bucket size is max(40M, 1M·d)', () => {
    expect(defaultBucketSize(8)).toBe(40_000_000);
    expect(defaultBucketSize(64)).toBe(64_000_000);
    expect(computeLayout(model, { dataParallelSize: 1, distributedOptimizer: true }).bucketSize).toBe(40_000_000);
  });

  it('bad input is a one-line error naming it', () => {
    expect(() => computeLayout([f32('a', 2), f32('a', 3)], { dataParallelSize: 1, distributedOptimizer: false })).toThrow(
      "param 'a' is registered twice",
    );
    expect(() => computeLayout([f32('a', 2, 0)], { dataParallelSize: 1, distributedOptimizer: false })).toThrow(
      "param 'a' has shape [2, 0]; every dimension must be a positive integer",
    );
    expect(() => computeLayout(model, { dataParallelSize: 0, distributedOptimizer: true })).toThrow(
      'data-parallel size must be a positive integer, got 0',
    );
    expect(() => computeLayout(model, { dataParallelSize: 2, distributedOptimizer: true, bucketSize: -5 })).toThrow(
      'bucketSize must be a positive integer, got -5',
    );
  });
});

describe('shard ranges', () => {
  it('d = 2: a param straddling the two ranks, padding, two buckets', () => {
    const layout = computeLayout(model, { dataParallelSize: 2, distributedOptimizer: true, bucketSize: 1000 });
    const flat = (rank: number) =>
      shardRanges(layout, rank).map((s) => ({
        bucket: s.bucket,
        world: [s.gbufWorld.start, s.gbufWorld.end],
        inBucket: [s.gbufWorldInBucket.start, s.gbufWorldInBucket.end],
        params: s.params.map((p) => [p.name, p.paramLocal.start, p.paramLocal.end, p.param.start, p.param.end, p.paramWorldInBucket.start]),
      }));
    expect(flat(0)).toEqual([
      {
        bucket: 0,
        world: [0, 576],
        inBucket: [0, 576],
        params: [
          ['d', 0, 5, 0, 5, 0],
          ['c', 64, 576, 0, 512, 64],
        ],
      },
      { bucket: 1, world: [1152, 1216], inBucket: [0, 64], params: [['a', 0, 64, 0, 64, 0]] },
    ]);
    expect(flat(1)).toEqual([
      {
        bucket: 0,
        world: [576, 1152],
        inBucket: [576, 1152],
        params: [
          ['c', 0, 195, 512, 707, 576],
          ['b', 256, 556, 0, 300, 832],
        ],
      },
      { bucket: 1, world: [1216, 1280], inBucket: [64, 128], params: [['a', 0, 36, 64, 100, 64]] },
    ]);
  });

  it('for random models and d = 1..8 the shards tile every param exactly once', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed % n) + 1;
    };
    for (let trial = 0; trial < 40; trial++) {
      const params = Array.from({ length: rand(12) }, (_, i) => f32(`p${i}`, rand(300), rand(3)));
      const d = (trial % 8) + 1;
      const layout = computeLayout(params, { dataParallelSize: d, distributedOptimizer: true, bucketSize: rand(2000) });
      const buffer = layout.buffers[0]!;
      let previousEnd = 0;
      for (const p of buffer.params) {
        expect(p.start % 64).toBe(0);
        expect(p.start).toBeGreaterThanOrEqual(previousEnd);
        previousEnd = p.end;
      }
      for (const b of buffer.buckets) expect((b.end - b.start) % d).toBe(0);
      const covered = new Map(params.map((p) => [p.name, new Uint8Array(p.shape[0]! * p.shape[1]!)]));
      for (let r = 0; r < d; r++) {
        for (const s of shardRanges(layout, r)) {
          for (const p of s.params) {
            expect(p.paramLocal.end - p.paramLocal.start).toBe(p.param.end - p.param.start);
            expect(p.paramWorld.start - s.gbufWorld.start).toBe(p.paramLocal.start);
            for (let i = p.param.start; i < p.param.end; i++) covered.get(p.name)![i]! += 1;
          }
        }
      }
      for (const [name, counts] of covered)
        expect(
          counts.every((c) => c === 1),
          `${name} at d=${d}`,
        ).toBe(true);
    }
  });
});
