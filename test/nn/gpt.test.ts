import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import type { GradDtype, ParamDtype } from '../../src/ddp/layout.js';
import { DEEP_PLANS, type DeepPlan } from '../../src/gpu/matmul-tuner.js';
import { Graph } from '../../src/nn/graph.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { Mlp } from '../../src/nn/mlp.js';
import { LocalParams } from '../../src/nn/params.js';
import { normals } from '../../src/nn/init.js';
import { isNormWeight } from '../../src/nn/gpt-spec.js';
import { documentInputs, documentStarts } from '../../src/nn/documents.js';
import { IGNORED_TARGET } from '../../src/nn/ops.js';
import { bf16ToFloat, floatToBf16 } from '../../src/collectives/reduce.js';
import { splitmix32 } from '../../src/data/samples.js';
import { recordDispatches } from '../helpers/dispatches.js';
import { seeded } from '../helpers/seed.js';
import * as ref from './reference.js';

const SEED = seeded('nn/gpt.test.ts').seed;
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

function batchOf(config: GptConfig, batch: number, seed: number) {
  const n = batch * config.seqLength;
  const ids = Uint32Array.from({ length: n }, (_, i) => ((Math.imul(i + 1, 2654435761) ^ seed) >>> 0) % config.vocabSize);
  const targets = Uint32Array.from({ length: n }, (_, i) => ((Math.imul(i + 7, 40503) ^ seed) >>> 0) % config.vocabSize);
  return { ids, targets };
}

function model(config: GptConfig, values: Map<string, Float32Array>, dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32') {
  const params = new LocalParams(ctx, Gpt.specs(config, dtype, gradDtype));
  params.set(values);
  return { params, gpt: new Gpt(config, params.tensors) };
}

async function lossOf(gpt: Gpt, config: GptConfig, batch: number, data: ReturnType<typeof batchOf>, backward = false): Promise<number> {
  const g = new Graph(ctx, { seed: SEED });
  const { loss } = gpt.forward(
    g,
    g.input(data.ids, [batch, config.seqLength], 'ids'),
    g.input(data.targets, [batch * config.seqLength], 'targets'),
  );
  if (backward) g.backward(loss!);
  const value = (await g.read(loss!))[0]!;
  g.release();
  return value;
}

/** One forward and backward of a GPT with `values` on `device`: its loss, every param's grad, and the kernels it dispatched. */
async function lossAndGrads(
  device: GpuContext,
  config: GptConfig,
  values: Map<string, Float32Array>,
  data: { ids: Uint32Array; targets: Uint32Array },
  batch: number,
): Promise<{ loss: number; grads: Map<string, Float32Array>; dispatches: string[] }> {
  const params = new LocalParams(device, Gpt.specs(config));
  params.set(values);
  const gpt = new Gpt(config, params.tensors);
  const g = new Graph(device, { seed: SEED });
  const dispatches = recordDispatches(g, ([shader]) => shader);
  const { loss } = gpt.forward(
    g,
    g.input(data.ids, [batch, config.seqLength], 'ids'),
    g.input(data.targets, [batch * config.seqLength], 'targets'),
  );
  g.backward(loss!);
  const value = (await g.read(loss!))[0]!;
  g.release();
  const grads = new Map<string, Float32Array>();
  for (const name of values.keys()) grads.set(name, await params.read(name, true));
  params.destroy();
  return { loss: value, grads, dispatches };
}

