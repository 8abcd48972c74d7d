/**
 * Data-parallel sizes of 64 and beyond: every bucket splits into d shards that start at multiples of
 * 4 elements (the optimizer kernels' vec4s and 16-bit pairs), and one optimizer step on every rank
 * equals Adam on the averaged grads. Ranks are simulated in one process (test/helpers/local-group.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { bucketEndAlignment, computeLayout, lcm, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS, adamReferenceStep } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { shardRanges } from '../../src/optimizer/ranges.js';
import { rowsFor } from '../../src/cli/memory.js';
import { relativeError } from '../helpers/hash.js';
import { localGroups } from '../helpers/local-group.js';

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());
const hyper = { ...ADAMW_DEFAULTS, lr: 1e-2, weightDecay: 0.1 };
const SIZES = [1, 2, 3, 64, 96, 128, 192, 512];

function model(dtype: 'float32' | 'bfloat16'): ParamSpec[] {
  const p = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype, gradDtype: 'float32' });
  return [p('embed', 37, 3), p('bias', 5), p('w', 13, 77), p('odd', 301)];
}

const value = (k: number, e: number) => ((((k * 7919 + e * 31) % 997) - 498) / 498) * 0.5;
const gradOf = (rank: number, k: number, e: number) => (((k * 13 + e * 7 + rank * 29) % 23) - 11) * 0.25;

describe('data-parallel sizes up to 512', () => {
  it.each(SIZES)('d = %i: every bucket splits into d shards of a multiple of 4 elements', (d) => {
    const layout = computeLayout(model('float32'), { dataParallelSize: d, distributedOptimizer: true, bucketSize: 700 });
    expect(layout.buffers[0]!.buckets.length).toBeGreaterThan(1);
    for (const bucket of layout.buffers[0]!.buckets) {
      const size = bucket.end - bucket.start;
      expect(size % lcm(d, 128), "Megatron's rule still holds").toBe(0);
      expect((size / d) % 4).toBe(0);
    }
    for (const rank of [0, d - 1, Math.floor(d / 2)]) for (const r of shardRanges(layout, rank)) expect(r.gbufWorld.start % 4).toBe(0);
    // Megatron's own rule where 64 does not divide d; twice it (or more) where it does.
    expect(bucketEndAlignment(d)).toBe(d % 64 === 0 ? lcm(4 * d, 128) : lcm(d, 128));
  });

  it('the memory tool reports the extra alignment as padding', async () => {
    const row = async (d: number) =>
      (await rowsFor({ params: '1100', 'data-parallel-size': [String(d)] })).rows.find((r) => r.distributed)!;
    // 1100 fp32 params in one bucket: padded to 1280 elements at d = 64 (Megatron's lcm(64, 128) would give
    // 1152). Rank 0 holds the whole padded param and grad buffers and a padding-free shard of the state.
    expect((await row(64)).by_category.padding).toBe((1280 - 1100) * 4 * 2);
    expect((await row(3)).by_category.padding).toBe((1152 - 1100) * 4 * 2);
  });

  for (const [d, dtype] of [...SIZES.map((d) => [d, 'float32'] as const), [128, 'bfloat16'] as const]) {
    it(`d = ${d}, ${dtype}: one step of every rank equals Adam on the averaged grads`, async () => {
      const specs = model(dtype);
      const groups = localGroups(d);
      const ranks = groups.map((group) => {
        const layout = computeLayout(specs, { dataParallelSize: d, distributedOptimizer: true, bucketSize: 700 });
        const ddp = new DistributedDataParallel(ctx, group, layout);
        const optimizer = createOptimizer(ctx, group, ddp, { hyper });
        return { group, ddp, optimizer };
      });
      const numel = (p: ParamSpec) => p.shape.reduce((a, b) => a * b, 1);
      const initial = new Map(specs.map((p, k) => [p.name, Float32Array.from({ length: numel(p) }, (_, e) => value(k, e))]));
      await Promise.all(
        ranks.map(async ({ ddp, optimizer, group }) => {
          ddp.importParams(initial);
          ddp.zeroGradBuffer();
          for (const buffer of ddp.buffers) {
            const g = new Float32Array(buffer.layout.numel);
            for (const p of buffer.layout.params) {
              const k = specs.findIndex((s) => s.name === p.name);
              for (let e = 0; e < p.numel; e++) g[p.start + e] = gradOf(group.rank, k, e);
            }
            ctx.transfers.upload(buffer.grads, g);
          }
          await ddp.finishGradSync();
          await optimizer.step();
        }),
      );
      // The reference: grads summed in rank order in fp32 and scaled once, as the simulated reduction does.
      const expected = new Map<string, Float32Array>();
      for (const [k, p] of specs.entries()) {
        const n = numel(p);
        const param = Float32Array.from(initial.get(p.name)!, (x) =>
          dtype === 'bfloat16'
            ? new Float32Array(
                new Uint32Array([
                  (new Uint32Array(new Float32Array([x]).buffer)[0]! +
                    0x7fff +
                    ((new Uint32Array(new Float32Array([x]).buffer)[0]! >>> 16) & 1)) &
                    0xffff0000,
                ]).buffer,
              )[0]!
            : x,
        );
        const grad = Float32Array.from({ length: n }, (_, e) => {
          let sum = 0;
          for (let r = 0; r < d; r++) sum = Math.fround(sum + gradOf(r, k, e));
          return Math.fround(sum * Math.fround(1 / d));
        });
        adamReferenceStep(hyper, 1, param, grad, new Float32Array(n), new Float32Array(n));
        expected.set(p.name, param);
      }
      const flat = (m: Map<string, Float32Array>) => specs.flatMap((p) => [...m.get(p.name)!]);
      // fp32: the params themselves; bf16: the fp32 main params (exportState is a collective).
      const states =
        dtype === 'float32'
          ? await Promise.all(ranks.map((r) => r.ddp.exportParams()))
          : (await Promise.all(ranks.map((r) => r.optimizer.exportState()))).map((s) => s.main!);
      for (const rank of [0, 1, d - 1].filter((r) => r < d)) {
        expect(relativeError(flat(states[rank]!), flat(expected)), `rank ${rank}`).toBeLessThanOrEqual(1e-6);
      }
      for (const r of ranks) {
        r.optimizer.destroy();
        r.ddp.destroy();
      }
    });
  }
});
