/**
 * `webtron export` end to end: a checkpoint written by `webtron train`, exported, and run by
 * onnxruntime-node against webtron's forward of the same checkpoint on the same tokens.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import { Graph } from '../../src/nn/graph.js';
import { onnx } from '../../src/onnx/proto.js';
import { loadCheckpointModel } from '../../src/train/checkpoint-model.js';
import { seeded } from '../helpers/seed.js';

const BIN = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'webtron-export-'));
let ctx: GpuContext;
let trainLog = '';
// An MLP of 5h, not GPT-2's 4h (--ffn-hidden-size): onnxruntime referees that shape too.
const SHAPE = ['--num-layers', '2', '--hidden-size', '32', '--num-attention-heads', '4', '--seq-length', '16', '--ffn-hidden-size', '160'];
const BATCHES = ['--micro-batch-size', '2', '--global-batch-size', '2', '--train-iters', '3', '--lr', '1e-2'];

beforeAll(async () => {
  ctx = await GpuContext.create();
  const train = spawnSync(
    process.execPath,
    [BIN, 'train', ...SHAPE, ...BATCHES, '--save', join(dir, 'ck'), '--run-dir', join(dir, 'run')],
    {
      encoding: 'utf8',
    },
  );
  if (train.status !== 0) throw new Error(`webtron train failed: ${train.stderr}`);
  trainLog = train.stdout;
}, 300_000);
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('webtron export', () => {
  it("writes a model whose logits onnxruntime computes as webtron's forward of the checkpoint does, within 1e-4", async () => {
    const output = join(dir, 'model.onnx');
    const run = spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', output], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toBe('');
    expect(run.stdout).toMatch(/^wrote .*model\.onnx: [\d,]+ params \(float32 checkpoint at iteration 3\) as float32, opset 17/);

    const model = await loadCheckpointModel(ctx, join(dir, 'ck'));
    const meta = Object.fromEntries(onnx.ModelProto.decode(readFileSync(output)).metadataProps.map((p) => [p.key, p.value]));
    expect(JSON.parse(meta['webtron.config']!)).toEqual(model.config);
    expect(JSON.parse(meta['webtron.tokenizer']!)).toEqual(model.tokenizer);

    const { random } = seeded('webtron export');
    const [batch, t] = [2, 12];
    const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * model.config.vocabSize));
    const g = new Graph(ctx, { training: false });
    const want = await g.read(model.gpt.forward(g, g.input(ids, [batch, t])).logits);
    g.release();
    model.params.destroy();
    const session = await ort.InferenceSession.create(output, { executionProviders: ['cpu'] });
    const got = (await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [batch, t]) })).logits!;
    expect(got.dims).toEqual([batch, t, model.config.vocabSize]);
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs((got.data as Float32Array)[i]! - want[i]!));
    console.log(`webtron export: max abs difference of the logits ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
    // The MLP's width reaches the memory prediction too: training measured the activations it predicts.
    expect(trainLog).toMatch(/activations [^|]*\(predicted [^)]*, equal\)/);
  });

  it('--external-data puts the weights in MODEL.data (page-aligned); onnxruntime and onnx.checker read it, logits unchanged', async () => {
    const inline = join(dir, 'inline.onnx');
    const outside = join(dir, 'outside.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', inline]).status).toBe(0);
    const run = spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', outside, '--external-data'], {
      encoding: 'utf8',
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/\+ outside\.onnx\.data \([\d.]+ KiB of external data\)/);
    const model = onnx.ModelProto.decode(readFileSync(outside));
    const external = (model.graph!.initializer ?? []).filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
    const big = (onnx.ModelProto.decode(readFileSync(inline)).graph!.initializer ?? []).filter((t) => (t.rawData?.byteLength ?? 0) >= 1024);
    expect(external.map((t) => t.name)).toEqual(big.map((t) => t.name)); // every weight of 1 KiB or more
    expect(external.length).toBeGreaterThan(5);
    for (const t of external) {
      const entry = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
      expect(entry.location).toBe('outside.onnx.data');
      expect(Number(entry.offset) % 4096).toBe(0);
    }
    expect(readFileSync(outside).byteLength).toBeLessThan(readFileSync(inline).byteLength / 10);
    const ids = { input_ids: new ort.Tensor('int64', BigInt64Array.from([3, 1, 4, 1, 5, 9, 2, 6], BigInt), [2, 4]) };
    const logits = async (path: string) => [
      ...((await (await ort.InferenceSession.create(path, { executionProviders: ['cpu'] })).run(ids)).logits!.data as Float32Array),
    ];
    expect(await logits(outside)).toEqual(await logits(inline));
    if (spawnSync('/usr/bin/python3', ['-c', 'import onnx']).status === 0) {
      const check = spawnSync(
        '/usr/bin/python3',
        ['-c', 'import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)', outside],
        {
          encoding: 'utf8',
        },
      );
      expect(check.status, check.stderr).toBe(0);
    }
  });

  it('webtron sample --onnx gives the text webtron sample --load gives with the same seed, across context refills of the model’s window and of a shorter one', () => {
    const output = join(dir, 'sample.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', output]).status).toBe(0);
    const sample = (from: string[], temperature: string, window = '2560') => {
      const run = spawnSync(
        process.execPath,
        [
          BIN,
          'sample',
          ...from,
          ...['--prompt', 'Call me', '--tokens', '40', '--seed', '11', '--temperature', temperature],
          ...['--inference-max-seq-length', window],
        ],
        {
          encoding: 'utf8',
        },
      );
      expect(run.status, run.stderr).toBe(0);
      expect(run.stderr).toBe('');
      return run.stdout;
    };
    for (const temperature of ['1', '0']) {
      const gpu = sample(['--load', join(dir, 'ck')], temperature);
      expect(gpu.startsWith('Call me')).toBe(true);
      expect(gpu.length).toBeGreaterThan('Call me'.length + 30); // 40 tokens past a 16-token context: two refills
      expect(sample(['--onnx', output], temperature)).toBe(gpu);
    }
    // A window of 6 positions, under the model's 16: refills every 3 tokens, the same through both.
    const short = sample(['--load', join(dir, 'ck')], '1', '6');
    expect(short.length).toBeGreaterThan('Call me'.length + 30);
    expect(sample(['--onnx', output], '1', '6')).toBe(short);
  });

  it('webtron train --init-from starts from the model: with lr 0 its checkpoint exports to the same initializers', () => {
    const first = join(dir, 'first.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', first]).status).toBe(0);
    const train = spawnSync(
      process.execPath,
      [
        BIN,
        'train',
        ...SHAPE,
        ...BATCHES.slice(0, -2),
        '--lr',
        '0',
        '--init-from',
        first,
        '--save',
        join(dir, 'ck2'),
        '--run-dir',
        join(dir, 'run2'),
      ],
      { encoding: 'utf8' },
    );
    expect(train.status, train.stderr).toBe(0);
    const second = join(dir, 'second.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck2'), '--output', second]).status).toBe(0);
    const inits = (path: string) =>
      new Map(
        (onnx.ModelProto.decode(readFileSync(path)).graph!.initializer ?? []).map((t) => [t.name, Buffer.from(t.rawData!).toString('hex')]),
      );
    const [a, b] = [inits(first), inits(second)];
    expect(a.size).toBeGreaterThan(10);
    expect(b).toEqual(a);
  });

  it('webtron train --init-from a model of another shape names every param that differs, in one line', () => {
    const model = join(dir, 'other.onnx');
    expect(spawnSync(process.execPath, [BIN, 'export', '--load', join(dir, 'ck'), '--output', model]).status).toBe(0);
    const wider = SHAPE.map((a, i) => (SHAPE[i - 1] === '--hidden-size' ? '48' : a));
    const run = spawnSync(process.execPath, [BIN, 'train', ...wider, ...BATCHES, '--init-from', model, '--run-dir', join(dir, 'run3')], {
      encoding: 'utf8',
    });
    expect(run.status).toBe(2);
    const lines = run.stderr.trim().split('\n');
    expect(lines, run.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /other\.onnx: its initializers do not fit this model: 'wte\.weight' is \[\d+, 32\], the model needs \[\d+, 48\];/,
    );
    expect(lines[0]).toMatch(/'h\.1\.mlp\.c_proj\.bias' is \[32\], the model needs \[48\]/);
  });

  it('bad input: one line, exit 2, no file', () => {
    const output = join(dir, 'never.onnx');
    for (const [args, says] of [
      [['--load', join(dir, 'nowhere'), '--output', output], /nowhere/],
      [['--load', join(dir, 'ck')], /--output is required/],
      [['--load', join(dir, 'ck'), '--output', output, '--dtype', 'int8'], /--dtype must be fp32, fp16 or bf16, got 'int8'/],
    ] as const) {
      const run = spawnSync(process.execPath, [BIN, 'export', ...args], { encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(2);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toMatch(says);
      expect(existsSync(output)).toBe(false);
    }
  });
});
