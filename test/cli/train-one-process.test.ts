/**
 * `webtron train` runs without collectives to time out (flag errors, one of them found by two
 * workers at start-up; a bf16 run on a text file of one's own; a NaN stop) and `webtron sample`:
 * they run beside other files, while test/train/train.test.ts has the multi-worker runs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openModelTensors } from '../../src/checkpoint/checkpoint.js';
import { BIN, dir, expectIdenticalLosses, losses, TINY, train } from '../helpers/train.js';

describe('webtron train, one process', () => {
  it.each([
    [['--fp16', '--bf16'], /^webtron train: --fp16 and --bf16 exclude each other/],
    [['--fp16', '--grad-reduce-in-bf16'], /^webtron train: --grad-reduce-in-bf16 needs fp32 grads, but --fp16 keeps fp16 grads/],
    [
      ['--overlap-param-gather', '--overlap-grad-reduce'],
      /^webtron train: --overlap-param-gather only works with --use-distributed-optimizer/,
    ],
    [
      ['--nproc-per-node', '2', '--global-batch-size', '6', '--micro-batch-size', '2'],
      /^webtron train: --global-batch-size 6 is not divisible by --micro-batch-size 2 × data-parallel size 2 = 4/,
    ],
    [['--num-attention-heads', '3'], /^webtron train: --num-attention-heads 3 must divide --hidden-size 32/],
    [['--nproc-per-node', '0'], /^webtron train: --nproc-per-node must be at least 1, got 0/],
    [
      ['--lr-decay-style', 'step'],
      /^webtron train: --lr-decay-style must be constant, linear, cosine, inverse-square-root or WSD, got 'step'/,
    ],
    [['--hidden-dropout', '1.5'], /^webtron train: --hidden-dropout must be in \[0, 1\), got 1.5/],
    [
      ['--tokenizer-type', 'SentencePiece'],
      /^webtron train: --tokenizer-type must be one of CharTokenizer, ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer, NullTokenizer, got 'SentencePiece'/,
    ],
    [['--train-iters', 'ten'], /^webtron train: --train-iters: expected an integer, got 'ten'/],
    [['--no-such-flag'], /^webtron train: unknown flag --no-such-flag/],
    [['--exit-signal', 'SIGKILL'], /^webtron train: --exit-signal must be one of SIGTERM, SIGINT, SIGUSR1, SIGUSR2, got 'SIGKILL'/],
    [['--async-save'], /^webtron train: --async-save needs --save \(where to save\)$/],
    [
      ['--data-path', '/does/not/exist.txt'],
      /^webtron train: --data-path: \/does\/not\/exist.txt is neither a text file nor the prefix of an indexed dataset/,
    ],
    [['--load', '/does/not/exist'], /^webtron train: \/does\/not\/exist: neither a checkpoint folder/],
    [
      ['--data-parallel-sharding-strategy', 'optim_grads'],
      /^webtron train: --data-parallel-sharding-strategy optim_grads needs --use-megatron-fsdp/,
    ],
    [['--use-megatron-fsdp'], /^webtron train: --use-megatron-fsdp needs --use-distributed-optimizer/],
    [
      ['--use-distributed-optimizer', '--use-megatron-fsdp', '--data-parallel-sharding-strategy', 'zero3'],
      /^webtron train: --data-parallel-sharding-strategy must be one of no_shard, optim, optim_grads, optim_grads_params, got 'zero3'/,
    ],
    [
      ['--use-distributed-optimizer', '--use-megatron-fsdp', '--data-parallel-sharding-strategy', 'no_shard'],
      /^webtron train: --data-parallel-sharding-strategy no_shard shards nothing/,
    ],
    [
      ['--use-distributed-optimizer', '--use-megatron-fsdp', '--check-weight-hash-across-dp-replicas-interval', '2'],
      /^webtron train: --check-weight-hash-across-dp-replicas-interval compares whole replicas, and optim_grads_params leaves none/,
    ],
    [['--max-device-memory', 'lots'], /^webtron train: --max-device-memory: 'lots' is not a size; use e\.g\. 80GiB/],
    [
      ['--position-embedding-type', 'alibi'],
      /^webtron train: --position-embedding-type must be learned_absolute, rope or none, got 'alibi'$/,
    ],
    [
      ['--no-position-embedding'],
      /^webtron train: --no-position-embedding is deprecated \(as in Megatron-LM\); give --position-embedding-type none, or rope$/,
    ],
    [
      ['--position-embedding-type', 'rope', '--rotary-percent', '0.05'],
      /^webtron train: --rotary-percent 0.05 of heads 16 wide rotates 0 channels; give a fraction that rotates 2 to 16$/,
    ],
    [['--use-rotary-position-embeddings', '--rotary-base', '1'], /^webtron train: --rotary-base must be above 1, got 1$/],
    [['--normalization', 'BatchNorm'], /^webtron train: --normalization must be LayerNorm or RMSNorm, got 'BatchNorm'$/],
    [['--norm-epsilon', '0'], /^webtron train: --norm-epsilon must be in \(0, 1\), got 0$/],
    [
      ['--position-embedding-type', 'rope', '--use-rope-scaling', '--rope-scaling-factor', '0.5'],
      /^webtron train: --rope-scaling-factor must be at least 1, got 0.5$/,
    ],
    [['--recompute-granularity', 'full'], /^webtron train: --recompute-granularity full needs --recompute-method uniform or block$/],
    [
      ['--recompute-granularity', 'full', '--recompute-method', 'uniform', '--recompute-num-layers', '3'],
      /^webtron train: --recompute-num-layers must be an integer from 1 to --num-layers 2, got 3$/,
    ],
    [
      ['--recompute-activations', '--attention-backend', 'unfused'],
      /^webtron train: selective recomputation of core_attn recomputes the attention's probabilities, which the unfused attention stores; use --attention-backend flash/,
    ],
    [['--recompute-method', 'block'], /^webtron train: --recompute-method needs --recompute-granularity full$/],
    [
      ['--recompute-activations', '--recompute-modules', 'mlp', 'layernorm'],
      /^webtron train: --recompute-modules layernorm: webtron fuses each norm with the residual add before it .*; give core_attn and\/or mlp$/,
    ],
    [['--fp8-format', 'hybrid'], /^webtron train: --fp8-format: WebGPU has no fp8 type; train in --bf16 \(or --fp16\)$/],
    [['--group-query-attention', '--num-query-groups', '3'], /^webtron train: --num-query-groups 3 must divide --num-attention-heads 2$/],
    [['--mock-data', '--data-path', 'corpus.txt'], /^webtron train: --mock-data and --data-path exclude each other/],
    [
      ['--mock-data'],
      /^webtron train: --mock-data needs a tokenizer with an end of document .* CharTokenizer has none; give --tokenizer-type NullTokenizer --vocab-size N/,
    ],
    [['--tokenizer-type', 'NullTokenizer'], /^webtron train: --tokenizer-type NullTokenizer needs --vocab-size/],
    [
      ['--squared-relu', '--swiglu'],
      /^webtron train: --squared-relu and --swiglu exclude each other \(the MLP has one activation\); give one$/,
    ],
    [['--profile-step-start', '3'], /^webtron train: --profile-step-start needs --profile \(it says which iterations to time\)$/],
    [
      ['--profile', '--profile-step-start', '2', '--profile-step-end', '2'],
      /^webtron train: --profile-step-end 2 must be above --profile-step-start 2/,
    ],
    [['--profile-ranks', '0'], /^webtron train: --profile-ranks needs --profile \(it says which ranks to time\)$/],
    [
      ['--profile', '--profile-ranks', '0', '1'],
      /^webtron train: --profile-ranks: '1' is not a rank of this run; give ranks from 0 to 0 \(the world is 1\)$/,
    ],
    [
      ['--vocab-size', '100'],
      /^webtron train: .*--vocab-size is 100, but CharTokenizer has \d+ tokens; leave --vocab-size out \(the tokenizer brings its vocabulary\)$/,
    ],
    [
      ['--hidden-size', '16', '--swiglu'],
      /^webtron train: --swiglu's default MLP width int\(8h\/3 \/ 64\) · 64 is 0 at --hidden-size 16; give --ffn-hidden-size$/,
    ],
    // Found by every worker at start-up: rank 0 says it, once.
    [
      ['--nproc-per-node', '2', '--global-batch-size', '4', '--max-device-memory', '100KiB'],
      /^webtron train: --max-device-memory 100\.00 KiB: this run needs [\d.]+ [KM]iB per rank at its peak \(model state .*\); the smallest is with --use-distributed-optimizer --use-precision-aware-optimizer --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16: .*; no optimizer setting fits/,
    ],
  ])('%j is one line naming the flag, exit code 2, nothing written', async (extra, message) => {
    const runDir = join(dir(), 'run');
    const r = await train([...TINY, '--train-iters', '5', '--run-dir', runDir, ...extra]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.split('\n').filter((l) => l && !l.startsWith('Warning:'))).toHaveLength(1);
    expect(r.stderr.split('\n').find((l) => l.startsWith('webtron train'))).toMatch(message);
    expect(existsSync(runDir) && readdirSync(runDir).some((f) => f !== 'config.json')).toBe(false);
  });

  it("--recompute-activations (selective) is the fused attention's, with --recompute-modules mlp each MLP's too: the losses of Megatron's --use-flash-attn, bit for bit, which flags of Megatron's scripts leave as they are and name", async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([...TINY, '--train-iters', '4', '--global-batch-size', '4', '--run-dir', join(base, name), ...extra]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return { lines: r.stdout.split('\n'), losses: losses(join(base, name)) };
    };
    const flash = await run('flash', ['--use-flash-attn', '--use-mcore-models', '--sequence-parallel', '--num-workers', '2']);
    const selective = await run('selective', ['--recompute-activations']);
    // --recompute-modules mlp as well: each block's MLP runs again in the backward, the same values.
    const mlp = await run('mlp', ['--recompute-granularity', 'selective', '--recompute-modules', 'core_attn', 'mlp']);
    expectIdenticalLosses(flash.losses, selective.losses);
    expectIdenticalLosses(flash.losses, mlp.losses);
    expect(selective.lines[0]).toMatch(/^webtron train: .*, fp32, selective recomputation \(the fused attention's\), 1 rank,/);
    expect(mlp.lines[0]).toMatch(
      /^webtron train: .*, fp32, selective recomputation \(the fused attention's and each block's MLP\), 1 rank,/,
    );
    expect(selective.lines[1]).not.toMatch(/without effect/);
    expect(flash.lines[0]).not.toMatch(/recomput/);
    expect(flash.lines[1]).toBe(
      "webtron train: without effect here: --use-mcore-models (webtron has one GPT implementation); --sequence-parallel (it splits activations within a tensor-parallel group, and webtron has none; Megatron turns it off at --tensor-model-parallel-size 1 too); --num-workers (PyTorch's DataLoader worker processes; webtron reads batches in the training process)",
    );
  });

  it("bf16 on a text file of one's own (--data-path) trains, and its checkpoint samples", async () => {
    const base = dir();
    const text = Array.from(
      { length: 400 },
      (_, i) => `The whale ${i % 7} swam in the sea; the ship ${(i * 3) % 11} sailed on.\n\nCall me Ishmael, said the sailor.`,
    ).join('\n\n');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(base, 'corpus.txt'), text);
    // Its characters padded to 96, the vocabulary of the other runs, so the same kernels serve.
    const r = await train([
      ...TINY,
      '--make-vocab-size-divisible-by',
      '96',
      '--data-path',
      join(base, 'corpus.txt'),
      '--bf16',
      '--train-iters',
      '12',
      '--global-batch-size',
      '4',
      '--save',
      join(base, 'ckpt'),
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/, bf16, 1 rank,.*corpus\.txt: \d[\d,]* train tokens/);
    const l = losses(join(base, 'run'));
    expect(l.get(12)!).toBeLessThan(l.get(1)!);
    const index = JSON.parse(readFileSync(join(base, 'ckpt', 'iter_0000012', 'index.json'), 'utf8')) as { params: { dtype: string }[] };
    expect(new Set(index.params.map((p) => p.dtype))).toEqual(new Set(['bfloat16']));
    const out = execFileSync(
      'node',
      [BIN, 'sample', '--load', join(base, 'ckpt'), '--prompt', 'The whale', '--tokens', '10', '--temperature', '0'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    expect(out.startsWith('The whale')).toBe(true);
  });

  it("Llama's block (rope, RMSNorm, SwiGLU, no linear biases, grouped-query attention) trains; its checkpoint samples, resumes only as it was, and exports to ONNX and Hugging Face's Llama", async () => {
    const base = dir();
    const ckpt = join(base, 'ckpt');
    const rope = [
      '--position-embedding-type',
      'rope',
      '--rotary-interleaved',
      '--rotary-base',
      '1000',
      '--normalization',
      'RMSNorm',
      '--swiglu',
      '--ffn-hidden-size',
      '48',
      '--disable-bias-linear',
      '--group-query-attention',
      '--num-query-groups',
      '1',
    ];
    const r = await train([
      ...TINY,
      ...rope,
      '--train-iters',
      '12',
      '--global-batch-size',
      '4',
      '--save',
      ckpt,
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const l = losses(join(base, 'run'));
    expect(l.get(12)!).toBeLessThan(l.get(1)!);
    const index = JSON.parse(readFileSync(join(ckpt, 'iter_0000012', 'index.json'), 'utf8')) as {
      params: { name: string }[];
      extra: { model: Record<string, unknown> };
    };
    expect(index.params.map((p) => p.name).filter((name) => name.startsWith('wpe') || name.endsWith('bias'))).toEqual([]);
    expect(index.extra.model).toMatchObject({
      positionEmbeddingType: 'rope',
      rotaryInterleaved: true,
      rotaryBase: 1000,
      rotaryPercent: 1,
      normalization: 'RMSNorm',
      swiglu: true,
      addBiasLinear: false,
      ffnHiddenSize: 48,
      numQueryGroups: 1,
    });
    // The checkpoint's flags come with it; a contradicting one is refused.
    const resumed = await train([
      ...TINY,
      '--use-checkpoint-args',
      '--use-checkpoint-opt_param-scheduler',
      '--load',
      ckpt,
      '--global-batch-size',
      '4',
      '--train-iters',
      '13',
      '--run-dir',
      join(base, 'run2'),
    ]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const contradicted = await train([
      ...TINY,
      '--use-checkpoint-args',
      '--load',
      ckpt,
      '--rotary-base',
      '10000',
      '--train-iters',
      '13',
      '--run-dir',
      join(base, 'run3'),
    ]);
    expect(contradicted.code).toBe(2);
    expect(contradicted.stderr).toMatch(
      /^webtron train: --rotary-base 10000 contradicts .*index\.json: it was saved with 1000; leave the flag out$/m,
    );
    const sampled = spawnSync('node', [BIN, 'sample', '--load', ckpt, '--prompt', 'Call me', '--tokens', '8', '--temperature', '0'], {
      encoding: 'utf8',
    });
    expect(sampled.status, sampled.stderr).toBe(0);
    expect(sampled.stdout.startsWith('Call me')).toBe(true);
    const hf = spawnSync('node', [BIN, 'export', '--load', ckpt, '--format', 'hf', '--output', join(base, 'hf')], { encoding: 'utf8' });
    // Hugging Face holds it as Llama (test/hf/hf.test.ts referees its logits).
    expect(hf.status, hf.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(base, 'hf', 'config.json'), 'utf8'))).toMatchObject({ architectures: ['LlamaForCausalLM'] });
    const onnxFile = join(base, 'model.onnx');
    const exported = spawnSync('node', [BIN, 'export', '--load', ckpt, '--output', onnxFile], { encoding: 'utf8' });
    expect(exported.status, exported.stderr).toBe(0);
    // The ONNX model continues the prompt as the checkpoint does (greedy, so token for token).
    const fromOnnx = spawnSync('node', [BIN, 'sample', '--onnx', onnxFile, '--prompt', 'Call me', '--tokens', '8', '--temperature', '0'], {
      encoding: 'utf8',
    });
    expect(fromOnnx.status, fromOnnx.stderr).toBe(0);
    expect(fromOnnx.stdout).toBe(sampled.stdout);
  });

  it('--squared-relu trains, resumes with --use-checkpoint-args, samples and exports to ONNX; Hugging Face has no class for it', async () => {
    const base = dir();
    const ckpt = join(base, 'ckpt');
    const common = [...TINY, '--hidden-dropout', '0', '--global-batch-size', '4', '--lr', '1e-2'];
    const r = await train([...common, '--squared-relu', '--train-iters', '10', '--save', ckpt, '--run-dir', join(base, 'run')]);
    expect(r.code, r.stderr).toBe(0);
    const l = losses(join(base, 'run'));
    expect(l.get(10)!).toBeLessThan(l.get(1)!);
    const index = JSON.parse(readFileSync(join(ckpt, 'iter_0000010', 'index.json'), 'utf8')) as {
      extra: { model: Record<string, unknown> };
    };
    expect(index.extra.model).toMatchObject({ squaredRelu: true });
    // The same first loss as GELU would give only by chance: the activation is in the forward.
    const gelu = await train([...common, '--train-iters', '3', '--run-dir', join(base, 'gelu')]);
    expect(gelu.code, gelu.stderr).toBe(0);
    expect(losses(join(base, 'gelu')).get(1)).not.toBe(l.get(1));
    const resumed = await train([
      ...common,
      '--use-checkpoint-args',
      '--use-checkpoint-opt_param-scheduler',
      '--load',
      ckpt,
      '--train-iters',
      '11',
      '--run-dir',
      join(base, 'run2'),
    ]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const sampled = spawnSync('node', [BIN, 'sample', '--load', ckpt, '--prompt', 'Call me', '--tokens', '8', '--temperature', '0'], {
      encoding: 'utf8',
    });
    expect(sampled.status, sampled.stderr).toBe(0);
    const onnxFile = join(base, 'model.onnx');
    const exported = spawnSync('node', [BIN, 'export', '--load', ckpt, '--output', onnxFile], { encoding: 'utf8' });
    expect(exported.status, exported.stderr).toBe(0);
    const fromOnnx = spawnSync('node', [BIN, 'sample', '--onnx', onnxFile, '--prompt', 'Call me', '--tokens', '8', '--temperature', '0'], {
      encoding: 'utf8',
    });
    expect(fromOnnx.stdout).toBe(sampled.stdout);
    const hf = spawnSync('node', [BIN, 'export', '--load', ckpt, '--format', 'hf', '--output', join(base, 'hf')], { encoding: 'utf8' });
    expect(hf.status).toBe(2);
    expect(hf.stderr.trim()).toMatch(
      /a squared-ReLU MLP \(GPT-2 has GELU\) and .*: none of Hugging Face's GPT-2, Llama, Qwen2 and Qwen3 holds it; export it with --format onnx$/,
    );
  });

  it('--apply-layernorm-1p: the plain run at the start, bit for bit, its norms saved as gamma - 1; a checkpoint loads only into a run that says the same', async () => {
    const base = dir();
    const run = async (name: string, extra: string[]) => {
      const r = await train([
        ...TINY,
        '--hidden-dropout',
        '0',
        '--train-iters',
        '4',
        '--save',
        join(base, name),
        '--run-dir',
        join(base, `run-${name}`),
        ...extra,
      ]);
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      return losses(join(base, `run-${name}`));
    };
    const plain = await run('plain', []);
    const centered = await run('centered', ['--apply-layernorm-1p']);
    // The same init (0 read as 1) and the same first step (1 - u and 0 - u, plus 1, round alike); then
    // the norms' sums round differently, by an ulp of 1.
    for (const it of [1, 2]) expect(centered.get(it), `iteration ${it}`).toBe(plain.get(it));
    for (const it of [3, 4])
      expect(Math.abs(centered.get(it)! - plain.get(it)!), `iteration ${it}`).toBeLessThanOrEqual(1e-5 * plain.get(it)!);
    const norm = async (name: string) => {
      const tensors = openModelTensors(join(base, name));
      const chunks: Uint8Array[] = [];
      await tensors.stream('ln_f.weight', 'float32', (bytes) => chunks.push(Uint8Array.from(bytes)));
      await tensors.close();
      const bytes = Buffer.concat(chunks);
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    };
    const [gamma, held] = [await norm('plain'), await norm('centered')];
    for (const [i, g] of gamma.entries()) {
      expect(Math.abs(held[i]!), `ln_f.weight[${i}]`).toBeLessThan(0.1);
      expect(Math.abs(held[i]! + 1 - g), `ln_f.weight[${i}]`).toBeLessThanOrEqual(1e-6);
    }
    for (const [name, flags, message] of [
      [
        'centered',
        [],
        /saved with --apply-layernorm-1p \(norm weights held as gamma - 1\); give --apply-layernorm-1p too, or --use-checkpoint-args$/,
      ],
      [
        'plain',
        ['--apply-layernorm-1p'],
        /saved without --apply-layernorm-1p \(norm weights held as gamma\); leave --apply-layernorm-1p out$/,
      ],
    ] as const) {
      const r = await train([...TINY, '--load', join(base, name), '--train-iters', '5', ...flags]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim()).toMatch(/^webtron train: \S+index\.json: /);
      expect(r.stderr.trim()).toMatch(message);
    }
  });

  it("--mock-data with Megatron's NullTokenizer: the model learns the documents' rule, and sample continues a count", async () => {
    const base = dir();
    const r = await train([
      ...['--num-layers', '2', '--hidden-size', '32', '--num-attention-heads', '2', '--seq-length', '32', '--micro-batch-size', '4'],
      ...['--train-iters', '120', '--lr', '1e-2', '--lr-warmup-iters', '10', '--eval-interval', '120', '--eval-iters', '2'],
      ...[
        '--mock-data',
        '--tokenizer-type',
        'NullTokenizer',
        '--vocab-size',
        '64',
        '--save',
        join(base, 'ck'),
        '--run-dir',
        join(base, 'run'),
      ],
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/vocab 64 padded to 128\).*; mock data: [\d,]+ train tokens/);
    // Each next id is the last plus 1 (modulo 64), so greedy sampling counts on from the prompt.
    const sampled = spawnSync(
      'node',
      [BIN, 'sample', '--load', join(base, 'ck'), '--prompt', '20 21 22 23', '--tokens', '8', '--temperature', '0'],
      {
        encoding: 'utf8',
      },
    );
    expect(sampled.status, sampled.stderr).toBe(0);
    expect(sampled.stdout.trim()).toBe(Array.from({ length: 12 }, (_, i) => 20 + i).join(' '));
  });

  it("--fp16 --loss-scale keeps Megatron's static scale every iteration, where the dynamic one from the same scale grows; until it does, the same losses", async () => {
    const base = dir();
    const fp16 = [...TINY, '--fp16', '--train-iters', '5', '--global-batch-size', '2'];
    const scales = (runDir: string) =>
      readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { loss_scale: number }).loss_scale);
    const fixed = await train([...fp16, '--loss-scale', '1024', '--loss-scale-window', '2', '--run-dir', join(base, 'static')]);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(fixed.stdout).toMatch(/loss scale: 1024\.0 \|/);
    const dynamic = await train([...fp16, '--initial-loss-scale', '1024', '--loss-scale-window', '2', '--run-dir', join(base, 'dynamic')]);
    expect(dynamic.code, dynamic.stderr).toBe(0);
    expect(scales(join(base, 'static'))).toEqual([1024, 1024, 1024, 1024, 1024]);
    expect(scales(join(base, 'dynamic'))).toEqual([1024, 2048, 2048, 4096, 4096]);
    const [a, b] = [losses(join(base, 'static')), losses(join(base, 'dynamic'))];
    expect(a.get(1)).toBe(b.get(1));
  });

  it('a NaN loss stops the run with the iteration and the first param whose grad holds it', async () => {
    // A learning rate that blows the weights up within a few steps, without clipping.
    const diverging = [...TINY, '--lr', '1e30', '--lr-warmup-iters', '0', '--clip-grad', '0', '--global-batch-size', '2'];
    // Validated (the default): the iteration runs again, gives the NaN again, and nothing to resume from elsewhere.
    const validated = await train([...diverging, '--train-iters', '20', '--run-dir', join(dir(), 'run')]);
    expect(validated.code).toBe(17);
    expect(validated.stderr).toMatch(
      /^webtron train: iteration \d+: a result failed validation \(rank 0: found (NaN|Inf) in local forward loss calculation: (NaN|Infinity), the same on a rerun on the same device: it takes a rerun on another device to tell a faulty device from a correct result; the grad of '[\w.]+' holds a NaN or infinity\); no --save to resume from on another device: stopping \(exit code 17; --rerun-mode\)$/m,
    );
    const r = await train([...diverging, '--train-iters', '20', '--rerun-mode', 'disabled', '--run-dir', join(dir(), 'run')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^webtron train: iteration \d+: lm loss (NaN|Infinity), grad norm \S+: the grad of '[\w.]+' holds a NaN or infinity; stopping \(--no-check-for-nan-in-loss-and-grad trains on\)$/m,
    );
    const onward = await train([
      ...diverging,
      '--train-iters',
      '4',
      '--no-check-for-nan-in-loss-and-grad',
      '--run-dir',
      join(dir(), 'run'),
    ]);
    expect(onward.code, onward.stderr).toBe(0);
    expect(onward.stdout).toMatch(/number of nan iterations: {3}1 \|/);
  });
});

describe('webtron train, which checkpoints stay', () => {
  it("--save-retain-interval keeps Megatron's: the multiples and the newest; --exit-on-missing-checkpoint refuses an empty --load", async () => {
    const base = dir();
    const save = join(base, 'ck');
    const r = await train([
      ...TINY,
      '--train-iters',
      '7',
      '--global-batch-size',
      '2',
      '--save',
      save,
      '--save-interval',
      '1',
      '--save-retain-interval',
      '3',
    ]);
    expect(r.code, r.stderr).toBe(0);
    // Each save removed the one before unless a multiple of 3 (Megatron's rule, written out here).
    const kept = [1, 2, 3, 4, 5, 6, 7].filter((it) => it % 3 === 0 || it === 7).map((it) => `iter_${String(it).padStart(7, '0')}`);
    expect(
      readdirSync(save)
        .filter((n) => n.startsWith('iter_'))
        .sort(),
    ).toEqual(kept);
    const empty = join(base, 'empty');
    const missing = await train([...TINY, '--train-iters', '4', '--save', empty, '--load', empty, '--exit-on-missing-checkpoint']);
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toBe(
      `webtron train: --exit-on-missing-checkpoint: the load folder ${empty} holds no checkpoint (no latest_checkpointed_iteration.txt); give a folder a run saved to, or leave the flag out to start from a random init`,
    );
  });
});

describe('webtron sample', () => {
  it('continues a prompt from a checkpoint; the same seed gives the same text', async () => {
    const base = dir();
    const r = await train([
      ...TINY,
      '--train-iters',
      '30',
      '--global-batch-size',
      '4',
      '--save',
      join(base, 'ckpt'),
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const sample = (seed: number, extra: string[] = []) =>
      execFileSync(
        'node',
        [BIN, 'sample', '--load', join(base, 'ckpt'), '--prompt', 'Call me ', '--tokens', '40', '--seed', String(seed), ...extra],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
      );
    const a = sample(1);
    expect(a.startsWith('Call me ')).toBe(true);
    expect(Array.from(a.trimEnd()).length).toBeGreaterThanOrEqual('Call me '.length + 30); // 40 characters (a newline may end it)
    expect(sample(1)).toBe(a);
    expect(sample(2)).not.toBe(a);
    // Greedy decoding is deterministic whatever the seed; 40 tokens run past the 16-position context.
    expect(sample(3, ['--temperature', '0'])).toBe(sample(4, ['--temperature', '0']));
    const bad = spawnSync('node', [BIN, 'sample', '--load', join(base, 'ckpt'), '--prompt', '日本'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/webtron sample: CharTokenizer: character "日" \(U\+65E5\) is not in the vocabulary/);
  });
});
