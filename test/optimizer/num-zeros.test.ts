/**
 * --log-num-zeros-in-grad: the optimizer counts the grad elements that are exactly zero, over the
 * params only (never the buckets' padding), once across the ranks: against a count on the host of the
 * grads every rank gave. Ranks are simulated in one process (test/helpers/local-group.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { floatToBf16 } from '../../src/collectives/reduce.js';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext, storageUsage } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { SumOfSquares } from '../../src/optimizer/sumsq.js';
import { localGroups } from '../helpers/local-group.js';
import { seeded } from '../helpers/seed.js';

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());
const { seed, random } = seeded('optimizer/num-zeros.test.ts');

const specs: ParamSpec[] = [
  { name: 'embed', shape: [37, 3], dtype: 'float32', gradDtype: 'float32' },
  { name: 'bias', shape: [5], dtype: 'float32', gradDtype: 'float32' },
  { name: 'w', shape: [13, 77], dtype: 'float32', gradDtype: 'float32' },
  { name: 'odd', shape: [301], dtype: 'float32', gradDtype: 'float32' },
];
const numel = (p: ParamSpec) => p.shape.reduce((a, b) => a * b, 1);

describe('zeros in the grads (--log-num-zeros-in-grad)', () => {
  // Grads of which about a third are zero (whole rows of the embedding among them), the same on every rank.
  const grads = new Map(
    specs.map((p) => [
      p.name,
      Float32Array.from({ length: numel(p) }, (_, e) => (random() < 0.3 || (p.name === 'embed' && e < 30) ? 0 : random() - 0.5)),
    ]),
  );
  const zeros = [...grads.values()].reduce((n, g) => n + g.filter((x) => x === 0).length, 0);

  for (const [d, distributed] of [
    [1, false],
    [2, false],
    [1, true],
    [3, true],
  ] as const)
    it(`d = ${d}, ${distributed ? 'distributed' : 'non-distributed'} optimizer: the count of zeros over every param, padding left out (seed ${seed})`, async () => {
      const groups = localGroups(d);
      const results = await Promise.all(
        groups.map(async (group) => {
          const layout = computeLayout(specs, { dataParallelSize: d, distributedOptimizer: distributed, bucketSize: 700 });
          const ddp = new DistributedDataParallel(ctx, group, layout);
          const optimizer = createOptimizer(ctx, group, ddp, { hyper: ADAMW_DEFAULTS, countZeros: true });
          ddp.importParams(new Map(specs.map((p) => [p.name, new Float32Array(numel(p)).fill(0.5)])));
          ddp.zeroGradBuffer();
          for (const buffer of ddp.buffers) {
            // The buffers pad their buckets: the padding stays zero, as backward leaves it.
            expect(buffer.layout.numel).toBeGreaterThan(buffer.layout.params.reduce((n, p) => n + p.numel, 0));
            const g = new Float32Array(buffer.layout.numel);
            for (const p of buffer.layout.params) g.set(grads.get(p.name)!, p.start);
            ctx.transfers.upload(buffer.grads, g);
          }
          await ddp.finishGradSync();
          const result = await optimizer.step();
          optimizer.destroy();
          ddp.destroy();
          return result.numZeros;
        }),
      );
      expect(zeros).toBeGreaterThan(30);
      expect(results).toEqual(new Array(d).fill(zeros));
    });

  it('without countZeros the step reports none', async () => {
    const [group] = localGroups(1);
    const ddp = new DistributedDataParallel(ctx, group!, computeLayout(specs, { dataParallelSize: 1, distributedOptimizer: true }));
    const optimizer = createOptimizer(ctx, group!, ddp, { hyper: ADAMW_DEFAULTS });
    ddp.zeroGradBuffer();
    await ddp.finishGradSync();
    expect((await optimizer.step()).numZeros).toBeNull();
    optimizer.destroy();
    ddp.destroy();
  });

  it('16-bit values are counted as they are stored: zeros of bf16, with a window that starts mid-word', async () => {
    const n = 5001;
    const values = Array.from({ length: n }, () => (random() < 0.25 ? 0 : random() < 0.5 ? 1e-30 : random() - 0.5));
    const words = new Uint32Array(Math.ceil(n / 2) + 1);
    values.forEach((v, e) => {
      words[e >> 1]! |= floatToBf16(v) << (e % 2 === 0 ? 0 : 16);
    });
    const buffer = ctx.createBuffer({ label: 'bf16 values', size: words.byteLength, usage: storageUsage(), category: 'other' });
    ctx.transfers.upload(buffer, words);
    try {
      // Elements 1 .. n - 1: an odd first element, in the high half of its word.
      const sums = new SumOfSquares(ctx, [{ operand: { buffer, offset: 1, dtype: 'bfloat16' }, length: n - 1 }], true);
      const got = await sums.run();
      const bf16 = (v: number) => floatToBf16(v) === 0 || floatToBf16(v) === 0x8000;
      expect(got.zeros).toBe(values.slice(1).filter(bf16).length);
      sums.destroy();
    } finally {
      buffer.destroy();
    }
  });
});
