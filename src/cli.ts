/** `webtron <command>`: the command-line entry point. */
import { listAdapters } from './gpu/adapter.js';
import { GpuContext, OPTIONAL_FEATURES } from './gpu/context.js';
import { describeTile, SHAPE_CLASSES } from './gpu/matmul-tuner.js';
import { gpuPollMs } from './gpu/poll.js';
import { WebtronError } from './errors.js';
import { flagHelp, GPU_FLAGS, parseFlags, type FlagSpec, type FlagValues } from './train/flags.js';
import { launch } from './train/launcher.js';
import type { MemoryRow } from './memory/calculator.js';
import { measure, measureActivations, MEMORY_FLAGS, renderTable, rowsFor, writePlot } from './memory/command.js';
import { TRAIN_FLAGS, trainHelp } from './train/args.js';
import { trainCommand } from './train/command.js';
import { EXPORT_FLAGS, exportCommand } from './train/export.js';
import { PREPROCESS_FLAGS, preprocessCommand } from './data/preprocess.js';
import { SAMPLE_FLAGS, sampleCommand } from './train/sample.js';

interface Command {
  summary: string;
  flags: Record<string, FlagSpec>;
  /** `--help` text instead of one line per flag. */
  help?: () => string;
  run(values: FlagValues, positional: string[], argv: string[]): Promise<void>;
}

const LIMITS_SHOWN: (keyof GPUSupportedLimits)[] = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'minStorageBufferOffsetAlignment',
];

/** The matmul kernel family and, for the tiled kernel, its tiles by shape class and where they came from. */
function matmulChoice(ctx: GpuContext): Record<string, unknown> {
  const kernel = ctx.matmulKernel;
  if (kernel !== 'tiled') return { kernel };
  const t = ctx.matmulTuning;
  return { kernel, tiles: t.tiles, gflops: t.gflops, source: t.source, cachePath: t.cachePath, tunedAt: t.tunedAt ?? null };
}

function matmulLine(ctx: GpuContext): string {
  const kernel = ctx.matmulKernel;
  if (kernel === 'texture') return 'texture (operands copied into storage textures: a CPU driver)';
  if (kernel === 'buffer') return 'buffer (operands read in place)';
  const t = ctx.matmulTuning;
  const tiles = SHAPE_CLASSES.map((c) => `${c} ${describeTile(t.tiles[c])}${t.gflops[c] ? ` (${t.gflops[c]} GFLOP/s)` : ''}`).join('; ');
  const source =
    t.source === 'default' ? 'default tiles, not tuned' : `${t.source} ${t.cachePath ?? ''}${t.tunedAt ? `, tuned ${t.tunedAt}` : ''}`;
  return `tiled: ${tiles}; ${source}`;
}

