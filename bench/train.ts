/**
 * `npm run bench -- train`: tokens/s of `webtron train` itself (real worker processes through its
 * launcher, Moby-Dick, the same GPT), for d = 1 and 2 (or --worlds), with and without the
 * distributed optimizer, with and without overlap (--overlap-grad-reduce, plus
 * --overlap-param-gather with the distributed optimizer) over several buckets, and with grads
 * reduced in bf16 (--grad-reduce-in-bf16), all in the same run. Each run's first iterations compile
 * the kernels and warm up; the figures are the last --log-interval of iterations (metrics.jsonl):
 * tokens/s, step time, `comm_fraction` (the collectives' phases over the step), and the model-state
 * bytes per rank measured after the first iteration (beside what `webtron memory` predicts).
 *
 * Beside them, interleaved run by run at every world size, PyTorch's DistributedDataParallel with
 * ZeroRedundancyOptimizer(AdamW) over gloo on the same GPT shape, init, batch per rank and Adam
 * settings (bench/reference/train_torch_ddp.py, Debian's python3-torch): `impl` is webtron or
 * torch-ddp-zero, and each webtron row's `vs_torch` is the median over repeats of its tokens/s over
 * torch's in the same repeat at the same world size (above 1: webtron faster).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gptParamCount } from '../src/nn/gpt-spec.js';
import { knownPeaks } from '../src/train/throughput.js';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { cpuGemmLimit, fractionOf, gptTrainFlopsPerToken, requireOptimizedBlas, torchEnvFields, type TorchEnv } from './limits.js';
import { progress, type Row } from './report.js';
import { median } from './timing.js';

const BIN = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const TORCH_SCRIPT = fileURLToPath(new URL('../../bench/reference/train_torch_ddp.py', import.meta.url));

/** Named model configs (GPT shape and batch per rank). */
export const TRAIN_CONFIGS: Record<string, string[]> = {
  // The issue's baseline config: n_layer 4, n_head 4, n_embd 128, seq 64, micro-batch 12 per rank.
  'char-4x128': [
    '--num-layers',
    '4',
    '--hidden-size',
    '128',
    '--num-attention-heads',
    '4',
    '--seq-length',
    '64',
    '--micro-batch-size',
    '12',
  ],
  // The README's main job.
  'char-2x128': [
    '--num-layers',
    '2',
    '--hidden-size',
    '128',
    '--num-attention-heads',
    '4',
    '--seq-length',
    '64',
    '--micro-batch-size',
    '8',
  ],
  // A 10M-parameter GPT (10.7M with the char vocabulary) for the scaling table.
  'gpt-10m': ['--num-layers', '6', '--hidden-size', '384', '--num-attention-heads', '6', '--seq-length', '64', '--micro-batch-size', '8'],
  // The issue's second baseline: 6 layers of 384, 6 heads, T 256, micro-batch 4 per rank (10.8M params).
  'gpt-6x384-t256': [
    '--num-layers',
    '6',
    '--hidden-size',
    '384',
    '--num-attention-heads',
    '6',
    '--seq-length',
    '256',
    '--micro-batch-size',
    '4',
  ],
  tiny: ['--num-layers', '2', '--hidden-size', '32', '--num-attention-heads', '2', '--seq-length', '16', '--micro-batch-size', '2'],
  // For hardware GPUs: 19M params, 4,096 tokens per rank per iteration.
  'gpu-medium': [
    '--num-layers',
    '6',
    '--hidden-size',
    '512',
    '--num-attention-heads',
    '8',
    '--seq-length',
    '256',
    '--micro-batch-size',
    '16',
  ],
};

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'train', ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/**
 * webtron configurations by name. `busyPoll`: Dawn's own busy wait for the GPU (WEBTRON_GPU_POLL_MS=0)
 * instead of the 1 ms poll webtron uses on software adapters, to measure what that poll is worth.
 */
interface Variant {
  distributed: boolean;
  overlap: boolean;
  bf16: boolean;
  busyPoll: boolean;
  /** Megatron-FSDP's strategy (with the distributed optimizer): optim is ZeRO-1. */
  strategy?: 'optim_grads' | 'optim_grads_params';
  /**
   * Recomputed in the backward: `full` every block (--recompute-granularity full --recompute-method
   * uniform), `mlp` each block's MLP (--recompute-granularity selective --recompute-modules mlp).
   */
  recompute?: 'full' | 'mlp';
}

