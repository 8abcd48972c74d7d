/**
 * `webtron train`: one command for one node or many. Without RANK/WORLD_SIZE in the environment
 * it checks the flags, then runs one process (--nproc-per-node 1 on one node) or starts this node's
 * workers through `webtron launch`'s launcher with the same flags; with them set (the launcher,
 * torchrun, Slurm, a Kubernetes operator) it is that one worker.
 */
import { fileURLToPath } from 'node:url';
import { ExitCode, type Command } from './command.js';
import { FlagError, type FlagValues } from './flags.js';
import { ProgressBar } from './progress.js';
import { launch } from '../train/launcher.js';
import { resolveTrainConfig, TRAIN_FLAGS, trainHelp } from './train-flags.js';
import { checkDataPath, runTraining } from '../train/trainer.js';
import { type TrainConfig, withDefaultLoad } from '../train/config.js';
import { withHfInit } from './hf-init.js';
import { megatronLoadAsInit, withMegatronInit } from './megatron-init.js';
import { checkNormCentering, withCheckpointArgs, withCheckpointScheduler } from './checkpoint-args.js';
import { type Dashboard, startDashboard } from '../dashboard/server.js';

const CLI = fileURLToPath(new URL('../../../bin/webtron.js', import.meta.url));

/** runs/2026-11-30T20-15-03: the default run folder of a run started now. */
export function defaultRunDir(now = new Date()): string {
  return `runs/${now.toISOString().slice(0, 19).replace(/:/g, '-')}`;
}

/**
 * The run's config from the flags, with the checkpoint's model flags under --use-checkpoint-args, a
 * Hugging Face folder's model and tokenizer when --init-from names one, and a Megatron-LM
 * checkpoint's model when --init-from, --load with --finetune, or --pretrained-checkpoint names one.
 */
function resolveWithInit(values: FlagValues, argv: string[], d: number): TrainConfig {
  // A Megatron-LM checkpoint's args are the model's flags, as --use-checkpoint-args would take them.
  const megatron = withMegatronInit(megatronLoadAsInit(values), argv);
  if (megatron) return { ...resolveTrainConfig(megatron.values, d), vocabSize: megatron.vocabSize };
  const saved = withCheckpointArgs(values, argv);
  const hf = withHfInit(saved.values, argv);
  return { ...resolveTrainConfig(hf.values, d), vocabSize: hf.vocabSize ?? saved.vocabSize };
}

/** The worker's own environment says it is one rank of a job (RANK and WORLD_SIZE, or Slurm's). */
function workerWorld(env: NodeJS.ProcessEnv): number | null {
  const world = env.WORLD_SIZE ?? env.SLURM_NTASKS;
  const rank = env.RANK ?? env.SLURM_PROCID;
  return world !== undefined && rank !== undefined ? Number(world) : null;
}

export async function trainCommand(values: FlagValues, argv: string[], positional: string[] = []): Promise<number> {
  if (positional.length > 0)
    throw new FlagError(
      `unexpected argument '${positional[0]}': webtron train takes flags only (a blend is --data-path 0.7 PREFIX1 0.3 PREFIX2)`,
    );
  const progress =
    process.stderr.isTTY === true || process.env.WEBTRON_STDERR_TTY === '1'
      ? (iterations: number) => new ProgressBar(iterations, process.stderr, true)
      : undefined;
  const gpu = { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined, progress };
  const world = workerWorld(process.env);
  if (world !== null) {
    const restarted = Number(process.env.WEBTRON_RESTART_COUNT ?? 0) > 0;
    const cfg = withCheckpointScheduler(checkNormCentering(withDefaultLoad(resolveWithInit(values, argv, world), restarted)));
    await runTraining({ ...cfg, runDir: cfg.runDir ?? defaultRunDir() }, gpu);
    return 0;
  }
  const nproc = values['nproc-per-node'] as number;
  const nnodes = values.nnodes as number;
  const browsers = values['browser-workers'] as number;
  for (const [flag, value] of [
    ['nproc-per-node', nproc],
    ['nnodes', nnodes],
  ] as const)
    if (!(value >= 1)) throw new FlagError(`--${flag} must be at least 1, got ${value}`);
  if (!(browsers >= 0)) throw new FlagError(`--browser-workers must be 0 or more, got ${browsers}`);
  const browserPort = values['browser-port'] as number;
  if (!(browserPort >= 0 && browserPort <= 65535))
    throw new FlagError(`--browser-port ${browserPort} is not a TCP port; give one from 1 to 65535, or 0 for a free one`);
  // Every flag error before any worker starts.
  const cfg = withCheckpointScheduler(checkNormCentering(withDefaultLoad(resolveWithInit(values, argv, nproc * nnodes + browsers))));
  checkDataPath(cfg);
  const runDir = cfg.runDir ?? defaultRunDir();
  const dashboard = values.dashboard ? await startRunDashboard(values, runDir) : null;
  try {
    return await trainHere(values, argv, cfg, runDir, gpu);
  } finally {
    await dashboard?.close();
  }
}

/** --dashboard: the live charts of `runDir`, served while this command runs. */
async function startRunDashboard(values: FlagValues, runDir: string): Promise<Dashboard> {
  const host = values['dashboard-host'] as string;
  const port = values['dashboard-port'] as number;
  const dashboard = await startDashboard({ runs: [runDir], host, port }).catch((e: Error) => {
    throw new FlagError(`--dashboard-host ${host} --dashboard-port ${port}: ${e.message}; give another port (0 picks a free one)`);
  });
  console.log(`webtron train: dashboard of ${runDir} at ${dashboard.url}`);
  return dashboard;
}

/** This node's part: one process in place, or its workers through the launcher. */
async function trainHere(
  values: FlagValues,
  argv: string[],
  cfg: TrainConfig,
  runDir: string,
  gpu: Parameters<typeof runTraining>[1],
): Promise<number> {
  const nproc = values['nproc-per-node'] as number;
  const nnodes = values.nnodes as number;
  const maxRestarts = values['max-restarts'] as number;
  const browsers = values['browser-workers'] as number;
  // One process runs in place, unless it is to be restarted or joined by tabs: then the launcher watches it.
  if (nproc * nnodes === 1 && maxRestarts === 0 && browsers === 0) {
    await runTraining({ ...cfg, runDir }, gpu);
    return 0;
  }
  const own = argv.filter((a) => a !== '--');
  return launch({
    nprocPerNode: nproc,
    nnodes,
    nodeRank: values['node-rank'] as number,
    masterAddr: values['master-addr'] as string,
    masterPort: values['master-port'] as number,
    token: process.env.WEBTRON_JOB_TOKEN,
    graceMs: values['stop-grace-ms'] as number,
    maxRestarts,
    ...(browsers > 0
      ? {
          browser: {
            workers: browsers,
            host: values['browser-host'] as string,
            port: values['browser-port'] as number,
            config: { ...cfg, runDir },
          },
        }
      : {}),
    command: [CLI, 'train', ...own, ...(cfg.runDir ? [] : ['--run-dir', runDir])],
    // Workers run the CLI in place: this process's stderr already passes through bin/webtron.js's filter.
    env: { ...process.env, WEBTRON_CLI_CHILD: '1' },
  });
}

export const train: Command = {
  summary: "train a GPT with Megatron-LM's flags, on one process or --nproc-per-node workers (--use-distributed-optimizer for ZeRO-1)",
  flags: TRAIN_FLAGS,
  help: trainHelp,
  async run(values, positional, argv) {
    const code = await trainCommand(values, argv, positional);
    if (code !== 0) throw new ExitCode(code);
  },
};