describe('GPT', () => {
  it('initial loss on random tokens is about ln(vocab)', async () => {
    const config: GptConfig = { numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, seqLength: 16, vocabSize: 81 };
    const { params, gpt } = model(config, Gpt.init(config, SEED));
    // 256 tokens drawn uniformly: at GPT-2's init the logits' spread adds about h·0.02²/2 ≈ 0.006
    // nats, and 256 targets leave a spread of about 0.009 (12 seeds: -0.012 to 0.021). The 64 hashed
    // tokens of batchOf strayed past 0.05 for some seeds (761133744: 0.068).
    const next = splitmix32(SEED ^ 0x5eed);
    const draw = () => Uint32Array.from({ length: 16 * config.seqLength }, () => next() % config.vocabSize);
    const loss = await lossOf(gpt, config, 16, { ids: draw(), targets: draw() });
    expect(Math.abs(loss - Math.log(81)), msg(`loss ${loss} vs ln 81 = ${Math.log(81)}`)).toBeLessThan(0.05);
    params.destroy();
  });

  for (const [tiedHead, dropout, ffn, more] of [
    [true, 0, undefined, {}],
    [false, 0, 12, {}],
    [true, 0.2, undefined, {}],
    [true, 0, undefined, { positionEmbeddingType: 'rope', rotaryBase: 100 }],
    [false, 0.2, undefined, { positionEmbeddingType: 'rope', rotaryInterleaved: true }],
    // Llama's block: RMSNorm, SwiGLU, no linear biases, rope.
    [false, 0, 12, { positionEmbeddingType: 'rope', normalization: 'RMSNorm', swiglu: true, addBiasLinear: false }],
    [true, 0.2, undefined, { swiglu: true, addBiasLinear: false, addQkvBias: true }],
    // --squared-relu: max(x, 0)² after fc (its derivative 2 max(x, 0) is continuous: finite differences hold).
    [false, 0, 12, { squaredRelu: true }],
    // Grouped-query attention: 4 heads sharing 2 key and value heads (heads of 2 for rope).
    [false, 0, undefined, { numAttentionHeads: 4, numQueryGroups: 2, positionEmbeddingType: 'rope' }],
    [true, 0.2, undefined, { numAttentionHeads: 4, numQueryGroups: 1 }],
    // --kv-channels: heads 6 wide where 8 / 2 gives 4 (rope on 6 channels), and 3 wide in groups.
    [false, 0, undefined, { kvChannels: 6, positionEmbeddingType: 'rope' }],
    [true, 0.2, undefined, { numAttentionHeads: 4, numQueryGroups: 2, kvChannels: 3 }],
    // --qk-layernorm: RMSNorm on each head of q and k before rope (Qwen3's), and LayerNorm on heads of 6.
    [
      false,
      0,
      undefined,
      { numAttentionHeads: 4, numQueryGroups: 2, positionEmbeddingType: 'rope', normalization: 'RMSNorm', qkLayernorm: true },
    ],
    [true, 0.2, undefined, { kvChannels: 6, qkLayernorm: true }],
  ] as const) {
    const moreName = Object.entries(more).map(([k, v]) => `, ${k} ${String(v)}`);
    it(`gradients match finite differences of the loss (${tiedHead ? 'tied' : 'untied'} head${dropout ? `, dropout ${dropout}` : ''}${ffn ? `, MLP of ${ffn}` : ''}${moreName.join('')})`, async () => {
      // With dropout every forward of a graph with the same seed draws the same masks.
      const config: GptConfig = {
        numLayers: 2,
        hiddenSize: 8,
        numAttentionHeads: 2,
        seqLength: 5,
        vocabSize: 11,
        tiedHead,
        hiddenDropout: dropout,
        attentionDropout: dropout,
        ...(ffn ? { ffnHiddenSize: ffn } : {}),
        ...more,
      };
      const batch = 2;
      // Larger than GPT-2's init so that every layer's grads are well above fp32 noise.
      const values = new Map(
        [...Gpt.init(config, SEED)].map(([name, v]) => [
          name,
          name.includes('ln') && name.endsWith('weight')
            ? v.map((x, i) => x + normals(SEED, i, 1, 0.2)[0]!)
            : normals(SEED, name.length * 31 + v.length, v.length, 0.4),
        ]),
      );
      const { params, gpt } = model(config, values);
      const data = batchOf(config, batch, SEED);
      params.zeroGrads();
      await lossOf(gpt, config, batch, data, true);
      for (const [name, v] of values) {
        const grad = await params.read(name, true);
        // Direction: this param's own grad plus a random part, so the check has a strong signal and still
        // catches a grad that is wrong in any component.
        const noise = normals(SEED + 1, name.length, v.length, 1);
        const norm = Math.hypot(...grad) || 1;
        const dir = grad.map((x, i) => x / norm + noise[i]! / Math.sqrt(v.length));
        // Five-point stencil: its error is O(eps⁴). The embeddings' loss curves enough along these
        // directions that a central difference's O(eps²) error reached 2-4% at eps = 2e-3 (seed 8989101:
        // wpe 10.10 against 10.32, while the five-point stencil at eps = 1e-3 gives 10.322). Its fp32
        // noise is about 1.5·(loss rounding)/eps, well under the bound's 2e-3 floor.
        const eps = 1e-3;
        const at = async (t: number) => {
          params.set(new Map([[name, v.map((x, i) => x + t * eps * dir[i]!)]]));
          return lossOf(gpt, config, batch, data);
        };
        const near = (await at(1)) - (await at(-1));
        const far = (await at(2)) - (await at(-2));
        params.set(new Map([[name, v]]));
        const fd = (8 * near - far) / (12 * eps);
        const ad = grad.reduce((s, x, i) => s + x * dir[i]!, 0);
        expect(Math.abs(fd - ad), msg(`${name}: finite difference ${fd} vs autograd ${ad}`)).toBeLessThanOrEqual(
          0.02 * Math.abs(ad) + 2e-3,
        );
      }
      params.destroy();
    });
  }

  it.each([
    ['GPT-2', {}],
    [
      'Llama',
      { positionEmbeddingType: 'rope', normalization: 'RMSNorm', swiglu: true, addBiasLinear: false, tiedHead: false, numQueryGroups: 2 },
    ],
    [
      'Qwen3 (heads of 12 by --kv-channels, --qk-layernorm)',
      { positionEmbeddingType: 'rope', normalization: 'RMSNorm', swiglu: true, numQueryGroups: 2, kvChannels: 12, qkLayernorm: true },
    ],
  ] as const)(
    "%s's block: a hardware GPU's kernels (tiled matmuls, fused attention, split reductions) give the CPU driver's loss and grads",
    async (_name, more) => {
      // 128 rows: the split sums take 8 chunks of 16 rows; 81 classes leave most of a row's lanes empty.
      const config: GptConfig = { numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, seqLength: 16, vocabSize: 81, ...more };
      const batch = 8;
      const values = Gpt.init(config, SEED);
      const data = batchOf(config, batch, SEED);
      const hardware = await GpuContext.create({
        matmulKernel: 'tiled',
        attentionKernel: 'fused',
        reductionKernel: 'split',
        tuneMatmul: false,
      });
      const runs: Awaited<ReturnType<typeof lossAndGrads>>[] = [];
      try {
        for (const device of [ctx, hardware]) runs.push(await lossAndGrads(device, config, values, data, batch));
      } finally {
        hardware.destroy();
      }
      const [cpu, gpu] = runs as [(typeof runs)[0], (typeof runs)[0]];
      expect(Math.abs(gpu.loss - cpu.loss), msg(`loss ${gpu.loss} vs ${cpu.loss}`)).toBeLessThanOrEqual(1e-5 * Math.abs(cpu.loss));
      for (const [name, want] of cpu.grads) {
        expect(ref.relError(gpu.grads.get(name)!, want), msg(`${name} grad`)).toBeLessThanOrEqual(1e-4);
      }
    },
  );

  it.each([
    ['GPT-2 (LayerNorm)', {}],
    [
      'Qwen3 (RMSNorm, --qk-layernorm)',
      { positionEmbeddingType: 'rope', normalization: 'RMSNorm', swiglu: true, numQueryGroups: 2, kvChannels: 12, qkLayernorm: true },
    ],
  ] as const)(
    "--apply-layernorm-1p, %s: norm weights held as gamma - 1 give the plain model's loss and grads bit for bit, on both kernel sets",
    async (_name, more) => {
      const config: GptConfig = { numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, seqLength: 16, vocabSize: 81, ...more };
      const batch = 8;
      // Gammas in [0.5, 2], where gamma - 1 and then + 1 are exact in fp32 (Sterbenz), away from 1 so that a lost 1 shows.
      const { random } = seeded('nn/gpt.test.ts layernorm-1p');
      const plain = new Map(
        [...Gpt.init(config, SEED)].map(([name, v]) => [name, isNormWeight(name) ? v.map(() => Math.fround(0.5 + 1.5 * random())) : v]),
      );
      const centered = new Map([...plain].map(([name, v]) => [name, isNormWeight(name) ? v.map((x) => x - 1) : v]));
      expect([...centered].filter(([name]) => isNormWeight(name)).length).toBeGreaterThanOrEqual(5);
      const hardware = await GpuContext.create({
        matmulKernel: 'tiled',
        attentionKernel: 'fused',
        reductionKernel: 'split',
        tuneMatmul: false,
      });
      try {
        for (const device of [ctx, hardware]) {
          const want = await lossAndGrads(device, config, plain, batchOf(config, batch, SEED), batch);
          const got = await lossAndGrads(device, { ...config, applyLayernorm1p: true }, centered, batchOf(config, batch, SEED), batch);
          expect(got.loss).toBe(want.loss);
          for (const [name, grad] of want.grads) expect(got.grads.get(name), msg(`${name} grad`)).toEqual(grad);
        }
      } finally {
        hardware.destroy();
      }
    },
  );

  it('deep matmuls in chunks or with A packed give the loss and grads of one dispatch each', async () => {
    // 256 tokens through a 2048-wide MLP: mlp.proj's forward and fc's input grad have k 2048 and a C
    // of 256 x 512, the deep class.
    const config: GptConfig = { numLayers: 1, hiddenSize: 512, numAttentionHeads: 8, seqLength: 16, vocabSize: 81 };
    const batch = 16;
    const values = Gpt.init(config, SEED);
    const data = batchOf(config, batch, SEED);
    const hardware = await GpuContext.create({ matmulKernel: 'tiled', tuneMatmul: false });
    const runs = new Map<DeepPlan, Awaited<ReturnType<typeof lossAndGrads>>>();
    try {
      for (const plan of DEEP_PLANS) {
        hardware.matmulTuning = { ...hardware.matmulTuning, deepPlan: plan };
        runs.set(plan, await lossAndGrads(hardware, config, values, data, batch));
      }
    } finally {
      hardware.destroy();
    }
    const rows = runs.get('rows')!;
    const count = (list: string[], kernel: string) => list.filter((k) => k === kernel).length;
    // Two deep products, in 2 chunks each; and one copy of A for each.
    expect(count(runs.get('chunks')!.dispatches, 'matmul-tiled') - count(rows.dispatches, 'matmul-tiled')).toBe(2);
    expect(count(runs.get('packed')!.dispatches, 'transpose')).toBe(2);
    expect(count(rows.dispatches, 'transpose')).toBe(0);
    for (const plan of ['chunks', 'packed'] as const) {
      const run = runs.get(plan)!;
      expect(Math.abs(run.loss - rows.loss), msg(`${plan}: loss ${run.loss} vs ${rows.loss}`)).toBeLessThanOrEqual(
        1e-6 * Math.abs(rows.loss),
      );
      for (const [name, want] of rows.grads) {
        expect(ref.relError(run.grads.get(name)!, want), msg(`${plan}: ${name} grad`)).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('bf16 params give the loss of fp32 params rounded to bf16; fp16 grads are reported once each', async () => {
    const config: GptConfig = { numLayers: 1, hiddenSize: 16, numAttentionHeads: 2, seqLength: 8, vocabSize: 13 };
    const values = Gpt.init(config, SEED);
    const rounded = new Map([...values].map(([n, v]) => [n, v.map((x) => bf16ToFloat(floatToBf16(x)))]));
    const data = batchOf(config, 3, SEED);
    const a = model(config, values, 'bfloat16', 'float32');
    const b = model(config, rounded, 'float32', 'float32');
    const la = await lossOf(a.gpt, config, 3, data);
    const lb = await lossOf(b.gpt, config, 3, data);
    expect(Math.abs(la - lb), msg(`bf16 ${la} vs fp32(rounded) ${lb}`)).toBeLessThanOrEqual(1e-5 * Math.abs(lb));
    a.params.destroy();
    b.params.destroy();

    const c = model(config, values, 'float16', 'float16');
    const fp32 = model(config, values);
    const g = new Graph(ctx);
    const seen: string[] = [];
    const { loss } = c.gpt.forward(g, g.input(data.ids, [3, 8]), g.input(data.targets, [24]));
    g.backward(loss!, { onParamGrad: (name) => seen.push(name) });
    expect([...seen].sort()).toEqual(
      Gpt.specs(config)
        .map((s) => s.name)
        .sort(),
    );
    // The first grads final in backward are the last layer's (the head is tied, so wte comes last).
    expect(seen[0]).toBe('ln_f.weight');
    expect(seen.slice(-2).sort()).toEqual(['wpe.weight', 'wte.weight']);
    g.release();
    await lossOf(fp32.gpt, config, 3, data, true);
    const g16 = await c.params.read('blocks.0.mlp.fc.weight', true);
    const g32 = await fp32.params.read('blocks.0.mlp.fc.weight', true);
    expect(ref.relError(g16, g32), msg('fp16 grads vs fp32 grads')).toBeLessThan(5e-3);
    c.params.destroy();
    fp32.params.destroy();
  });
});

describe('documents inside a sample (--reset-position-ids, --reset-attention-mask)', () => {
  // A sample of two documents, the first ending with the end-of-document token 0, with the loss on
  // the second document's tokens only: the same loss and grads as that document alone at the start
  // of a sample (the rest of that sample masked), on both attention kernels.
  const [T, eod] = [12, 0];
  const first = [3, 5, 7, 2, eod];
  const second = [4, 1, 6, 9, 8, 2, 10];
  const packed = { ids: Uint32Array.from([...first, ...second]), targets: new Uint32Array(T).fill(IGNORED_TARGET) };
  const alone = { ids: Uint32Array.from([...second, 5, 5, 5, 5, 5]), targets: new Uint32Array(T).fill(IGNORED_TARGET) };
  for (let i = 0; i < second.length - 1; i++) {
    packed.targets[first.length + i] = second[i + 1]!;
    alone.targets[i] = second[i + 1]!;
  }

  async function run(device: GpuContext, config: GptConfig, data: typeof packed, reset: { positions: boolean; attention: boolean } | null) {
    const params = new LocalParams(device, Gpt.specs(config));
    // Sharper attention than at init (q and k 10 times as large), so that what a token sees matters.
    const values = Gpt.init(config, SEED);
    for (const [name, v] of values)
      if (name.endsWith('attn.qkv.weight'))
        values.set(
          name,
          v.map((x) => x * 10),
        );
    params.set(values);
    const g = new Graph(device, { seed: SEED });
    if (reset) g.documents = documentInputs(g, documentStarts(data.ids, T, eod), T, reset);
    const { loss } = new Gpt(config, params.tensors).forward(g, g.input(data.ids, [1, T], 'ids'), g.input(data.targets, [T], 'targets'));
    g.backward(loss!);
    const value = (await g.read(loss!))[0]!;
    g.release();
    const grads = new Map<string, Float32Array>();
    for (const spec of Gpt.specs(config)) grads.set(spec.name, await params.read(spec.name, true));
    params.destroy();
    return { loss: value, grads };
  }

  for (const [positions, reset] of [
    ['learned_absolute', { positions: true, attention: true }],
    // Rope rotates by the place in the sample: the scores see only distances, the same to rounding.
    ['rope', { positions: false, attention: true }],
  ] as const)
    for (const kernel of ['fused', 'unfused'] as const)
      it(`${positions} positions, ${kernel} attention: the second document's loss and grads are its own`, async () => {
        const device = await GpuContext.create({ attentionKernel: kernel });
        try {
          const config: GptConfig = {
            numLayers: 2,
            hiddenSize: 16,
            numAttentionHeads: 2,
            seqLength: T,
            vocabSize: 11,
            positionEmbeddingType: positions,
          };
          const own = await run(device, config, alone, null);
          const inside = await run(device, config, packed, reset);
          expect(Math.abs(inside.loss - own.loss) / own.loss, msg('loss')).toBeLessThan(1e-6);
          for (const [name, grad] of own.grads) expect(ref.relError(inside.grads.get(name)!, grad), msg(name)).toBeLessThan(1e-5);
          // The first document matters without the documents' masks and positions: the grads of
          // every attention weight differ (the loss alone, a scalar, may land near by chance).
          const across = await run(device, config, packed, null);
          const apart = (a: typeof own, name: string) => ref.relError(a.grads.get(name)!, own.grads.get(name)!);
          const worst = Math.max(...[...own.grads.keys()].map((name) => apart(inside, name)));
          const qkv = [0, 1].map((l) => apart(across, `blocks.${l}.attn.qkv.weight`));
          console.log(
            `${positions}, ${kernel}: grads apart at most ${worst.toExponential(1)} in documents; without them, qkv weights' ${qkv.map((x) => x.toExponential(1)).join(' and ')}, loss ${(Math.abs(across.loss - own.loss) / own.loss).toExponential(1)}`,
          );
          for (const x of qkv) expect(x, msg('qkv grads without documents')).toBeGreaterThan(1e-2);
        } finally {
          device.destroy();
        }
      });
});

describe('MLP', () => {
  it('forward and backward match the reference (linear, GELU, linear, cross-entropy)', async () => {
    const sizes = [6, 10, 4];
    const values = Mlp.init(sizes, SEED, 0.5);
    const params = new LocalParams(ctx, Mlp.specs(sizes));
    params.set(values);
    const mlp = new Mlp(sizes, params.tensors);
    const n = 9;
    const x = normals(SEED, 99, n * 6, 1);
    const targets = Uint32Array.from({ length: n }, (_, i) => i % 4);
    const g = new Graph(ctx);
    const { loss } = mlp.forward(g, g.input(x, [n, 6]), g.input(targets, [n]));
    g.backward(loss!);
    // Reference: chain the float64 ops by hand.
    const w0 = values.get('layers.0.weight')!,
      b0 = values.get('layers.0.bias')!,
      w1 = values.get('layers.1.weight')!,
      b1 = values.get('layers.1.bias')!;
    const h = ref.linear(x, w0, b0, n, 6, 10, new Float64Array(n * 10)).y;
    const a = ref.gelu(h, new Float64Array(n * 10)).y;
    const logits = ref.linear(a, w1, b1, n, 10, 4, new Float64Array(n * 4)).y;
    const ce = ref.crossEntropy(logits, targets, n, 4);
    const l1 = ref.linear(a, w1, b1, n, 10, 4, ce.dlogits);
    const da = ref.gelu(h, l1.dx).dx;
    const l0 = ref.linear(x, w0, b0, n, 6, 10, da);
    expect(ref.relError(await g.read(loss!), [ce.loss])).toBeLessThanOrEqual(1e-5);
    expect(ref.relError(await params.read('layers.1.weight', true), l1.dw), msg('dw1')).toBeLessThanOrEqual(1e-5);
    expect(ref.relError(await params.read('layers.0.weight', true), l0.dw), msg('dw0')).toBeLessThanOrEqual(1e-5);
    expect(ref.relError(await params.read('layers.0.bias', true), l0.db), msg('db0')).toBeLessThanOrEqual(1e-5);
    g.release();
    params.destroy();
  });
});
