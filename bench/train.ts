/**
 * `npm run bench -- train`: tokens/s of `webtron train` itself (real worker processes through its
 * launcher, Moby-Dick, the same GPT), for d = 1 and 2, with and without the distributed optimizer,
 * with and without overlap (--overlap-grad-reduce, plus --overlap-param-gather with the distributed
 * optimizer) over several buckets, all in the same run. Each run's first iterations compile the
 * kernels and warm up; the figures are the last --log-interval of iterations (metrics.jsonl), and
 * the model-state bytes per rank are what the run measured after its first iteration (beside what
 * `webtron memory` predicts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlagError } from '../src/train/flags.js';
import type { Bench } from './bench.js';
import { progress, type Row } from './report.js';

const BIN = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));

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

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'train', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

export const trainBench: Bench = {
  name: 'train',
  summary: 'webtron train tokens/s: d = 1 and 2, distributed optimizer or not, overlap or not',
  columns: [
    'world',
    'distributed',
    'overlap',
    'config',
    'tokens_per_s',
    'step_ms',
    'params',
    'model_state_bytes_per_rank',
    'predicted_bytes_per_rank',
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
  },
  async run(_env, flags) {
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
    const configurations = (flags.worlds as string[])
      .map(Number)
      .flatMap((world) => [false, true].flatMap((distributed) => [false, true].map((overlap) => ({ world, distributed, overlap }))));
    const micro = Number(model[model.indexOf('--micro-batch-size') + 1]);
    try {
      for (let k = 0; k < repeat; k++) {
        for (const { world, distributed, overlap } of configurations) {
          const label = `d = ${world}, ${distributed ? 'distributed' : 'non-distributed'}, ${overlap ? 'overlap' : 'no overlap'}`;
          progress(`train ${name}: ${label}, ${iters} iterations${repeat > 1 ? `, run ${k + 1}/${repeat}` : ''}`);
          const runDir = join(base, `${world}-${distributed}-${overlap}-${k}`);
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
          ];
          const r = await run(args);
          if (r.code !== 0)
            throw new Error(`bench train (${label}) exited with ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
          const metrics = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as Record<string, unknown>);
          const last = metrics.filter((m) => m.tokens_per_s !== undefined).at(-1)!;
          const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as Record<string, number>;
          const key = `${world}-${distributed}-${overlap}`;
          runs.set(key, [
            ...(runs.get(key) ?? []),
            {
              bench: 'train',
              world,
              distributed,
              overlap,
              config: name,
              tokens_per_s: last.tokens_per_s,
              step_ms: last.step_ms,
              phases: Object.fromEntries(
                Object.entries(last.phases as Record<string, number>).map(([k, v]) => [k, Math.round(v * 100) / 100]),
              ),
              params: summary.params,
              model_state_bytes_per_rank: summary.model_state_bytes_per_rank,
              predicted_bytes_per_rank: summary.predicted_model_state_bytes_per_rank,
              final_loss: summary.final_loss,
            },
          ]);
        }
      }
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
    // The run of median tokens/s of each configuration, with every run's figure beside it.
    return [...runs.values()].map((list) => {
      const sorted = [...list].sort((a, b) => (a.tokens_per_s as number) - (b.tokens_per_s as number));
      return {
        ...sorted[Math.floor((sorted.length - 1) / 2)]!,
        runs: list.length,
        tokens_per_s_runs: list.map((r) => Math.round(r.tokens_per_s as number)),
      };
    });
  },
};