const VARIANTS: Record<string, Variant> = {
  plain: { distributed: false, overlap: false, bf16: false, busyPoll: false },
  overlap: { distributed: false, overlap: true, bf16: false, busyPoll: false },
  distributed: { distributed: true, overlap: false, bf16: false, busyPoll: false },
  'distributed-overlap': { distributed: true, overlap: true, bf16: false, busyPoll: false },
  'distributed-bf16': { distributed: true, overlap: false, bf16: true, busyPoll: false },
  'distributed-overlap-busy-poll': { distributed: true, overlap: true, bf16: false, busyPoll: true },
  // Sharded grads always sync each bucket as soon as it is final (as --overlap-grad-reduce).
  'optim-grads': { distributed: true, overlap: true, bf16: false, busyPoll: false, strategy: 'optim_grads' },
  'optim-grads-params': { distributed: true, overlap: true, bf16: false, busyPoll: false, strategy: 'optim_grads_params' },
  'distributed-overlap-recompute': { distributed: true, overlap: true, bf16: false, busyPoll: false, recompute: 'full' },
  'distributed-overlap-recompute-mlp': { distributed: true, overlap: true, bf16: false, busyPoll: false, recompute: 'mlp' },
};

const RECOMPUTED = { full: 'every block', mlp: "each block's MLP" };
const RECOMPUTE_FLAGS = {
  full: ['--recompute-granularity', 'full', '--recompute-method', 'uniform'],
  mlp: ['--recompute-granularity', 'selective', '--recompute-modules', 'mlp'],
};

/** Phases of a step that are collectives (grad sync and the distributed optimizer's param gather). */
const COMM_PHASES = ['reduce-scatter', 'all-reduce', 'all-gather', 'param gather'];

/** The collectives' time per iteration over the step time (their phases, as metrics.jsonl averages them). */
export function commFraction(phases: Record<string, number>, stepMs: number): number {
  const comm = COMM_PHASES.reduce((sum, name) => sum + (phases[name] ?? 0), 0);
  return Math.round((comm / stepMs) * 1000) / 1000;
}

/** The value of `name` in a config's flag list. */
function flagOf(model: string[], name: string): number {
  return Number(model[model.indexOf(name) + 1]);
}

/** The padded vocabulary webtron trained with: its parameter count less the GPT's without a vocabulary, per hidden unit. */
function vocabOf(model: string[], params: number): number {
  const h = flagOf(model, '--hidden-size');
  const rest =
    params -
    gptParamCount({
      numLayers: flagOf(model, '--num-layers'),
      hiddenSize: h,
      numAttentionHeads: flagOf(model, '--num-attention-heads'),
      seqLength: flagOf(model, '--seq-length'),
      vocabSize: 0,
    });
  if (rest % h !== 0) throw new Error(`bench train: ${params} params do not fit the GPT formula for this config`);
  return rest / h;
}

/** PyTorch DDP + ZeRO on the same model, or the reason it could not run. */
function torchRun(
  python: string,
  model: string[],
  vocab: number,
  world: number,
  iters: number,
  window: number,
): { tokens_per_s: number; step_ms: number; loss: number; threads: number; env: TorchEnv } | string {
  if (!existsSync(python)) return `${python} not found (install Debian's python3-torch and libopenblas0-pthread)`;
  const args = [
    TORCH_SCRIPT,
    ...['--world', world, '--layers', flagOf(model, '--num-layers'), '--heads', flagOf(model, '--num-attention-heads')],
    ...['--hidden', flagOf(model, '--hidden-size'), '--block', flagOf(model, '--seq-length')],
    ...['--batch', flagOf(model, '--micro-batch-size'), '--vocab', vocab, '--iters', iters, '--window', window],
  ].map(String);
  const r = spawnSync(python, args, { encoding: 'utf8', timeout: 1_800_000 });
  if (r.status !== 0) return `exit ${r.status}: ${(r.stderr ?? '').trim().split('\n').at(-1)}`;
  const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
    tokens_per_s: number;
    step_ms: number;
    loss: number;
    threads: number;
    env: TorchEnv;
  };
  requireOptimizedBlas(result.env);
  return result;
}

