/**
 * Logits against a Python referee, for the tests of checkpoints that travel (Hugging Face folders,
 * Megatron-LM checkpoints): webtron's forward of a checkpoint model on random ids, the referee
 * script's forward of the same ids (`REFEREE logits FOLDER IDS.bin BATCH SEQ OUT.bin`), and how far
 * apart they are.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { GpuContext } from '../../src/gpu/context.js';
import { Graph } from '../../src/nn/graph.js';
import type { loadCheckpointModel } from '../../src/train/checkpoint-model.js';
import { pythonRuns } from './python.js';

/** Random token ids [batch, t] and a checkpoint model's logits of them; the model's params are destroyed after. */
export async function checkpointLogits(
  ctx: GpuContext,
  model: Awaited<ReturnType<typeof loadCheckpointModel>>,
  random: () => number,
  batch: number,
  t: number,
): Promise<{ ids: Uint32Array; want: Float32Array }> {
  const ids = Uint32Array.from({ length: batch * t }, () => Math.floor(random() * model.config.vocabSize));
  const g = new Graph(ctx, { training: false });
  try {
    return { ids, want: await g.read(model.gpt.forward(g, g.input(ids, [batch, t])).logits) };
  } finally {
    g.release();
    model.params.destroy();
  }
}

/** The referee script `referee`'s logits of `ids` [batch, ids.length / batch] for the model in `folder`. */
export function refereeLogits(referee: string, folder: string, ids: Uint32Array, batch: number): Float32Array {
  return refereeLogitsMany(referee, [{ folder, ids, batch }])[0]!;
}

/** The referee's logits of each job's ids for its folder, in one interpreter. */
export function refereeLogitsMany(referee: string, jobs: { folder: string; ids: Uint32Array; batch: number }[]): Float32Array[] {
  const scratch = mkdtempSync(join(tmpdir(), 'webtron-referee-'));
  try {
    const files = jobs.map((job, i) => {
      const ids = join(scratch, `ids-${i}.bin`);
      writeFileSync(ids, Buffer.from(Int32Array.from(job.ids).buffer));
      return { ids, out: join(scratch, `logits-${i}.bin`) };
    });
    pythonRuns(
      referee,
      jobs.map((job, i) => ['logits', job.folder, files[i]!.ids, job.batch, job.ids.length / job.batch, files[i]!.out]),
    );
    return files.map(({ out }) => {
      const bytes = readFileSync(out);
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The largest absolute difference between two runs' logits, and the largest logit of the first. */
export function logitsDifference(got: Float32Array, want: Float32Array): { worst: number; largest: number } {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let largest = 0;
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    largest = Math.max(largest, Math.abs(got[i]!));
  }
  return { worst, largest };
}

/** One comparison for expectRefereeLogits: webtron's logits `want` of `ids` for the model in `folder`. */
export interface LogitsCheck {
  what: string;
  folder: string;
  ids: Uint32Array;
  batch: number;
  want: Float32Array;
}

/** The referee's logits of every check, in one interpreter, each within `tolerance` of webtron's; each difference is printed. */
export function expectRefereeLogits(referee: string, checks: LogitsCheck[], tolerance: number, note = 'the logits'): void {
  const got = refereeLogitsMany(referee, checks);
  for (const [i, { what, want }] of checks.entries()) {
    const { worst } = logitsDifference(got[i]!, want);
    console.log(`${what}: max abs difference of ${note} ${worst.toExponential(2)}`);
    expect(worst, what).toBeLessThanOrEqual(tolerance);
  }
}
