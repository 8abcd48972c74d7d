/** `webtron <command>`: the command-line entry point. */
import { listAdapters } from './gpu/adapter.js';
import { GpuContext } from './gpu/context.js';
import { GpuError } from './gpu/errors.js';
import { FlagError, flagHelp, GPU_FLAGS, parseFlags, type FlagSpec } from './train/flags.js';

interface Command {
  summary: string;
  flags: Record<string, FlagSpec>;
  run(values: Record<string, unknown>, positional: string[]): Promise<void>;
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
      console.log(JSON.stringify({ adapter: ctx.adapterName, backend: ctx.backend, vendor: i.vendor, architecture: i.architecture, device: i.device, fallback: i.isFallbackAdapter, limits, features: enabled, adapterFeatures }));
      return;
    }
    const rows: [string, string][] = [
      ['adapter', ctx.adapterName],
      ['backend', ctx.backend],
      ['vendor / architecture', `${i.vendor || '?'} / ${i.architecture || '?'}`],
      ['device', i.device || '?'],
      ['software renderer', i.isFallbackAdapter ? 'yes' : 'no'],
      ...LIMITS_SHOWN.map((k): [string, string] => [k, String(ctx.limits[k])]),
      ['features used', enabled.filter((f) => f === 'shader-f16' || f === 'timestamp-query').join(', ') || 'none'],
      ['adapter features', adapterFeatures.join(', ')],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
  },
};

const COMMANDS: Record<string, Command> = { info };

function usage(): string {
  const lines = ['usage: webtron <command> [flags]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(10)}${c.summary}`);
  lines.push('', 'run `webtron <command> --help` for its flags');
  return lines.join('\n');
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
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`usage: webtron ${name} [flags]\n${command.summary}\n\n${flagHelp(command.flags)}`);
    return 0;
  }
  try {
    const { values, positional } = parseFlags(rest, command.flags);
    await command.run(values, positional);
    return 0;
  } catch (e) {
    if (e instanceof FlagError || e instanceof GpuError) {
      console.error(`webtron ${name}: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
