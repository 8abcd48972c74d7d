/** What every benchmark provides to bench/run.ts. */
import type { GpuContext } from '../src/gpu/context.js';
import type { FlagSpec, FlagValues } from '../src/cli/flags.js';
import type { Row } from './report.js';

export interface BenchEnv {
  /** The process's GPU context, created on first use (benchmarks without a GPU never ask). */
  gpu(): Promise<GpuContext>;
}

export interface Bench {
  name: string;
  summary: string;
  /** Columns of the printed table; the JSON lines carry every field. */
  columns: string[];
  flags: Record<string, FlagSpec>;
  run(env: BenchEnv, flags: FlagValues): Promise<Row[]>;
}
