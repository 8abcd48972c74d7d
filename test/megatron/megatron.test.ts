/**
 * Megatron-LM's checkpoints as a start for webtron train (`--init-from`).
 *
 * The referee is test/megatron/megatron_reference.py: torch writes random checkpoints as Megatron's
 * save_checkpoint does (torch.save of args, iteration, Megatron-core's state dict, optimizer,
 * scheduler and RNG states; or torch_dist's distributed checkpoint of tensor-parallel chunks), and
 * runs Megatron-core's GPT forward on them from torch.load, written from Megatron's code
 * (linear_qkv's per-group rows, fc1's gate then value, its GELU, its rope).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { megatronCheckpointPath, megatronQkvRow, megatronWeights, openMegatronCheckpoint } from '../../src/checkpoint/megatron.js';
import { megatronLoadAsInit } from '../../src/cli/megatron-init.js';
import { GpuContext } from '../../src/gpu/context.js';
import { loadCheckpointModel } from '../../src/train/checkpoint-model.js';
import { bf16ToFloat, floatToBf16 } from '../../src/collectives/reduce.js';
import { gptParams } from '../../src/nn/gpt-spec.js';
import { torchReferee } from '../helpers/apt.js';
import { seeded } from '../helpers/seed.js';
import { BIN, train } from '../helpers/train.js';
import { checkpointLogits, logitsDifference, expectRefereeLogits, type LogitsCheck, refereeLogits } from '../helpers/referee-logits.js';
import { cliInProcess } from '../helpers/cli.js';
import { PYTHON, pythonRuns } from '../helpers/python.js';

const REFEREE = fileURLToPath(new URL('./megatron_reference.py', import.meta.url));
const HF_LLAMA_REFEREE = fileURLToPath(new URL('../hf/llama_reference.py', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'webtron-megatron-'));
let ctx: GpuContext;
const torch = torchReferee();
const skipWithoutTorch = torch.skipWithout;

beforeAll(async () => {
  ctx = await GpuContext.create();
  torch.find();
});
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

function writeCheckpoint(folder: string, seed: number, kind: 'gpt' | 'llama', ...overrides: string[]): void {
  writeCheckpoints([[folder, seed, kind, ...overrides]]);
}

/** The referee's write-random of each [folder, seed, kind, ...overrides], in one interpreter. */
function writeCheckpoints(jobs: [string, number, 'gpt' | 'llama', ...string[]][]): void {
  pythonRuns(
    REFEREE,
    jobs.map((job) => ['write-random', ...job]),
  );
}

/** How far the referee's logits of `folder` are from webtron's of the checkpoint `saved`, on random ids [2, 16]. */
async function compareLogits(folder: string, saved: string, random: () => number): Promise<number> {
  const { ids, want } = await checkpointLogits(ctx, await loadCheckpointModel(ctx, saved), random, 2, 16);
  return logitsDifference(refereeLogits(REFEREE, folder, ids, 2), want).worst;
}

/** Every param of the Megatron checkpoints in `folders`, read as the model of the run checkpoint `run`, equals the first folder's. */
async function expectSameParams(run: string, folders: string[]): Promise<void> {
  const model = await loadCheckpointModel(ctx, run);
  const readers = folders.map((f) => megatronWeights(openMegatronCheckpoint(megatronCheckpointPath(f)!), model.config));
  try {
    for (const spec of gptParams(model.config)) {
      const [first, ...rest] = readers.map((r) => r.read(spec.name));
      for (const [i, other] of rest.entries()) expect(other, `${spec.name} of ${folders[i + 1]}`).toEqual(first);
    }
  } finally {
    for (const r of readers) r.close();
    model.params.destroy();
  }
}

