/**
 * `npm run bench -- optimizer [--params N] [--world D] [--json]`: one training step's grad sync and
 * optimizer step with real worker processes, for the distributed optimizer and the non-distributed
 * one in the same run, split into phases (grad readback, reduce-scatter or all-reduce, grad upload,
 * grad norm, Adam, param readback, all-gather, param upload), with the model-state bytes each rank
 * holds on the GPU.
 */
import { writeFileAtomic } from '../src/files.js';
import { fileURLToPath } from 'node:url';
import type { Bench } from './bench.js';
import { parseCount } from './adam.js';
import { lineChartSvg } from '../src/plot/svg.js';
import { startRanks } from './ranks.js';
import { progress, type Row } from './report.js';

const WORKER = fileURLToPath(new URL('./optimizer-worker.js', import.meta.url));

async function runJob(world: number, config: Record<string, unknown>): Promise<Row> {
  const ranks = startRanks(WORKER, world, config);
  await Promise.all(ranks.map((r) => r.done));
  const row = ranks[0]!.lines[0];
  if (!row) throw new Error('optimizer bench: rank 0 reported nothing');
  return row;
}

export const optimizerBench: Bench = {
  name: 'optimizer',
  summary: 'grad sync + optimizer step: distributed vs non-distributed, by phase',
  columns: ['world', 'distributed', 'params', 'step_ms', 'phases', 'model_state_bytes_per_rank'],
  flags: {
    params: { kind: 'string', default: '10M', help: 'fp32 params (K, M, G are powers of 1024; plain numbers exact)' },
    world: { kind: 'list', default: ['2'], help: 'data-parallel ranks (worker processes), one or a list' },
    chart: { kind: 'string', help: 'also write an SVG chart of model-state bytes per rank against d to this file' },
    steps: { kind: 'int', default: 5, help: 'timed steps (median reported) after one warm-up' },
  },
  async run(_env, flags) {
    const text = flags.params as string;
    const params = /^\d+$/.test(text) ? Number(text) : parseCount(text);
    const worlds = (flags.world as string[]).map(Number);
    const rows: Row[] = [];
    for (const world of worlds) {
      for (const distributed of [false, true]) {
        progress(`optimizer: ${params} params, world ${world}, ${distributed ? 'distributed' : 'non-distributed'}`);
        const row = await runJob(world, { params, distributed, steps: flags.steps as number });
        const phases = row.phases as Record<string, number>;
        row.phases = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v * 100) / 100]));
        rows.push(row);
      }
    }
    if (flags.chart) {
      const series = [false, true].map((distributed) => ({
        name: distributed ? 'distributed optimizer' : 'non-distributed',
        color: distributed ? '#d62728' : '#1f77b4',
        points: rows
          .filter((r) => r.distributed === distributed)
          .map((r) => ({ x: r.world as number, y: r.model_state_bytes_per_rank as number })),
      }));
      const svg = lineChartSvg(series, {
        title: `fp32 model state per rank, ${params.toLocaleString('en-US')} params (measured)`,
        xLabel: 'data-parallel size d',
        yLabel: 'GPU bytes per rank (params + grads + optimizer state)',
        yFormat: (y) => `${(y / 1e6).toFixed(0)} MB`,
      });
      writeFileAtomic(flags.chart as string, svg);
      progress(`wrote ${flags.chart as string}`);
    }
    return rows;
  },
};
