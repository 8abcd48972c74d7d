/**
 * Every command against a corpus of bad input: unknown flags, bad numbers, missing and corrupt
 * files, impossible shapes. Each must end in exactly one line on stderr that names the input, the
 * exit code for bad input (2), nothing on stdout, and nothing written. The first case of each command
 * runs `bin/webtron.js` as a user does; the rest run the CLI's main() in this process, which is
 * what that child runs, without two Node start-ups a case.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { IndexedDatasetBuilder } from '../../src/data/indexed.js';
import { ConfigError } from '../../src/errors.js';
import { ShapeError } from '../../src/nn/gpt-spec.js';
import { oneLine } from '../../src/cli/main.js';
import { TRAIN_FLAGS } from '../../src/cli/train-flags.js';
import { cliInProcess } from '../helpers/cli.js';

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'webtron-bad-input-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const GPT = ['--num-layers', '1', '--hidden-size', '16', '--num-attention-heads', '2', '--seq-length', '8'];
const TRAIN = [
  ...GPT,
  '--micro-batch-size',
  '2',
  '--global-batch-size',
  '4',
  '--train-iters',
  '1',
  '--lr',
  '1e-3',
  '--save',
  'ck',
  '--run-dir',
  'run',
];

/** Inputs placed in each case's empty folder: what the case may read, nothing it may write. */
function fixtures(dir: string): void {
  mkdirSync(join(dir, 'corrupt', 'iter_0000001'), { recursive: true });
  writeFileSync(join(dir, 'corrupt', 'latest_checkpointed_iteration.txt'), '1\n');
  writeFileSync(join(dir, 'corrupt', 'iter_0000001', 'index.json'), '{"format": "webtron-checkpoint", "files": ');
  writeFileSync(join(dir, 'empty.txt'), '');
  writeFileSync(join(dir, 'model.onnx'), 'not a protobuf');
  writeFileSync(join(dir, 'corrupt-ds.idx'), 'MMIDIDY\0\0 is not an index of a dataset, just text');
  writeFileSync(join(dir, 'corrupt-ds.bin'), '');
  const bytes = new IndexedDatasetBuilder(join(dir, 'bytes'), 'uint16');
  bytes.addDocument([Array.from({ length: 64 }, (_, i) => i)]);
  bytes.finish();
  writeFileSync(join(dir, 'corpus.jsonl'), '{"text": "fine"}\n');
  writeFileSync(join(dir, 'vocab.json'), '{"a": 0}');
  // The index of a checkpoint saved by SGD at momentum 0: optimizer state, but no moment.
  mkdirSync(join(dir, 'sgd-plain', 'iter_0000001'), { recursive: true });
  writeFileSync(join(dir, 'sgd-plain', 'latest_checkpointed_iteration.txt'), '1\n');
  const index = { format: 'webtron-checkpoint/2', iteration: 1, step: 1, savedAtDataParallelSize: 1, distributedOptimizer: false };
  const empty = { layoutHash: '0', params: [], scaler: null, extra: {}, files: {}, model: {}, state: {}, optimizer: 'sgd' };
  writeFileSync(join(dir, 'sgd-plain', 'iter_0000001', 'index.json'), JSON.stringify({ ...index, ...empty }));
}

interface Case {
  args: string[];
  /** What the one line must say. */
  says: RegExp;
}