describe('webtron train --init-from a Megatron checkpoint', () => {
  it("a GPT-shaped checkpoint (the local spec's names, fp32, LayerNorm, biases, a tied head) starts a run whose forward gives the referee's logits", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('megatron gpt checkpoint');
    const folder = join(dir, 'gpt');
    writeCheckpoint(folder, seed, 'gpt');
    const saved = join(dir, 'gpt-run');
    const run = await train([
      ...['--init-from', folder, '--mock-data', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', saved, '--run-dir', join(dir, 'run-gpt')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/initialized from Megatron-LM's .*model_optim_rng\.pt \(iteration 50\)/);
    const model = await loadCheckpointModel(ctx, saved);
    expect(model.config).toMatchObject({ numLayers: 2, hiddenSize: 32, numAttentionHeads: 4, vocabSize: 50304, seqLength: 16 });
    expect(model.config.tiedHead).not.toBe(false);
    model.params.destroy();
    const worst = await compareLogits(folder, saved, random);
    console.log(`Megatron GPT checkpoint: max abs difference of the logits ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
    // Megatron's own ways to start from it are --init-from: --load with --finetune, and --pretrained-checkpoint
    // (run by the next test); a webtron checkpoint's --load is left as it is.
    expect(megatronLoadAsInit({ load: folder, finetune: true, 'mock-data': true })).toEqual({ 'init-from': folder, 'mock-data': true });
    expect(megatronLoadAsInit({ 'pretrained-checkpoint': folder })).toEqual({ 'init-from': folder });
    expect(megatronLoadAsInit({ load: saved, finetune: true })).toEqual({ load: saved, finetune: true });
  });

  it("a Llama-shaped checkpoint (Transformer Engine's names, bf16, RMSNorm, SwiGLU, 8 heads in 2 groups, q and k norms, rope with Llama 3 scaling, an untied head) gives the referee's logits", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('megatron llama checkpoint');
    const folder = join(dir, 'llama');
    writeCheckpoint(folder, seed, 'llama');
    const saved = join(dir, 'llama-run');
    // Megatron's --pretrained-checkpoint, naming the iteration folder itself rather than SAVE.
    const run = await train([
      ...[
        '--pretrained-checkpoint',
        join(folder, 'iter_0000050'),
        '--mock-data',
        '--micro-batch-size',
        '2',
        '--train-iters',
        '1',
        '--lr',
        '0',
      ],
      ...['--save', saved, '--run-dir', join(dir, 'run-llama')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    const model = await loadCheckpointModel(ctx, saved);
    expect(model.config).toMatchObject({
      numQueryGroups: 2,
      normalization: 'RMSNorm',
      normEpsilon: 1e-6,
      swiglu: true,
      qkLayernorm: true,
      positionEmbeddingType: 'rope',
      rotaryBase: 500000,
      ropeScalingFactor: 8,
      tiedHead: false,
      vocabSize: 1024,
      ffnHiddenSize: 96,
    });
    model.params.destroy();
    const worst = await compareLogits(folder, saved, random);
    console.log(`Megatron Llama-shaped checkpoint: max abs difference of the logits ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  it("a torch_dist checkpoint saved at tensor parallel 2 and pipeline parallel 2 (Llama-shaped; layers stacked, SwiGLU's fc1 in 2 · tp chunks, the common state an object) starts a run whose forward gives the referee's logits; the per-layer layout with common.pt and the torch format of the same model read the same params, as a GPT-shaped one's do", async (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('megatron torch_dist checkpoint');
    const dist = ["ckpt_format='torch_dist'", 'tensor_model_parallel_size=2', 'pipeline_model_parallel_size=2'];
    const folder = join(dir, 'llama-dist');
    // The same model (same seed) in the per-layer layout with common.pt and in the torch format, and a
    // GPT-shaped one (biases split with their rows or kept whole, learned positions, a tied head, fp32).
    const singleton = join(dir, 'llama-dist-singleton');
    const plain = join(dir, 'llama-plain');
    const [gptDist, gptPlain] = [join(dir, 'gpt-dist'), join(dir, 'gpt-plain')];
    writeCheckpoints([
      [folder, seed, 'llama', ...dist],
      [singleton, seed, 'llama', ...dist, 'singleton', 'common.pt'],
      [plain, seed, 'llama'],
      [gptDist, seed, 'gpt', ...dist],
      [gptPlain, seed, 'gpt'],
    ]);
    const saved = join(dir, 'llama-dist-run');
    const run = await train([
      ...['--load', folder, '--finetune', '--mock-data', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', saved, '--run-dir', join(dir, 'run-llama-dist')],
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/initialized from Megatron-LM's torch_dist checkpoint .*iter_0000050 \(iteration 50\)/);
    const worst = await compareLogits(folder, saved, random);
    console.log(`Megatron torch_dist checkpoint (tp 2, pp 2): max abs difference of the logits ${worst.toExponential(2)}`);
    expect(worst).toBeLessThanOrEqual(1e-4);
    await expectSameParams(saved, [folder, singleton, plain]);
    await expectSameParams(join(dir, 'gpt-run'), [gptPlain, gptDist]);
  });

  it('webtron sample --load a Megatron checkpoint (torch, and torch_dist at tp 2, pp 2) writes what sample --load of the run started from it writes, token for token', (context) => {
    skipWithoutTorch(context);
    const sample = (load: string, prompt: string) => {
      const run = spawnSync(
        process.execPath,
        [BIN, 'sample', '--load', load, '--prompt', prompt, '--tokens', '10', '--temperature', '0.8', '--seed', '5'],
        { encoding: 'utf8' },
      );
      expect(run.status, run.stderr).toBe(0);
      return run.stdout;
    };
    for (const [megatron, run, prompt] of [
      ['gpt', 'gpt-run', 'The whale'],
      ['llama-dist', 'llama-dist-run', '1 2 3'],
    ] as const) {
      const text = sample(join(dir, megatron), prompt);
      console.log(`sample --load ${megatron}: ${JSON.stringify(text)}`);
      expect(text.length).toBeGreaterThan(prompt.length + 1);
      expect(text).toBe(sample(join(dir, run), prompt));
    }
  });

  it('webtron export --load a Megatron checkpoint (torch_dist at tp 2, pp 2) --format hf writes the folder the run started from it exports, byte for byte; --format megatron writes it in the torch format with the same params', async (context) => {
    skipWithoutTorch(context);
    const exportHf = (load: string, output: string) =>
      spawnSync(process.execPath, [BIN, 'export', '--load', load, '--format', 'hf', '--output', output, '--dtype', 'bf16'], {
        encoding: 'utf8',
      });
    const [fromMegatron, fromRun] = [join(dir, 'hf-from-megatron'), join(dir, 'hf-from-run')];
    const wrote = exportHf(join(dir, 'llama-dist'), fromMegatron);
    expect(wrote.status, wrote.stderr).toBe(0);
    expect(wrote.stdout).toMatch(/bfloat16 checkpoint at iteration 50\) as bfloat16.*Qwen3ForCausalLM/);
    expect(exportHf(join(dir, 'llama-dist-run'), fromRun).status).toBe(0);
    for (const file of ['model.safetensors', 'config.json', 'generation_config.json'])
      expect(readFileSync(join(fromMegatron, file)).equals(readFileSync(join(fromRun, file))), file).toBe(true);
    // torch_dist at tp 2 and pp 2 to the torch format at 1: the same params, read back.
    const converted = join(dir, 'llama-dist-as-torch');
    const again = spawnSync(
      process.execPath,
      [BIN, 'export', '--load', join(dir, 'llama-dist'), '--format', 'megatron', '--output', converted, '--dtype', 'bf16'],
      { encoding: 'utf8' },
    );
    expect(again.status, again.stderr).toBe(0);
    await expectSameParams(join(dir, 'llama-dist-run'), [join(dir, 'llama-dist'), converted]);
    const torchFormat = openMegatronCheckpoint(megatronCheckpointPath(converted)!);
    expect(torchFormat.format).toBe('torch');
    expect(torchFormat.args).toMatchObject({ seq_length: 16, tensor_model_parallel_size: 1, ckpt_format: 'torch', bf16: true });
    torchFormat.close();
  });

  it("linear_qkv's rows: q of each group's heads, then its k, then its v (Megatron's split), for webtron's q, k, v columns", () => {
    // 4 heads of 2 in 2 groups: Megatron's rows are [q0 q1 k0 v0 | q2 q3 k1 v1], 2 channels each.
    const row = megatronQkvRow({ numLayers: 1, hiddenSize: 8, numAttentionHeads: 4, numQueryGroups: 2, seqLength: 4, vocabSize: 8 });
    const megatron = ['q0', 'q1', 'k0', 'v0', 'q2', 'q3', 'k1', 'v1'].flatMap((u) => [`${u}.0`, `${u}.1`]);
    const webtron = ['q0', 'q1', 'q2', 'q3', 'k0', 'k1', 'v0', 'v1'].flatMap((u) => [`${u}.0`, `${u}.1`]);
    expect(webtron.map((_, c) => megatron[row(c)])).toEqual(webtron);
  });

  it('what webtron cannot take is one line naming it, exit code 2, and no run starts', async (context) => {
    skipWithoutTorch(context);
    const bad = join(dir, 'bad');
    /** A variant the referee writes: GPT-shaped, or Llama-shaped (its vocabulary of 1,024 writes faster than GPT-2's). */
    const write = (name: string, kind: 'gpt' | 'llama', ...overrides: string[]) => ({ name, kind, overrides });
    const cases: {
      what: string;
      /** The checkpoint to write, or the folder to use. */
      from: ReturnType<typeof write> | (() => string);
      /** What to make of the written folder before the run. */
      after?: (folder: string) => string;
      says: RegExp;
    }[] = [
      {
        what: 'experts',
        from: write('experts', 'llama', 'num_experts=8'),
        says: /num_experts is 8: mixture-of-experts layers, which webtron's GPT does not compute/,
      },
      { what: 'erf GELU', from: write('erf', 'gpt', 'bias_gelu_fusion=False'), says: /erf GELU .*webtron's GELU is the tanh form/ },
      { what: 'yarn', from: write('yarn', 'llama', "position_embedding_type='yarn'"), says: /position_embedding_type is "yarn"/ },
      {
        what: 'a flag that contradicts',
        from: () => join(dir, 'gpt'),
        says: /--num-layers 3 contradicts .*num_layers is 2; leave the flag out/,
      },
      {
        what: '--load without --finetune',
        from: () => join(dir, 'gpt'),
        says: /--load .* is a Megatron-LM checkpoint: webtron takes its params, not its optimizer state or counters; add --finetune/,
      },
      {
        what: 'tensor parallel ranks',
        from: write('tp2', 'llama'),
        after: (folder) => {
          mkdirSync(join(folder, 'iter_0000050', 'mp_rank_01'));
          return folder;
        },
        says: /holds 2 model-parallel ranks \(mp_rank_00, mp_rank_01\); webtron reads one: convert it .*--target-tensor-parallel-size 1/,
      },
      {
        what: 'a torch_dist folder whose .metadata is no pickle',
        from: () => {
          const folder = join(bad, 'dist');
          mkdirSync(join(folder, 'iter_0000100'), { recursive: true });
          writeFileSync(join(folder, 'latest_checkpointed_iteration.txt'), '100');
          writeFileSync(join(folder, 'iter_0000100', '.metadata'), 'not a pickle');
          return folder;
        },
        says: /iter_0000100\/\.metadata is not a pickle webtron can read .*is it torch\.distributed\.checkpoint's metadata\?/,
      },
      {
        what: 'a torch_dist stack of other layers than its args say',
        from: write('dist-layers', 'llama', "ckpt_format='torch_dist'", 'args.num_layers=3'),
        says: /decoder\.layers\.self_attention\.linear_qkv\.layer_norm_weight stacks 2 layers, where its args say num_layers 3/,
      },
      {
        what: 'a file cut short',
        from: write('cut', 'llama'),
        after: (folder) => {
          const file = join(folder, 'iter_0000050', 'mp_rank_00', 'model_optim_rng.pt');
          truncateSync(file, 100_000);
          return file;
        },
        says: /model_optim_rng\.pt is not a zip archive \(no end of central directory\)/,
      },
      {
        what: 'a state dict with a tensor no param takes',
        from: write('stranger', 'gpt', 'args.num_layers=1'),
        says: /holds decoder\.layers\.1\.input_layernorm\.weight, .*which no param of the model takes/,
      },
      {
        what: 'one shard of a tensor-parallel model',
        from: write('tp-args', 'llama', 'args.tensor_model_parallel_size=2'),
        after: (folder) => join(folder, 'iter_0000050', 'mp_rank_00', 'model_optim_rng.pt'),
        says: /tensor_model_parallel_size is 2, so the file holds one shard of the model; convert the checkpoint .*convert\.py/,
      },
      {
        what: 'a tensor of another shape',
        from: write('shape', 'gpt', 'args.ffn_hidden_size=64'),
        says: /its decoder\.layers\.0\.mlp\.linear_fc1\.weight is \[128, 32\], where the model's flags make it \[64, 32\]/,
      },
    ];
    // One interpreter writes every variant: an import of torch costs seconds.
    const jobs = cases.flatMap(({ from }) =>
      typeof from === 'function'
        ? []
        : [[join(bad, from.name), 1, from.kind, ...from.overrides] as [string, number, 'gpt' | 'llama', ...string[]]],
    );
    writeCheckpoints(jobs);
    // The first case runs bin/webtron.js as a user does; the rest run its main() in this process.
    for (const [i, { what, from, after, says }] of cases.entries()) {
      const folder = typeof from === 'function' ? from() : join(bad, from.name);
      const path = after ? after(folder) : folder;
      const start = what === '--load without --finetune' ? ['--load', path] : ['--init-from', path];
      const more = what === 'a flag that contradicts' ? ['--num-layers', '3'] : [];
      const args = ['train', ...start, '--mock-data', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0', ...more];
      const run = i === 0 ? spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' }) : await cliInProcess(args, dir);
      const lines = run.stderr.trim().split('\n');
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(says);
      expect(run.status, what).toBe(2);
    }
  });
});

/** The export of `trained` read back by --init-from's reader: each param as `round` makes the trained one. */
async function expectReadBack(trained: string, exported: string, round: (v: number) => number): Promise<void> {
  const model = await loadCheckpointModel(ctx, trained);
  const weights = megatronWeights(openMegatronCheckpoint(megatronCheckpointPath(exported)!), model.config);
  try {
    for (const spec of gptParams(model.config))
      expect(weights.read(spec.name), spec.name).toEqual((await model.params.read(spec.name)).map(round));
  } finally {
    weights.close();
    model.params.destroy();
  }
}

describe('webtron export --format megatron', () => {
  const exportMegatron = (load: string, output: string, ...more: string[]) =>
    spawnSync(process.execPath, [BIN, 'export', '--load', load, '--format', 'megatron', '--output', output, ...more], { encoding: 'utf8' });
  const shape = ['--num-layers', '2', '--hidden-size', '32', '--num-attention-heads', '4', '--seq-length', '16', '--micro-batch-size', '2'];
  const data = ['--mock-data', '--tokenizer-type', 'NullTokenizer', '--vocab-size', '100', '--make-vocab-size-divisible-by', '8'];

  it("a GPT-2-block model (local names) and a Llama-block one (Transformer Engine's names, grouped heads, q and k norms, scaled rope, zero-centered norms, an untied head): the referee's forward of the export gives webtron's logits, --init-from's reader gives back the params to the bit, and a run started from the export has the model", async (context) => {
    skipWithoutTorch(context);
    const { random } = seeded('megatron export');
    const checks: LogitsCheck[] = [];
    for (const [name, impl, more] of [
      ['gpt2-block', 'local', []],
      [
        'llama-block',
        'transformer_engine',
        [
          ...['--position-embedding-type', 'rope', '--normalization', 'RMSNorm', '--swiglu', '--ffn-hidden-size', '40'],
          ...['--disable-bias-linear', '--group-query-attention', '--num-query-groups', '2', '--qk-layernorm', '--apply-layernorm-1p'],
          ...['--untie-embeddings-and-output-weights', '--rotary-base', '500000', '--use-rope-scaling', '--rope-scaling-factor', '4'],
        ],
      ],
    ] as const) {
      const trained = join(dir, `${name}-trained`);
      const run = await train([
        ...shape,
        ...data,
        ...more,
        '--train-iters',
        '2',
        '--lr',
        '1e-2',
        '--save',
        trained,
        '--run-dir',
        join(dir, `run-${name}`),
      ]);
      expect(run.code, run.stderr).toBe(0);
      const exported = join(dir, `${name}-megatron`);
      const wrote = exportMegatron(trained, exported, '--transformer-impl', impl);
      expect(wrote.status, wrote.stderr).toBe(0);
      expect(wrote.stdout).toMatch(new RegExp(`model_optim_rng\\.pt: .* Megatron-core's ${impl} names; Megatron-LM loads it with --load`));
      expect(readFileSync(join(exported, 'latest_checkpointed_iteration.txt'), 'utf8')).toBe('release');
      const { ids, want } = await checkpointLogits(ctx, await loadCheckpointModel(ctx, trained), random, 2, 16);
      checks.push({ what: `${name} exported for Megatron (${impl})`, folder: exported, ids, batch: 2, want });
      // Read back, the same params to the bit.
      await expectReadBack(trained, exported, (v) => v);
    }
    expectRefereeLogits(REFEREE, checks, 1e-4, "the referee's logits");
    // And a run started --init-from the export has the model it came from.
    const back = join(dir, 'llama-block-back');
    const again = await train([
      ...['--init-from', join(dir, 'llama-block-megatron'), '--mock-data', '--micro-batch-size', '2', '--train-iters', '1', '--lr', '0'],
      ...['--save', back, '--run-dir', join(dir, 'run-llama-block-back')],
    ]);
    expect(again.code, again.stderr).toBe(0);
    const [a, b] = [await loadCheckpointModel(ctx, join(dir, 'llama-block-trained')), await loadCheckpointModel(ctx, back)];
    expect(b.config).toEqual(a.config);
    a.params.destroy();
    b.params.destroy();
  });

  it("a Hugging Face Llama folder (grouped heads, Llama 3's rope scaling, an untied head) exports as a Megatron checkpoint whose forward by Megatron's referee gives transformers' referee's logits of the folder", (context) => {
    skipWithoutTorch(context);
    const { seed, random } = seeded('megatron export of a hugging face folder');
    const folder = join(dir, 'hf-llama');
    const wrote = spawnSync(PYTHON, [HF_LLAMA_REFEREE, 'write-random', folder, String(seed), '2', '64', '8', '2', '56', '32'], {
      encoding: 'utf8',
    });
    expect(wrote.status, wrote.stderr).toBe(0);
    const exported = join(dir, 'hf-llama-megatron');
    const run = exportMegatron(folder, exported, '--transformer-impl', 'local');
    expect(run.status, run.stderr).toBe(0);
    const ids = Uint32Array.from({ length: 2 * 16 }, () => Math.floor(random() * 257));
    const { worst } = logitsDifference(refereeLogits(REFEREE, exported, ids, 2), refereeLogits(HF_LLAMA_REFEREE, folder, ids, 2));
    console.log(
      `Hugging Face Llama folder exported for Megatron: max abs difference of the two referees' logits ${worst.toExponential(2)}`,
    );
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  it('--dtype bf16 writes bf16 storages that read back as the params rounded to bf16; bad flags are one line', async (context) => {
    skipWithoutTorch(context);
    const trained = join(dir, 'gpt2-block-trained');
    const exported = join(dir, 'gpt2-block-megatron-bf16');
    const wrote = exportMegatron(trained, exported, '--dtype', 'bf16');
    expect(wrote.status, wrote.stderr).toBe(0);
    const check = spawnSync(
      PYTHON,
      [
        '-c',
        "import sys, torch; sd = torch.load(sys.argv[1], map_location='cpu'); print(sorted({str(t.dtype) for t in sd['model'].values()}), sd['args'].bf16, sd['args'].params_dtype)",
        join(exported, 'release', 'mp_rank_00', 'model_optim_rng.pt'),
      ],
      { encoding: 'utf8' },
    );
    expect(check.stdout.trim(), check.stderr).toBe("['torch.bfloat16'] True torch.bfloat16");
    await expectReadBack(trained, exported, (v) => bf16ToFloat(floatToBf16(v)));
    for (const [flags, message] of [
      [
        ['--format', 'megatron', '--transformer-impl', 'megatron'],
        /--transformer-impl must be transformer_engine or local, got 'megatron'/,
      ],
      [['--format', 'hf', '--transformer-impl', 'local'], /--transformer-impl is for --format megatron/],
    ] as const) {
      const run = spawnSync(process.execPath, [BIN, 'export', '--load', trained, '--output', join(dir, 'nowhere'), ...flags], {
        encoding: 'utf8',
      });
      expect(run.stderr.trim().split('\n'), flags.join(' ')).toHaveLength(1);
      expect(run.stderr, flags.join(' ')).toMatch(message);
      expect(run.status).toBe(2);
    }
    writeFileSync(join(dir, 'a-file'), '');
    const onFile = exportMegatron(trained, join(dir, 'a-file'));
    expect(onFile.stderr).toMatch(/--output .*a-file is a file; --format megatron writes a folder/);
    expect(onFile.status).toBe(2);
  });
});
