/**
 * The GPT exported to ONNX, run by onnxruntime-node (the independent referee), against webtron's own
 * forward on the same tokens; and checked by ONNX's own checker where Debian's python3-onnx is installed.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { Graph } from '../../src/nn/graph.js';
import { LocalParams } from '../../src/nn/params.js';
import { wordsToFloat32 } from '../../src/collectives/reduce.js';
import { gptToOnnx } from '../../src/onnx/gpt.js';
import { onnx } from '../../src/onnx/proto.js';
import { pythonModulesMissing } from '../helpers/apt.js';
import { seeded } from '../helpers/seed.js';

let ctx: GpuContext;
const dir = mkdtempSync(join(tmpdir(), 'webtron-onnx-export-'));
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const BASE: GptConfig = { numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, seqLength: 16, vocabSize: 40, tiedHead: true };

/** webtron's logits [batch, t, vocab] for `ids`. */
async function webtronLogits(config: GptConfig, values: Map<string, Float32Array>, ids: Uint32Array, batch: number): Promise<Float32Array> {
  const params = new LocalParams(ctx, Gpt.specs(config));
  params.set(values);
  const g = new Graph(ctx, { training: false });
  const logits = await g.read(new Gpt(config, params.tensors).forward(g, g.input(ids, [batch, ids.length / batch])).logits);
  g.release();
  params.destroy();
  return logits;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

describe('GPT export to ONNX', () => {
  it.each([
    ['tied head', BASE],
    ['untied head', { ...BASE, tiedHead: false }],
    ['rope', { ...BASE, positionEmbeddingType: 'rope', rotaryBase: 50 }],
    [
      'Llama-style: rope, RMSNorm, SwiGLU, no linear biases, 2 key and value heads for 4, untied',
      {
        ...BASE,
        tiedHead: false,
        positionEmbeddingType: 'rope',
        normalization: 'RMSNorm',
        swiglu: true,
        addBiasLinear: false,
        ffnHiddenSize: 40,
        numQueryGroups: 2,
      },
    ],
    ['no linear biases but qkv, GELU, norm epsilon 0.05', { ...BASE, addBiasLinear: false, addQkvBias: true, normEpsilon: 0.05 }],
    // --kv-channels: heads 12 wide where the hidden size over the heads gives 8, rope on all of them.
    [
      'heads of 12 by --kv-channels, rope, 2 key and value heads',
      { ...BASE, positionEmbeddingType: 'rope', kvChannels: 12, numQueryGroups: 2 },
    ],
    // --qk-layernorm: LayerNorm on each head of q and of k, and Qwen3's RMSNorm on heads of 12.
    ['q and k norms (LayerNorm)', { ...BASE, qkLayernorm: true }],
    // --apply-layernorm-1p: every norm's weight held as gamma - 1, the graph adding the 1.
    ['zero-centered norms, q and k norms among them', { ...BASE, qkLayernorm: true, applyLayernorm1p: true }],
    [
      "Qwen3's block: RMSNorm on q's and k's heads of 12, rope, SwiGLU, 2 key and value heads",
      {
        ...BASE,
        positionEmbeddingType: 'rope',
        normalization: 'RMSNorm',
        swiglu: true,
        addBiasLinear: false,
        numQueryGroups: 2,
        kvChannels: 12,
        qkLayernorm: true,
      },
    ],
    // --squared-relu with Nemotron's other traits: zero-centered LayerNorm, rope on half of each head, untied.
    [
      'squared ReLU, zero-centered norms, rope on half of each head, untied',
      { ...BASE, squaredRelu: true, applyLayernorm1p: true, positionEmbeddingType: 'rope', rotaryPercent: 0.5, tiedHead: false },
    ],
    // Heads of 8 at 0.5: 4 channels rotated in neighbouring pairs, 4 passed.
    [
      'rope interleaved on half of each head, untied',
      { ...BASE, tiedHead: false, positionEmbeddingType: 'rope', rotaryInterleaved: true, rotaryPercent: 0.5 },
    ],
  ] as const)('%s: onnxruntime (CPU) gives webtron’s logits within 1e-4, at any batch and length', async (_name, config) => {
    const { seed, random } = seeded(`onnx export ${_name}`);
    const values = Gpt.init(config, seed, 0.2); // larger than GPT-2's 0.02, so that the logits differ
    // Norms away from their init (weights 1, biases 0), so that each norm's own params matter.
    for (const [name, v] of values)
      if (/ln_\w+\.(weight|bias)$/.test(name))
        values.set(
          name,
          v.map((x) => x + random() - 0.5),
        );
    const bytes = gptToOnnx(config, values, { metadata: { config: JSON.stringify(config) } });
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
    expect(session.inputNames).toEqual(['input_ids']);
    expect(session.outputNames).toEqual(['logits']);
    for (const [batch, t] of [
      [2, 11],
      [1, 16],
      [3, 1],
    ] as const) {
      const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * config.vocabSize));
      const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [batch, t]) });
      expect(out.logits!.dims).toEqual([batch, t, config.vocabSize]);
      const diff = maxAbsDiff(out.logits!.data as Float32Array, await webtronLogits(config, values, ids, batch));
      console.log(`${_name}: batch ${batch}, length ${t}: max abs difference ${diff.toExponential(2)}`);
      expect(diff, `batch ${batch}, length ${t}, seed ${seed}`).toBeLessThanOrEqual(1e-4);
    }
    const model = onnx.ModelProto.decode(bytes);
    expect(Number(model.opsetImport[0]!.version)).toBe(17);
    expect(Object.fromEntries(model.metadataProps.map((p) => [p.key, p.value]))).toEqual({ config: JSON.stringify(config) });
  });

  it("onnxruntime's WebGPU provider, where it loads, gives the same logits within 1e-4", async (context) => {
    const { seed, random } = seeded('onnx export webgpu');
    const values = Gpt.init(BASE, seed, 0.2);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(gptToOnnx(BASE, values), { executionProviders: ['webgpu'] });
    } catch (error) {
      console.log(`skipped: onnxruntime's WebGPU provider does not load here (${(error as Error).message.split('\n')[0]})`);
      return context.skip();
    }
    const ids = Uint32Array.from({ length: 2 * 9 }, () => Math.floor(random() * BASE.vocabSize));
    const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [2, 9]) });
    const diff = maxAbsDiff(out.logits!.data as Float32Array, await webtronLogits(BASE, values, ids, 2));
    console.log(`webgpu provider: max abs difference ${diff.toExponential(2)}`);
    expect(diff, `seed ${seed}`).toBeLessThanOrEqual(1e-4);
  });

  it.each(['bfloat16', 'float16'] as const)(
    'a %s model exports as float32 holding its rounded values, and onnxruntime gives its logits within 1e-4',
    async (dtype) => {
      if (dtype === 'float16' && !ctx.hasF16) {
        console.log(`not run: fp16 params need the shader-f16 feature, which ${ctx.adapterName} does not offer`);
        return;
      }
      const { seed, random } = seeded(`onnx export ${dtype}`);
      const params = new LocalParams(ctx, Gpt.specs(BASE, dtype));
      params.set(Gpt.init(BASE, seed, 0.2)); // rounded to bf16 on the way in
      const rounded = new Map<string, Float32Array>();
      for (const p of Gpt.specs(BASE)) rounded.set(p.name, await params.read(p.name));
      const ids = Uint32Array.from({ length: 2 * 10 }, () => Math.floor(random() * BASE.vocabSize));
      const g = new Graph(ctx, { training: false });
      const want = await g.read(new Gpt(BASE, params.tensors).forward(g, g.input(ids, [2, 10])).logits);
      g.release();
      params.destroy();
      const session = await ort.InferenceSession.create(gptToOnnx(BASE, rounded), { executionProviders: ['cpu'] });
      const got = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [2, 10]) });
      const diff = maxAbsDiff(got.logits!.data as Float32Array, want);
      console.log(`${dtype} model as float32 ONNX: max abs difference ${diff.toExponential(2)}`);
      expect(diff, `seed ${seed}`).toBeLessThanOrEqual(1e-4);
    },
  );

  it('exported as float16, the logits are the float32 model’s within float16 rounding, and the same tokens win', async () => {
    const { seed, random } = seeded('onnx export float16');
    const values = Gpt.init(BASE, seed, 0.2);
    const session = await ort.InferenceSession.create(gptToOnnx(BASE, values, { float16: true }), { executionProviders: ['cpu'] });
    const ids = Uint32Array.from({ length: 2 * 10 }, () => Math.floor(random() * BASE.vocabSize));
    const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [2, 10]) });
    expect(out.logits!.type).toBe('float16');
    const got = wordsToFloat32(out.logits!.data as Uint16Array, 'float16');
    const want = await webtronLogits(BASE, values, ids, 2);
    // float16 keeps 11 significant bits: relative error per operation 2^-11; a few dozen roundings in a row.
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const diff = maxAbsDiff(got, want);
    console.log(`float16 ONNX: max abs difference ${diff.toExponential(2)} on logits up to ${scale.toFixed(2)}`);
    expect(diff / scale, `seed ${seed}`).toBeLessThanOrEqual(2 ** -11 * 32);
    const argmax = (a: Float32Array, r: number) => {
      const row = a.subarray(r * BASE.vocabSize, (r + 1) * BASE.vocabSize);
      return row.indexOf(Math.max(...row));
    };
    let same = 0;
    for (let r = 0; r < 20; r++) if (argmax(got, r) === argmax(want, r)) same++;
    expect(same, `seed ${seed}`).toBeGreaterThanOrEqual(18);
  });

  // Installing python3-onnx, where it is missing, may take minutes: the test allows 10.
  it("passes ONNX's own checker (Debian's python3-onnx, installed as root when missing)", (context) => {
    const missing = pythonModulesMissing(['onnx'], ['python3-onnx']);
    if (missing) {
      console.log(`skipped: ${missing}`);
      context.skip();
    }
    const path = join(dir, 'gpt.onnx');
    writeFileSync(path, gptToOnnx(BASE, Gpt.init(BASE, 1)));
    const check = spawnSync(
      '/usr/bin/python3',
      ['-c', 'import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True); print("ok")', path],
      {
        encoding: 'utf8',
      },
    );
    expect(check.stderr).toBe('');
    expect(check.stdout.trim()).toBe('ok');
  }, 600_000);
});
