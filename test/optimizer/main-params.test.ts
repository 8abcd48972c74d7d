/**
 * 16-bit models keep the params they are given: the fp32 main params follow every write to the
 * model params before the next step, whatever the order of set-up calls.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../../src/optimizer/adam-math.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { localGroups } from '../helpers/local-group.js';

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());
const hyper = { ...ADAMW_DEFAULTS, lr: 1e-2, weightDecay: 0 };
const dtypes = (['bfloat16', 'float16'] as const).filter((d) => d !== 'float16' || ctx.hasF16);

function model(dtype: 'bfloat16' | 'float16'): ParamSpec[] {
  const g = dtype === 'float16' ? 'float16' : 'float32';
  return [
    { name: 'w', shape: [7, 5], dtype, gradDtype: g },
    { name: 'b', shape: [5], dtype, gradDtype: g },
  ];
}

function setUp(dtype: 'bfloat16' | 'float16', distributed: boolean, world = 1) {
  return localGroups(world).map((group) => {
    const layout = computeLayout(model(dtype), { dataParallelSize: world, distributedOptimizer: distributed });
    const ddp = new DistributedDataParallel(ctx, group, layout);
    const optimizer = createOptimizer(ctx, group, ddp, { hyper, lossScaler: { initialScale: 1 } });
    return { group, ddp, optimizer };
  });
}

/** One step with zero grads: Adam leaves every param as it is. */
async function zeroStep(r: ReturnType<typeof setUp>[number]): Promise<void> {
  r.ddp.zeroGradBuffer();
  await r.ddp.finishGradSync();
  const result = await r.optimizer.step();
  expect(result.skipped).toBe(false);
}

const filled = (value: number | ((i: number) => number)) =>
  new Map([
    ['w', Float32Array.from({ length: 35 }, (_, i) => (typeof value === 'number' ? value : value(i)))],
    ['b', Float32Array.from({ length: 5 }, (_, i) => (typeof value === 'number' ? value : value(100 + i)))],
  ]);

describe('16-bit params written after the optimizer was built', () => {
  for (const dtype of dtypes) {
    for (const distributed of [true, false]) {
      it(`${dtype}, ${distributed ? 'distributed' : 'non-distributed'}: importParams of 1.5, one step with zero grads, the params read 1.5`, async () => {
        // Before: the main params kept the values of the optimizer's construction (zeros) and the step wrote them back.
        const [r] = setUp(dtype, distributed);
        r!.ddp.importParams(filled(1.5));
        await zeroStep(r!);
        const params = await r!.ddp.exportParams();
        expect([...params.get('w')!, ...params.get('b')!]).toEqual(new Array(40).fill(1.5));
        r!.optimizer.destroy();
        r!.ddp.destroy();
      });

      it(`${dtype}, ${distributed ? 'distributed' : 'non-distributed'}: after broadcastParams every rank steps from rank 0's params`, async () => {
        const ranks = setUp(dtype, distributed, 2);
        // Values exact in both 16-bit formats, different on each rank.
        for (const [rank, r] of ranks.entries()) r.ddp.importParams(filled((i) => (rank + 1) * ((i % 8) - 4) * 0.25));
        await Promise.all(ranks.map((r) => r.ddp.broadcastParams()));
        await Promise.all(ranks.map((r) => zeroStep(r)));
        const want = [...filled((i) => ((i % 8) - 4) * 0.25).values()].flatMap((v) => [...v]);
        for (const [rank, r] of ranks.entries()) {
          const p = await r.ddp.exportParams();
          expect([...p.get('w')!, ...p.get('b')!], `rank ${rank}`).toEqual(want);
        }
        for (const r of ranks) {
          r.optimizer.destroy();
          r.ddp.destroy();
        }
      });
    }
  }

  it('a direct write to the param buffer counts once paramsWritten() says so', async () => {
    const [r] = setUp('bfloat16', true);
    const words = new Uint16Array(r!.ddp.buffers[0]!.layout.numel).fill(0x3fc0); // 1.5 in bf16
    ctx.transfers.upload(r!.ddp.buffers[0]!.params, words);
    r!.ddp.paramsWritten();
    await zeroStep(r!);
    expect([...(await r!.ddp.exportParams()).get('w')!]).toEqual(new Array(35).fill(1.5));
    r!.optimizer.destroy();
    r!.ddp.destroy();
  });
});