export const trainBench: Bench = {
  name: 'train',
  summary: 'webtron train tokens/s vs PyTorch DDP + ZeRO: data-parallel sizes, distributed optimizer, overlap, bf16 grad reduce',
  columns: [
    'impl',
    'world',
    'distributed',
    'overlap',
    'grad_reduce_in_bf16',
    'busy_poll',
    'strategy',
    'recompute',
    'config',
    'tokens_per_s',
    'step_ms',
    'comm_fraction',
    'sent_bytes_per_iteration',
    'params',
    'model_state_bytes_per_rank',
    'predicted_bytes_per_rank',
    'activations_peak_bytes',
    'gflops',
    'fraction_of_limit',
    'vs_torch',
  ],
  flags: {
    config: { kind: 'string', default: 'char-4x128', help: `model: ${Object.keys(TRAIN_CONFIGS).join(', ')}` },
    iters: { kind: 'int', default: 40, help: 'iterations per run; the last --window are measured' },
    window: { kind: 'int', default: 20, help: 'iterations measured at the end of each run' },
    'bucket-size': {
      kind: 'int',
      default: 100_000,
      help: 'elements per grad bucket (several buckets: the overlap has something to overlap)',
    },
    worlds: { kind: 'list', default: ['1', '2'], help: 'data-parallel sizes' },
    repeat: { kind: 'int', default: 1, help: 'runs of every configuration, round-robin; the median is reported' },
    python: { kind: 'string', default: '/usr/bin/python3', help: 'python with torch for the DDP + ZeRO baseline' },
    'no-torch': { kind: 'boolean', help: 'leave out the PyTorch baseline' },
    variants: {
      kind: 'list',
      default: ['plain', 'overlap', 'distributed', 'distributed-overlap'],
      help: `webtron configurations: ${Object.keys(VARIANTS).join(', ')} (bf16: --grad-reduce-in-bf16; busy-poll: WEBTRON_GPU_POLL_MS=0)`,
    },
  },
  async run(env, flags) {
    const name = flags.config as string;
    const model = TRAIN_CONFIGS[name];
    if (!model) throw new FlagError(`--config: unknown config '${name}'; known: ${Object.keys(TRAIN_CONFIGS).join(', ')}`);
    const iters = flags.iters as number;
    const window = flags.window as number;
    if (!(window >= 1 && window < iters)) throw new FlagError(`--window must be at least 1 and below --iters (${iters}), got ${window}`);
    const repeat = flags.repeat as number;
    if (!(repeat >= 1)) throw new FlagError(`--repeat must be at least 1, got ${repeat}`);
    const base = mkdtempSync(join(tmpdir(), 'webtron-bench-train-'));
    const runs = new Map<string, Row[]>();
    const variants = flags.variants as string[];
    for (const v of variants)
      if (!VARIANTS[v]) throw new FlagError(`--variants: unknown '${v}'; known: ${Object.keys(VARIANTS).join(', ')}`);
    const worlds = (flags.worlds as string[]).map(Number);
    const configurations = worlds.flatMap((world) => variants.map((v) => ({ world, ...VARIANTS[v]! })));
    const micro = flagOf(model, '--micro-batch-size');
    const withTorch = !flags['no-torch'];
    // The device's limit every row is a fraction of: torch's GEMM on every core for a CPU driver (it
    // also refuses a reference BLAS before anything runs), the vendor's fp32 peak for a known GPU.
    const ctx = await env.gpu();
    const cpuLimit = ctx.software && withTorch ? cpuGemmLimit(flags.python as string) : null;
    const peak = ctx.software ? null : knownPeaks(ctx.adapterModel);
    const limit = cpuLimit
      ? {
          gflops: cpuLimit.gemm_gflops,
          what: `torch fp32 GEMM ${cpuLimit.gemm_size}^3 on ${cpuLimit.threads} threads, ${cpuLimit.blas.kind}`,
        }
      : peak
        ? { gflops: peak.fp32 * 1e3, what: `${peak.name} fp32 peak` }
        : null;
    // torch's tokens/s per world size, one entry per repeat (null: it could not run).
    const torch = new Map<number, (number | null)[]>();
    let vocab: number | null = null;
    try {
      for (let k = 0; k < repeat; k++) {
        for (const [i, { world, distributed, overlap, bf16, busyPoll, strategy, recompute }] of configurations.entries()) {
          const label = `d = ${world}, ${strategy ?? (distributed ? 'distributed' : 'non-distributed')}, ${overlap ? 'overlap' : 'no overlap'}${bf16 ? ', grads reduced in bf16' : ''}${busyPoll ? ", Dawn's busy GPU wait" : ''}${recompute ? `, ${RECOMPUTED[recompute]} recomputed` : ''}`;
          progress(`train ${name}: ${label}, ${iters} iterations${repeat > 1 ? `, run ${k + 1}/${repeat}` : ''}`);
          const key = `${world}-${distributed}-${overlap}-${bf16}-${busyPoll}-${strategy ?? ''}-${recompute ?? ''}`;
          const runDir = join(base, `${key}-${k}`);
          const args = [
            ...model,
            '--global-batch-size',
            String(micro * world),
            '--train-iters',
            String(iters),
            '--log-interval',
            String(window),
            '--eval-interval',
            String(iters * 10),
            '--eval-iters',
            '0',
            '--lr',
            '1e-3',
            '--hidden-dropout',
            '0',
            '--attention-dropout',
            '0',
            '--make-vocab-size-divisible-by',
            '8',
            '--split',
            '90,10',
            '--ddp-bucket-size',
            String(flags['bucket-size']),
            '--nproc-per-node',
            String(world),
            '--master-port',
            String(20000 + Math.floor(Math.random() * 20000)),
            '--run-dir',
            runDir,
            ...(distributed ? ['--use-distributed-optimizer'] : []),
            ...(overlap ? ['--overlap-grad-reduce', ...(distributed ? ['--overlap-param-gather'] : [])] : []),
            ...(bf16 ? ['--grad-reduce-in-bf16'] : []),
            ...(strategy ? ['--use-megatron-fsdp', '--data-parallel-sharding-strategy', strategy] : []),
            ...(recompute ? RECOMPUTE_FLAGS[recompute] : []),
          ];
          const r = await run(args, busyPoll ? { WEBTRON_GPU_POLL_MS: '0' } : {});
          if (r.code !== 0)
            throw new Error(`bench train (${label}) exited with ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
          const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Record<string, unknown>);
          const last = metrics.filter((m) => m.tokens_per_s !== undefined).at(-1)!;
          const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as Record<string, number>;
          runs.set(key, [
            ...(runs.get(key) ?? []),
            {
              bench: 'train',
              impl: 'webtron',
              world,
              distributed,
              overlap,
              grad_reduce_in_bf16: bf16,
              busy_poll: busyPoll,
              strategy: strategy ?? (distributed ? 'optim' : 'no_shard'),
              recompute: recompute ?? false,
              config: name,
              tokens_per_s: last.tokens_per_s,
              step_ms: last.step_ms,
              phases: Object.fromEntries(
                Object.entries(last.phases as Record<string, number>).map(([k, v]) => [k, Math.round(v * 100) / 100]),
              ),
              // The collectives' share of the step: with overlap they run beside the backward pass.
              comm_fraction: commFraction(last.phases as Record<string, number>, last.step_ms as number),
              // Payload bytes rank 0 sent per iteration (ZeRO-3 moves 1.5x ZeRO-1's: a second all-gather in the backward).
              sent_bytes_per_iteration: last.sent_bytes_per_iteration,
              params: summary.params,
              model_state_bytes_per_rank: summary.model_state_bytes_per_rank,
              predicted_bytes_per_rank: summary.predicted_model_state_bytes_per_rank,
              activations_peak_bytes: summary.activations_peak_bytes,
              final_loss: summary.final_loss,
              repeat: k,
            },
          ]);
          vocab ??= vocabOf(model, summary.params!);
          // After the last webtron run of this world size in this repeat: torch at the same size.
          if (withTorch && configurations[i + 1]?.world !== world) {
            progress(`train ${name}: d = ${world}, torch DDP + ZeroRedundancyOptimizer (gloo), ${iters} iterations`);
            const t = torchRun(flags.python as string, model, vocab, world, iters, window);
            if (typeof t === 'string') progress(`torch baseline skipped at d = ${world}: ${t}`);
            torch.set(world, [...(torch.get(world) ?? []), typeof t === 'string' ? null : t.tokens_per_s]);
            if (typeof t !== 'string')
              runs.set(`torch-${world}`, [
                ...(runs.get(`torch-${world}`) ?? []),
                {
                  bench: 'train',
                  impl: 'torch-ddp-zero',
                  world,
                  distributed: true,
                  overlap: true,
                  config: name,
                  tokens_per_s: t.tokens_per_s,
                  step_ms: t.step_ms,
                  final_loss: t.loss,
                  threads_per_rank: t.threads,
                  ...torchEnvFields(t.env),
                  repeat: k,
                },
              ]);
          }
        }
      }
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
    // The run of median tokens/s of each configuration, with every run's figure beside it, and
    // webtron's ratio to torch in the same repeat (median over repeats).
    return [...runs.values()].map((list) => {
      const sorted = [...list].sort((a, b) => (a.tokens_per_s as number) - (b.tokens_per_s as number));
      const row: Row = {
        ...sorted[Math.floor((sorted.length - 1) / 2)]!,
        runs: list.length,
        tokens_per_s_runs: list.map((r) => Math.round(r.tokens_per_s as number)),
      };
      delete row.repeat;
      if (vocab !== null) {
        const flops = gptTrainFlopsPerToken({
          numLayers: flagOf(model, '--num-layers'),
          hiddenSize: flagOf(model, '--hidden-size'),
          seqLength: flagOf(model, '--seq-length'),
          vocabSize: vocab,
        });
        const gflops = Math.round(((row.tokens_per_s as number) * flops) / 1e7) / 100;
        row.gflops = gflops;
        row.fraction_of_limit = fractionOf(gflops, limit?.gflops);
        if (limit) row.limit = `${Math.round(limit.gflops)} GFLOP/s (${limit.what})`;
      }
      if (row.impl === 'webtron') {
        const ratios = list.flatMap((r) => {
          const t = torch.get(r.world as number)?.[r.repeat as number];
          return t ? [(r.tokens_per_s as number) / t] : [];
        });
        if (ratios.length > 0) row.vs_torch = median(ratios);
      }
      return row;
    });
  },
};