const CASES: Case[] = [
  { args: ['frobnicate'], says: /unknown command 'frobnicate'/ },
  { args: ['train', '--bogus', ...TRAIN], says: /unknown flag --bogus/ },
  { args: ['train', ...TRAIN, '--num-layers', 'two'], says: /--num-layers.*two/ },
  { args: ['train', ...TRAIN, '--lr', '-1'], says: /--lr.*-1/ },
  { args: ['train', ...TRAIN, '--clip-grad', '-0.5'], says: /--clip-grad.*-0\.5/ },
  { args: ['train', ...TRAIN, '--adam-beta1', '1.5'], says: /--adam-beta1.*1\.5/ },
  { args: ['train', ...TRAIN, '--seq-length', '0'], says: /--seq-length.*0/ },
  {
    args: ['train', ...TRAIN, '--num-attention-heads', '3'],
    says: /--hidden-size.*--num-attention-heads|--num-attention-heads.*--hidden-size/,
  },
  { args: ['train', ...TRAIN, '--kv-channels', '0'], says: /--kv-channels.*0/ },
  { args: ['train', ...TRAIN, '--kv-channels', 'wide'], says: /--kv-channels.*wide/ },
  { args: ['train', ...TRAIN, '--global-batch-size', '5'], says: /--global-batch-size.*5/ },
  { args: ['train', ...TRAIN, '--ddp-bucket-size', '-5'], says: /--ddp-bucket-size.*-5/ },
  { args: ['train', ...TRAIN, '--fp16', '--bf16'], says: /--fp16.*--bf16|--bf16.*--fp16/ },
  { args: ['train', ...TRAIN, '--data-path', 'missing.txt'], says: /missing\.txt/ },
  { args: ['train', ...TRAIN, '--data-path', 'empty.txt'], says: /empty\.txt|no sample|tokens/ },
  { args: ['train', ...TRAIN, '--load', 'corrupt'], says: /corrupt.*index\.json/ },
  {
    args: ['train', ...TRAIN, '--tensor-model-parallel-size', '2'],
    says: /--tensor-model-parallel-size 2: webtron trains data-parallel only/,
  },
  {
    args: ['train', ...TRAIN, '--pipeline-model-parallel-size', '0'],
    says: /--pipeline-model-parallel-size must be an integer of at least 1, got 0/,
  },
  { args: ['train', ...TRAIN, '--valid-data-path', 'bytes'], says: /--valid-data-path needs --train-data-path/ },
  { args: ['train', ...TRAIN, '--rampup-batch-size', '2', '2', '100'], says: /--rampup-batch-size needs a run in samples/ },
  {
    args: [
      'train',
      ...GPT,
      ...['--micro-batch-size', '2', '--train-samples', '64', '--lr', '1e-3', '--save', 'ck', '--run-dir', 'run'],
      ...['--step-batch-size-schedule', '0:2 1M:two'],
    ],
    says: /--step-batch-size-schedule: '1M:two' is not THRESHOLD:BATCH/,
  },
  {
    args: ['train', ...TRAIN, '--override-opt_param-scheduler', '--use-checkpoint-opt-param-scheduler'],
    says: /--override-opt_param-scheduler and --use-checkpoint-opt_param-scheduler exclude each other/,
  },
  {
    args: ['train', ...TRAIN, '--data-path', 'bytes', '--train-data-path', 'bytes'],
    says: /--data-path and --train-data-path .*exclude each other/,
  },
  {
    args: ['train', ...TRAIN, '--tokenizer-type', 'ByteTokenizer', '--train-data-path', 'bytes', '--test-data-path', 'empty.txt'],
    says: /--test-data-path: empty\.txt is not the prefix of an indexed dataset/,
  },
  {
    args: ['train', ...TRAIN, '--train-data-path', '0.5', 'bytes', '0.5'],
    says: /--train-data-path: 3 words: weights and prefixes must pair up/,
  },
  { args: ['train', ...TRAIN, '--use-checkpoint-args'], says: /--use-checkpoint-args needs --load/ },
  { args: ['train', ...TRAIN, '--use-checkpoint-args', '--load', 'corrupt'], says: /corrupt.*index\.json/ },
  { args: ['train', ...TRAIN, '--finetune'], says: /--finetune needs --load \(the checkpoint whose params to start from\)/ },
  { args: ['train', ...TRAIN, '--no-load-optim'], says: /--no-load-optim needs --load/ },
  { args: ['train', ...TRAIN, '--load', 'corrupt', '--finetune'], says: /corrupt.*index\.json/ },
  { args: ['train', ...TRAIN, '--pretrained-checkpoint', 'missing'], says: /missing: neither a checkpoint folder/ },
  { args: ['train', ...TRAIN, '--data-path', '0.7', 'bytes', '0.3'], says: /--data-path: 3 words: weights and prefixes must pair up/ },
  {
    args: ['train', ...TRAIN, '--data-path', '0.5', 'bytes', '0.5', 'nothing'],
    says: /--data-path: nothing is neither a text file nor the prefix/,
  },
  { args: ['train', ...TRAIN, '--data-path', 'corrupt-ds'], says: /corrupt-ds\.idx: bad magic/ },
  { args: ['train', ...TRAIN, '--data-path', 'bytes'], says: /--tokenizer-type: CharTokenizer builds its vocabulary from a text corpus/ },
  { args: ['train', ...TRAIN, '--data-path', 'bytes', 'stray', '--nproc-per-node', '2'], says: /--data-path: .*bytes stray|stray/ },
  { args: ['train', ...TRAIN, '--tokenizer-type', 'SentencePiece'], says: /--tokenizer-type must be one of .*SentencePiece/ },
  {
    args: ['train', ...TRAIN, '--tokenizer-type', 'GPT2BPETokenizer', '--vocab-file', 'vocab.json'],
    says: /--vocab-file and --merge-file go together/,
  },
  { args: ['train', ...TRAIN, '--tokenizer-type', 'HuggingFaceTokenizer'], says: /needs --tokenizer-model/ },
  { args: ['train', ...TRAIN, 'extra'], says: /unexpected argument 'extra'/ },
  { args: ['train', ...TRAIN, '--exp-avg-dtype', 'bf16'], says: /--exp-avg-dtype bf16 needs --use-precision-aware-optimizer/ },
  {
    args: ['train', ...TRAIN, '--use-precision-aware-optimizer'],
    says: /--use-precision-aware-optimizer needs --use-distributed-optimizer/,
  },
  {
    args: ['train', ...TRAIN, '--use-distributed-optimizer', '--use-precision-aware-optimizer', '--exp-avg-sq-dtype', 'fp8'],
    says: /--exp-avg-sq-dtype: 'fp8' is not a dtype webtron stores there; use fp32, bf16 or fp16/,
  },
  {
    args: ['train', ...TRAIN, '--use-distributed-optimizer', '--use-precision-aware-optimizer', '--main-params-dtype', 'fp16'],
    says: /--main-params-dtype fp16 needs 16-bit params \(--bf16 or --fp16\): fp32 params are their own main params/,
  },
  {
    args: ['train', ...TRAIN, '--fp16', '--use-distributed-optimizer', '--use-precision-aware-optimizer', '--main-grads-dtype', 'bf16'],
    says: /--main-grads-dtype bf16 needs bf16 params \(--bf16\): fp16 params keep fp16 grads/,
  },
  {
    args: ['train', ...TRAIN, '--bf16', '--use-distributed-optimizer', '--use-precision-aware-optimizer', '--main-grads-dtype', 'fp16'],
    says: /--main-grads-dtype: 'fp16' is not a dtype webtron stores there; use fp32 or bf16/,
  },
  {
    args: ['memory', ...GPT, '--vocab-size', '64', '--use-precision-aware-optimizer', '--main-grads-dtype', 'bf16'],
    says: /--main-grads-dtype bf16 needs bf16 params \(--bf16 or --precision bf16\)/,
  },
  { args: ['memory', ...GPT, '--vocab-size', '64', '--exp-avg-dtype', 'half'], says: /--exp-avg-dtype: 'half' is not a dtype/ },
  {
    args: ['train', ...TRAIN, '--optimizer', 'muon'],
    says: /--optimizer muon: webtron runs adam, sgd and lion, .*Megatron's muon is not built/,
  },
  {
    args: ['train', ...TRAIN, '--optimizer', 'sgd', '--load', 'sgd-plain'],
    says: /sgd-plain\/iter_0000001\/index\.json: holds no momentum_buffer: saved by SGD at --sgd-momentum 0, which keeps none; resume with --sgd-momentum 0/,
  },
  {
    args: ['train', ...TRAIN, '--bf16', '--loss-scale', '1024'],
    says: /--loss-scale 1024: webtron scales the loss of fp16 runs \(--fp16\) only/,
  },
  { args: ['train', ...TRAIN, '--fp16', '--loss-scale', '0'], says: /--loss-scale must be a positive number, got 0/ },
  { args: ['train', ...TRAIN, '--dataloader-type', 'cyclic'], says: /--dataloader-type cyclic: webtron reads Megatron's single order/ },
  { args: ['train', ...TRAIN, '--optimizer', 'rmsprop'], says: /--optimizer: 'rmsprop' is not an optimizer; use adam, sgd or lion/ },
  { args: ['train', ...TRAIN, '--optimizer', 'sgd', '--sgd-momentum', '1'], says: /--sgd-momentum 1 is not in \[0, 1\)/ },
  {
    args: ['memory', ...GPT, '--vocab-size', '64', '--optimizer', 'lion', '--lion-beta2', '-0.5'],
    says: /--lion-beta2 -0\.5 is not in \[0, 1\]/,
  },
  {
    args: ['train', ...TRAIN, '--optimizer', 'lion', '--use-distributed-optimizer', '--use-precision-aware-optimizer'],
    says: /--use-precision-aware-optimizer keeps Adam's state in 16 bits; --optimizer lion keeps fp32 state and main params: leave one of them out/,
  },
  { args: ['preprocess-data', '--output-prefix', 'out', '--tokenizer-type', 'ByteTokenizer'], says: /--input is required/ },
  {
    args: ['preprocess-data', '--input', 'corpus.jsonl', '--output-prefix', 'corpus.jsonl/out/x', '--tokenizer-type', 'ByteTokenizer'],
    says: /--output-prefix: cannot make the folder corpus\.jsonl\/out: ENOTDIR/,
  },
  {
    args: ['preprocess-data', '--input', 'corpus.jsonl', '--output-prefix', 'out', '--tokenizer-type', 'CharTokenizer'],
    says: /CharTokenizer builds its vocabulary/,
  },
  {
    args: ['preprocess-data', '--input', 'corpus.jsonl', '--output-prefix', 'out', '--tokenizer-type', 'ByteTokenizer', '--workers', '0'],
    says: /--workers must be an integer of at least 1, got 0/,
  },
  {
    args: ['preprocess-data', '--input', 'empty.txt', '--output-prefix', 'out', '--tokenizer-type', 'ByteTokenizer'],
    says: /--input: empty\.txt is empty/,
  },
  {
    args: ['preprocess-data', '--input', 'corpus.jsonl', '--output-prefix', 'out', '--tokenizer-type', 'ByteTokenizer', '--append-eod'],
    says: /--append-eod: ByteTokenizer has no end-of-document token/,
  },
  {
    args: [
      'preprocess-data',
      '--input',
      'corpus.jsonl',
      '--output-prefix',
      'out',
      '--tokenizer-type',
      'GPT2BPETokenizer',
      '--vocab-file',
      'vocab.json',
      '--merge-file',
      'none.txt',
    ],
    says: /--merge-file: cannot read none\.txt: ENOENT/,
  },
  { args: ['train', ...TRAIN, '--load', 'nowhere'], says: /nowhere/ },
  { args: ['sample', '--load', 'nowhere'], says: /nowhere/ },
  { args: ['sample', '--load', 'corrupt', '--onnx', 'model.onnx'], says: /give one of --load .* or --onnx/ },
  { args: ['sample', '--onnx', 'model.onnx'], says: /model\.onnx: not an ONNX model/ },
  { args: ['sample', '--load', 'corrupt'], says: /corrupt.*index\.json/ },
  { args: ['sample', '--load', 'corrupt', '--tokens', '-5'], says: /--tokens.*-5/ },
  { args: ['sample', '--load', 'corrupt', '--top-p', '1.5'], says: /--top-p must be in \[0, 1\], got 1\.5/ },
  {
    args: ['sample', '--load', 'corrupt', '--inference-max-seq-length', '0'],
    says: /--inference-max-seq-length must be a positive integer \(positions of context\), got 0/,
  },
  { args: ['sample', '--load', 'corrupt', '--top-k', '3', '--top-p', '0.9'], says: /--top-k and --top-p exclude each other/ },
  { args: ['serve', '--load', 'nowhere'], says: /nowhere/ },
  { args: ['serve', '--load', 'corrupt'], says: /corrupt.*index\.json/ },
  { args: ['serve'], says: /give one of --load .* or --onnx/ },
  { args: ['serve', '--load', 'corrupt', '--port', '70000'], says: /--port must be an integer from 0 to 65535, got 70000/ },
  {
    args: ['serve', '--load', 'corrupt', '--inference-max-seq-length', '0'],
    says: /--inference-max-seq-length must be a positive integer \(positions of context\), got 0/,
  },
  { args: ['export', '--load', 'nowhere', '--output', 'm.onnx'], says: /nowhere/ },
  { args: ['export', '--load', 'corrupt', '--output', 'm.onnx'], says: /corrupt.*index\.json/ },
  {
    args: ['export', '--load', 'corrupt', '--output', 'm.onnx', '--dtype', 'int8'],
    says: /--dtype must be fp32, fp16 or bf16, got 'int8'/,
  },
  {
    args: ['export', '--load', 'corrupt', '--output', 'm.onnx', '--format', 'gguf'],
    says: /--format must be onnx, hf or megatron, got 'gguf'/,
  },
  { args: ['export', '--load', 'corrupt', '--output', 'm.onnx', '--dtype', 'bf16'], says: /--dtype bf16 is for --format hf/ },
  { args: ['export', '--load', 'corrupt', '--format', 'hf', '--output', 'hf'], says: /corrupt.*index\.json/ },
  { args: ['memory', ...GPT, '--vocab-size', '0'], says: /--vocab-size.*0/ },
  { args: ['memory', ...GPT, '--vocab-size', '64', '--precision', 'fp8'], says: /fp8/ },
  { args: ['memory', '--checkpoint', 'corrupt'], says: /corrupt.*index\.json/ },
  { args: ['memory', '--onnx', 'model.onnx'], says: /model\.onnx/ },
  { args: ['memory', '--params', 'lots'], says: /--params.*lots|lots/ },
  { args: ['launch', '--nproc-per-node', '0', '--', 'x.js'], says: /--nproc-per-node.*0/ },
  { args: ['launch', '--nproc-per-node', '1'], says: /program/ },
  { args: ['info', '--backend', 'glide'], says: /^webtron info: --backend 'glide' is not a backend Dawn knows/ },
];

function run(args: string[], cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Each command's first case, run through bin/webtron.js. */
const THROUGH_BIN = new Set(CASES.filter((c, i) => CASES.findIndex((o) => o.args[0] === c.args[0]) === i));

describe('bad input to every command', () => {
  it.each(CASES.map((c) => [c.args.join(' '), THROUGH_BIN.has(c) ? 'bin/webtron.js' : 'main() in process', c] as const))(
    'webtron %s (%s): one line, exit 2, nothing written',
    async (_name, _how, c) => {
      const dir = mkdtempSync(join(root, 'case-'));
      fixtures(dir);
      const before = readdirSync(dir, { recursive: true }).sort();
      const r = THROUGH_BIN.has(c) ? await run(c.args, dir) : await cliInProcess(c.args, dir);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^webtron( [a-z-]+)?: /);
      expect(lines[0]).toMatch(c.says);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(readdirSync(dir, { recursive: true }).sort()).toEqual(before);
    },
  );

  it("a library option's name becomes the command's flag in the one line", () => {
    expect(oneLine(new ConfigError('clipGrad must be >= 0, got -1', 'clipGrad'), TRAIN_FLAGS)).toBe('--clip-grad must be >= 0, got -1');
    expect(oneLine(new ConfigError("Adam's beta2 must be in [0, 1), got 2", 'beta2'), TRAIN_FLAGS)).toBe(
      "Adam's --adam-beta2 must be in [0, 1), got 2",
    );
    expect(
      oneLine(new ShapeError('hiddenSize 16 is not divisible by numAttentionHeads 3', ['hiddenSize', 'numAttentionHeads']), TRAIN_FLAGS),
    ).toBe('--hidden-size 16 is not divisible by --num-attention-heads 3');
    // an option the command has no flag for keeps the API's name
    expect(oneLine(new ConfigError('sizes must be two or more positive integers', 'sizes'), TRAIN_FLAGS)).toBe(
      'sizes must be two or more positive integers',
    );
  });
});
