/**
 * `npm run bench -- [name ...] [--json] [flags]`. With names: run those benchmarks and print a table
 * (and JSON lines with --json). With no name: run every benchmark and also write the JSON lines and
 * a Markdown summary to bench/results/<adapter>.jsonl and .md.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../src/files.js';
import { GpuContext } from '../src/gpu/context.js';
import { FlagError, flagHelp, GPU_FLAGS, parseFlags, type FlagSpec } from '../src/cli/flags.js';
import { adamBench } from './adam.js';
import { nnBench } from './nn.js';
import { onnxBench } from './onnx.js';
import { decodeBench, decodeProductsBench } from './decode.js';
import { dataBench } from './data.js';
import { hfBench } from './hf.js';
import { checkpointBench } from './checkpoint.js';
import { collectivesBench } from './collectives.js';
import { optimizerBench } from './optimizer.js';
import { reduceBench } from './reduce.js';
import type { Bench } from './bench.js';
import { slug, table, type Row } from './report.js';
import { trainBench } from './train.js';
import { peakBench } from './peak.js';

const BENCHES: Bench[] = [
  adamBench,
  collectivesBench,
  reduceBench,
  optimizerBench,
  peakBench,
  nnBench,
  onnxBench,
  decodeBench,
  decodeProductsBench,
  checkpointBench,
  trainBench,
  dataBench,
  hfBench,
];

const COMMON: Record<string, FlagSpec> = {
  ...GPU_FLAGS,
  json: { kind: 'boolean', help: 'also print one JSON object per result line' },
};

function resultsDir(): string {
  // dist/bench/run.js → <root>/bench/results
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'results');
}

async function main(argv: string[]): Promise<number> {
  const names = argv.filter(
    (a, i) =>
      !a.startsWith('--') && (i === 0 || !argv[i - 1]!.startsWith('--') || argv[i - 1]!.includes('=') || isBooleanFlag(argv[i - 1]!)),
  );
  const unknown = names.filter((n) => !BENCHES.some((b) => b.name === n));
  if (argv.includes('--help') || unknown.length > 0) {
    if (unknown.length > 0) console.error(`bench: unknown benchmark '${unknown[0]}'; benchmarks: ${BENCHES.map((b) => b.name).join(', ')}`);
    for (const b of BENCHES) console.error(`\n${b.name}: ${b.summary}\n${flagHelp(b.flags)}`);
    console.error(`\ncommon:\n${flagHelp(COMMON)}`);
    return unknown.length > 0 ? 2 : 0;
  }
  const chosen = names.length > 0 ? BENCHES.filter((b) => names.includes(b.name)) : BENCHES;
  const specs = Object.assign({}, COMMON, ...chosen.map((b) => b.flags)) as Record<string, FlagSpec>;
  const { values } = parseFlags(argv, specs);

  let gpu: Promise<GpuContext> | null = null;
  const env = {
    gpu: () =>
      (gpu ??= GpuContext.create({
        backend: values.backend as string | undefined,
        adapter: values.adapter as string | undefined,
      })),
  };

  const all: Row[] = [];
  const sections: string[] = [];
  for (const bench of chosen) {
    console.error(`bench ${bench.name}: ${bench.summary}`);
    const rows = await bench.run(env, values);
    const text = table(rows, bench.columns);
    console.log(`\n${bench.name}\n${text}`);
    sections.push(`## ${bench.name}: ${bench.summary}\n\n${text}\n`);
    all.push(...rows);
  }
  if (values.json) for (const row of all) console.log(JSON.stringify(row));

  if (names.length === 0) {
    const adapter = gpu === null ? 'no-gpu' : (await (gpu as Promise<GpuContext>)).adapterName;
    const base = join(resultsDir(), slug(adapter));
    mkdirSync(dirname(base), { recursive: true });
    writeFileAtomic(`${base}.jsonl`, `${all.map((r) => JSON.stringify(r)).join('\n')}\n`);
    writeFileAtomic(
      `${base}.md`,
      `# webtron benchmarks on ${adapter}\n\nRun ${new Date().toISOString()} with \`npm run bench\`.\n\n${sections.join('\n')}`,
    );
    console.error(`bench: wrote ${base}.jsonl and ${base}.md`);
  }
  return 0;
}

function isBooleanFlag(arg: string): boolean {
  const name = arg.replace(/^--/, '').split('=')[0]!;
  const spec = [COMMON, ...BENCHES.map((b) => b.flags)].map((s) => s[name]).find(Boolean);
  return spec?.kind === 'boolean';
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(
      error instanceof FlagError ? `bench: ${error.message}` : error instanceof Error ? (error.stack ?? error.message) : String(error),
    );
    process.exit(error instanceof FlagError ? 2 : 1);
  },
);