const info: Command = {
  summary: 'print the WebGPU adapter, backend, limits and features webtron will use',
  flags: {
    ...GPU_FLAGS,
    list: { kind: 'boolean', help: 'list every adapter Dawn offers on this platform' },
    json: { kind: 'boolean', help: 'print one JSON object instead of text' },
  },
  async run(values) {
    if (values.list) {
      for (const a of await listAdapters()) console.log(a.description);
      return;
    }
    const ctx = await GpuContext.create({ backend: values.backend as string | undefined, adapter: values.adapter as string | undefined });
    const i = ctx.found.info;
    const limits = Object.fromEntries(LIMITS_SHOWN.map((k) => [k, ctx.limits[k]]));
    const adapterFeatures = [...ctx.found.adapter.features].sort();
    const enabled = [...ctx.device.features].sort();
    if (values.json) {
      console.log(
        JSON.stringify({
          adapter: ctx.adapterName,
          backend: ctx.backend,
          vendor: i.vendor,
          architecture: i.architecture,
          device: i.device,
          fallback: i.isFallbackAdapter,
          limits,
          features: enabled,
          adapterFeatures,
          gpuPollMs: gpuPollMs(),
          matmul: matmulChoice(ctx),
          attention: ctx.attentionKernel,
        }),
      );
      return;
    }
    const rows: [string, string][] = [
      ['adapter', ctx.adapterName],
      ['backend', ctx.backend],
      ['vendor / architecture', `${i.vendor || '?'} / ${i.architecture || '?'}`],
      ['device', i.device || '?'],
      ['software renderer', i.isFallbackAdapter ? 'yes' : 'no'],
      ...LIMITS_SHOWN.map((k): [string, string] => [k, String(ctx.limits[k])]),
      ['features used', enabled.filter((f) => (OPTIONAL_FEATURES as readonly string[]).includes(f)).join(', ') || 'none'],
      ['subgroup lanes', i.subgroupMinSize ? `${i.subgroupMinSize}–${i.subgroupMaxSize}` : '?'],
      [
        'waits for the GPU',
        gpuPollMs() > 0 ? `polling every ${gpuPollMs()} ms (WEBTRON_GPU_POLL_MS)` : "Dawn's busy loop (WEBTRON_GPU_POLL_MS)",
      ],
      ['matmul kernel', matmulLine(ctx)],
      [
        'attention kernel',
        ctx.attentionKernel === 'fused'
          ? 'fused (flash-style: no T × T scores in memory; WEBTRON_ATTENTION)'
          : 'unfused (matmuls and a softmax over T × T scores: a CPU driver; WEBTRON_ATTENTION)',
      ],
      ['adapter features', adapterFeatures.join(', ')],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  },
};

const launchCommand: Command = {
  summary: "start this node's worker processes (torchrun style): webtron launch [flags] -- program.js [args]",
  flags: {
    'nproc-per-node': { kind: 'int', default: 1, help: 'workers on this node' },
    nnodes: { kind: 'int', default: 1, env: 'WEBTRON_NNODES', help: 'nodes in the job' },
    'node-rank': { kind: 'int', default: 0, env: 'WEBTRON_NODE_RANK', help: "this node's index; node 0 serves the store" },
    'master-addr': { kind: 'string', default: '127.0.0.1', env: 'MASTER_ADDR', help: 'address of node 0 (the store)' },
    'master-port': { kind: 'int', default: 29500, env: 'MASTER_PORT', help: 'store port on node 0' },
    'stop-grace-ms': {
      kind: 'int',
      default: 10_000,
      env: 'WEBTRON_STOP_GRACE_MS',
      help: 'after Ctrl-C, SIGTERM or a failed worker, how long workers get before SIGKILL',
    },
  },
  async run(values, positional) {
    const code = await launch({
      nprocPerNode: values['nproc-per-node'] as number,
      nnodes: values.nnodes as number,
      nodeRank: values['node-rank'] as number,
      masterAddr: values['master-addr'] as string,
      masterPort: values['master-port'] as number,
      token: process.env.WEBTRON_JOB_TOKEN,
      command: positional,
      graceMs: values['stop-grace-ms'] as number,
    });
    if (code !== 0) throw new ExitCode(code);
  },
};

/** A command finished and wants this exit code, with nothing more to say. */
class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const memoryCommand: Command = {
  summary: "GPU memory per rank with and without the distributed optimizer (Megatron's table, exact model state)",
  flags: { ...GPU_FLAGS, ...MEMORY_FLAGS },
  async run(values) {
    const { source, rows } = rowsFor(values);
    let activations: { measured: number; predicted: number } | null = null;
    if (values.measure) {
      // The graph runs the attention the activations were counted for.
      const ctx = await GpuContext.create({
        backend: values.backend as string | undefined,
        adapter: values.adapter as string | undefined,
        attentionKernel: values.attention as 'fused' | 'unfused',
      });
      for (const [i, r] of rows.entries()) {
        process.stderr.write(
          `  … measuring ${i + 1}/${rows.length}: d=${r.data_parallel_size}, ${r.distributed ? 'distributed' : 'non-distributed'}, ${r.precision}\n`,
        );
        const m = await measure(ctx, source, r, values['ddp-bucket-size'] as number | undefined);
        Object.assign(r, {
          measured: m.measured,
          predicted: m.predicted,
          measured_equals_predicted: JSON.stringify(m.measured) === JSON.stringify(m.predicted),
        });
      }
      process.stderr.write(`  … measuring activations: one forward and backward of micro-batch ${values['micro-batch-size'] as number}\n`);
      activations = await measureActivations(ctx, source, values['micro-batch-size'] as number, rows[0]!.precision, !values['no-dropout']);
      if (activations) for (const r of rows) Object.assign(r, { measured_activations: activations.measured });
    }
    if (values.plot) writePlot(values.plot as string, rows);
    if (values.json) {
      for (const r of rows) console.log(JSON.stringify(r));
      return;
    }
    const first = rows[0]!;
    console.log(
      `${first.params.toLocaleString('en-US')} params, ${first.precision}, GPU bytes per rank (model state and activations of micro-batch ${values['micro-batch-size'] as number} exact):\n`,
    );
    console.log(renderTable(rows));
    if (values.measure) {
      console.log("\nmeasured on this GPU (rank 0's shard) vs predicted, model state:");
      for (const r of rows as (MemoryRow & { measured: Record<string, number>; measured_equals_predicted: boolean })[]) {
        console.log(
          `  d=${r.data_parallel_size} ${r.distributed ? 'distributed    ' : 'non-distributed'} ${r.measured_equals_predicted ? 'equal to the byte' : 'DIFFERENT'}: ${JSON.stringify(r.measured)}`,
        );
      }
      if (activations) {
        console.log(
          `\nactivations of one forward and backward, micro-batch ${values['micro-batch-size'] as number}, measured on this GPU: ${activations.measured.toLocaleString('en-US')} B, predicted ${activations.predicted.toLocaleString('en-US')} B (${activations.measured === activations.predicted ? 'equal to the byte' : 'DIFFERENT'})`,
        );
      }
    }
  },
};

const train: Command = {
  summary: "train a GPT with Megatron-LM's flags, on one process or --nproc-per-node workers (--use-distributed-optimizer for ZeRO-1)",
  flags: TRAIN_FLAGS,
  help: trainHelp,
  async run(values, positional, argv) {
    const code = await trainCommand(values, argv, positional);
    if (code !== 0) throw new ExitCode(code);
  },
};

const sample: Command = {
  summary: 'generate text from a checkpoint of webtron train: webtron sample --load DIR --prompt TEXT --tokens N',
  flags: { ...GPU_FLAGS, ...SAMPLE_FLAGS },
  run: (values) => sampleCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};

const exportCmd: Command = {
  summary: 'write a checkpoint of webtron train as an ONNX model: webtron export --load DIR --output model.onnx',
  flags: { ...GPU_FLAGS, ...EXPORT_FLAGS },
  run: (values) => exportCommand(values, { backend: values.backend as string | undefined, adapter: values.adapter as string | undefined }),
};

const preprocessData: Command = {
  summary: "tokenize a JSON lines or text corpus into Megatron's indexed dataset (PREFIX_text_document.bin/.idx) for train --data-path",
  flags: PREPROCESS_FLAGS,
  run: (values) => preprocessCommand(values),
};

const COMMANDS: Record<string, Command> = {
  train,
  'preprocess-data': preprocessData,
  sample,
  export: exportCmd,
  memory: memoryCommand,
  launch: launchCommand,
  info,
};

function usage(): string {
  const lines = ['usage: webtron <command> [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(16)}${c.summary}`);
  lines.push('', 'run `webtron <command> --help` for its flags');
  return lines.join('\n');
}

/** Library option names that are spelled differently as flags. */
const FLAG_OF_OPTION: Record<string, string> = { beta1: 'adam-beta1', beta2: 'adam-beta2', eps: 'adam-eps', bucketSize: 'ddp-bucket-size' };

/** The one line for a webtron error: where the library's API names an option, the command's flag for it. */
export function oneLine(e: WebtronError, flags: Record<string, FlagSpec>): string {
  let message = e.message;
  for (const option of e.options) {
    const flag = FLAG_OF_OPTION[option] ?? option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    if (flag in flags) message = message.replace(new RegExp(`\\b${option}\\b`), `--${flag}`); // its first mention
  }
  return message;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`webtron: unknown command '${name}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
    return 2;
  }
  const own = rest.indexOf('--') >= 0 ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    console.log(`usage: webtron ${name} [flags]\n${command.summary}\n\n${command.help ? command.help() : flagHelp(command.flags)}`);
    return 0;
  }
  try {
    const { values, positional } = parseFlags(rest, command.flags);
    await command.run(values, positional, rest);
    return 0;
  } catch (e) {
    if (e instanceof ExitCode) return e.code;
    if (!(e instanceof WebtronError)) throw e; // a bug: bin/webtron.js prints the trace and says so
    console.error(`webtron ${name}: ${oneLine(e, command.flags)}`);
    return e.exitCode;
  }
}
