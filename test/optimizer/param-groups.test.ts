/**
 * Megatron's optimizer semantics: two param groups (no weight decay on biases and 1-D params), a
 * third with its own learning rate (--decoupled-lr), and the OptimizerParamScheduler's learning
 * rate, against torch.optim.AdamW with those param groups (test/fixtures/param-groups-torch.json,
 * scripts/make-param-group-fixtures.py) and against the schedule's formulas written out.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { ADAMW_DEFAULTS } from '../../src/optimizer/adam-math.js';
import { groupRuns, megatronWeightDecay } from '../../src/optimizer/optimizer-base.js';
import { createOptimizer } from '../../src/optimizer/optimizer.js';
import { learningRate, type LrSchedule } from '../../src/train/schedule.js';
import { hashedUniform, relativeError } from '../helpers/hash.js';
import { localGroups } from '../helpers/local-group.js';

const fixture = JSON.parse(readFileSync(new URL('../fixtures/param-groups-torch.json', import.meta.url), 'utf8')) as {
  params: { name: string; shape: number[] }[];
  steps: number;
  schedule: { lr: number; min_lr: number; warmup_iters: number; decay_iters: number };
  weight_decay: number;
  betas: [number, number];
  eps: number;
  clip_grad: number;
  rates: number[];
  final: Record<string, string>;
  decoupled: { params: string[]; lr: number; min_lr: number; rates: number[]; final: Record<string, string> };
};
const decode = (b64: string) => new Float32Array(new Uint8Array(Buffer.from(b64, 'base64')).buffer);

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());

describe("learning-rate schedule (Megatron's OptimizerParamScheduler)", () => {
  const base: LrSchedule = { lr: 1e-3, minLr: 1e-5, decayStyle: 'cosine', warmupSteps: 10, decaySteps: 110 };
  it('linear warmup from warmupInit, then cosine, linear or constant, then minLr', () => {
    expect(learningRate(base, 0)).toBe(0);
    expect(learningRate(base, 5)).toBeCloseTo(5e-4, 15);
    expect(learningRate({ ...base, warmupInit: 1e-4 }, 5)).toBeCloseTo(1e-4 + (9e-4 * 5) / 10, 15);
    expect(learningRate(base, 10)).toBe(1e-3);
    // Half-way through the decay: cosine gives the midpoint, linear too.
    expect(learningRate(base, 60)).toBeCloseTo(1e-5 + 0.5 * (1e-3 - 1e-5), 15);
    expect(learningRate({ ...base, decayStyle: 'linear' }, 35)).toBeCloseTo(1e-5 + 0.75 * (1e-3 - 1e-5), 15);
    expect(learningRate({ ...base, decayStyle: 'cosine' }, 35)).toBeCloseTo(
      1e-5 + 0.5 * (Math.cos(Math.PI * 0.25) + 1) * (1e-3 - 1e-5),
      15,
    );
    expect(learningRate(base, 110)).toBeCloseTo(1e-5, 15);
    expect(learningRate(base, 111)).toBe(1e-5);
    expect(learningRate({ ...base, decayStyle: 'constant' }, 1000)).toBe(1e-3);
    expect(learningRate({ ...base, warmupSteps: 0 }, 0)).toBe(1e-3);
  });

  it("the fixture's per-step rates, which torch used, are the same formula", () => {
    const s = fixture.schedule;
    const sched: LrSchedule = { lr: s.lr, minLr: s.min_lr, decayStyle: 'cosine', warmupSteps: s.warmup_iters, decaySteps: s.decay_iters };
    for (const [k, r] of fixture.rates.entries()) expect(learningRate(sched, k)).toBeCloseTo(r, 15);
  });
});

describe('param groups', () => {
  it("Megatron's default: decay on 2-D weights and embeddings, none on biases and norms", () => {
    expect(megatronWeightDecay('blocks.0.attn.qkv.weight', [4, 12])).toBe(true);
    expect(megatronWeightDecay('wte.weight', [81, 4])).toBe(true);
    expect(megatronWeightDecay('blocks.0.attn.qkv.bias', [12])).toBe(false);
    expect(megatronWeightDecay('blocks.0.ln_1.weight', [4])).toBe(false);
    expect(megatronWeightDecay('odd.bias', [2, 2])).toBe(false);
  });

  it('groupRuns splits a range at the params where the group changes', () => {
    const p = (start: number, decay: boolean, decoupled = false) => ({ start, decay, decoupled });
    expect(groupRuns([p(0, true), p(64, false), p(128, false), p(192, true)], 256)).toEqual([
      { start: 0, end: 64, decay: true, decoupled: false },
      { start: 64, end: 192, decay: false, decoupled: false },
      { start: 192, end: 256, decay: true, decoupled: false },
    ]);
    // The decoupled rate splits runs of the same decay.
    expect(groupRuns([p(0, true, true), p(32, true), p(96, false), p(100, true, true)], 128)).toEqual([
      { start: 0, end: 32, decay: true, decoupled: true },
      { start: 32, end: 96, decay: true, decoupled: false },
      { start: 96, end: 100, decay: false, decoupled: false },
      { start: 100, end: 128, decay: true, decoupled: true },
    ]);
    expect(groupRuns([p(8, false)], 20)).toEqual([{ start: 0, end: 20, decay: false, decoupled: false }]);
    expect(groupRuns([], 12)).toEqual([{ start: 0, end: 12, decay: true, decoupled: false }]);
  });

  for (const [world, distributed, decoupled] of [
    [1, false, false],
    [1, true, false],
    [2, true, false],
    [2, false, false],
    [1, false, true],
    [2, true, true],
  ] as const) {
    const groups = decoupled ? 'three param groups (one at --decoupled-lr)' : 'two param groups';
    it(`d = ${world}, ${distributed ? 'distributed' : 'non-distributed'}: ${fixture.steps} steps equal torch.optim.AdamW with ${groups} and the schedule`, async () => {
      const specs: ParamSpec[] = fixture.params.map((p) => ({ name: p.name, shape: p.shape, dtype: 'float32', gradDtype: 'float32' }));
      const s = fixture.schedule;
      const sched: LrSchedule = { lr: s.lr, minLr: s.min_lr, decayStyle: 'cosine', warmupSteps: s.warmup_iters, decaySteps: s.decay_iters };
      const decoupledSched: LrSchedule = { ...sched, lr: fixture.decoupled.lr, minLr: fixture.decoupled.min_lr };
      for (const [k, r] of fixture.decoupled.rates.entries()) expect(learningRate(decoupledSched, k)).toBeCloseTo(r, 15);
      const expected = decoupled ? fixture.decoupled.final : fixture.final;
      const hyper = {
        ...ADAMW_DEFAULTS,
        lr: s.lr,
        beta1: fixture.betas[0],
        beta2: fixture.betas[1],
        eps: fixture.eps,
        weightDecay: fixture.weight_decay,
      };
      const ranks = localGroups(world).map((group) => {
        // Buckets of 40 elements: several per rank, so runs of either group fall in several shards.
        const ddp = new DistributedDataParallel(
          ctx,
          group,
          computeLayout(specs, { dataParallelSize: world, distributedOptimizer: distributed, bucketSize: 40 }),
        );
        const optimizer = createOptimizer(ctx, group, ddp, {
          hyper,
          clipGrad: fixture.clip_grad,
          weightDecayFor: megatronWeightDecay,
          ...(decoupled ? { decoupledLrFor: (name: string) => fixture.decoupled.params.includes(name) } : {}),
        });
        return { ddp, optimizer };
      });
      const numel = (p: ParamSpec) => p.shape.reduce((a, b) => a * b, 1);
      await Promise.all(
        ranks.map(async ({ ddp, optimizer }) => {
          ddp.importParams(new Map(specs.map((p, k) => [p.name, hashedUniform(7, k, numel(p), 1.0)])));
          for (let t = 1; t <= fixture.steps; t++) {
            ddp.zeroGradBuffer();
            const buffer = ddp.buffers[0]!;
            const g = new Float32Array(buffer.layout.numel);
            for (const p of buffer.layout.params)
              g.set(
                hashedUniform(
                  1000 + t,
                  specs.findIndex((x) => x.name === p.name),
                  p.numel,
                  0.5,
                ),
                p.start,
              );
            ctx.transfers.upload(buffer.grads, g);
            await ddp.finishGradSync();
            optimizer.learningRate = learningRate(sched, optimizer.stepCount);
            if (decoupled) optimizer.decoupledLearningRate = learningRate(decoupledSched, optimizer.stepCount);
            await optimizer.step();
          }
        }),
      );
      for (const [rank, { ddp }] of ranks.entries()) {
        const got = await ddp.exportParams();
        for (const p of specs) {
          expect(relativeError(got.get(p.name)!, decode(expected[p.name]!)), `rank ${rank}, ${p.name}`).toBeLessThanOrEqual(1e-6);
        }
      }
      for (const r of ranks) {
        r.optimizer.destroy();
        r.ddp.destroy();
      }
    });
  }

  it("without groups every param decays: the no-decay params then differ from torch's", async () => {
    const specs: ParamSpec[] = fixture.params.map((p) => ({ name: p.name, shape: p.shape, dtype: 'float32', gradDtype: 'float32' }));
    const [group] = localGroups(1);
    const ddp = new DistributedDataParallel(ctx, group!, computeLayout(specs, { dataParallelSize: 1, distributedOptimizer: true }));
    const optimizer = createOptimizer(ctx, group!, ddp, { hyper: { ...ADAMW_DEFAULTS, lr: 0.1, weightDecay: 0.5 } });
    ddp.importParams(new Map(specs.map((p) => [p.name, new Float32Array(p.shape.reduce((a, b) => a * b, 1)).fill(1)])));
    ddp.zeroGradBuffer();
    await ddp.finishGradSync();
    await optimizer.step();
    // Zero grads: only the decoupled decay moves the params, by the factor 1 - lr·wd.
    expect([...(await ddp.exportParams()).get('b1')!]).toEqual(new Array(5).fill(Math.fround(1 - 0.1 * 0.5)));
    optimizer.destroy();
    ddp.destroy();
  });
});
