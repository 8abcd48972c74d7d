/**
 * Megatron's --check-weight-hash-across-dp-replicas-interval: every rank hashes the params it
 * holds (all of them, in its own buffers), the ranks all-gather the hashes, and a run whose
 * replicas drifted apart (a bit flip, a nondeterministic kernel, a bug in a collective) stops
 * naming the ranks that differ from the rest.
 */
import { createHash } from 'node:crypto';
import { corruptParam } from '../faults.js';
import type { TrainRun } from './setup.js';
import { TrainingError } from './state.js';

/** Bytes of SHA-256 each rank contributes (as 16-bit words: any dtype the all-gather takes). */
const HASH_BYTES = 16;

/** The SHA-256 (first 16 bytes) of every param buffer of this rank, in order. */
async function paramsHash(run: TrainRun): Promise<Uint8Array> {
  await run.ddp.finishParamSync();
  const hash = createHash('sha256');
  for (const b of run.ddp.buffers) hash.update(await run.ctx.transfers.readback(b.params));
  return new Uint8Array(hash.digest().subarray(0, HASH_BYTES));
}

/** Ranks grouped by equal hash, the largest group first (ties: the group of the lowest rank). */
export function groupByHash(hashes: readonly string[]): number[][] {
  const groups = new Map<string, number[]>();
  for (const [r, h] of hashes.entries()) groups.set(h, [...(groups.get(h) ?? []), r]);
  return [...groups.values()].sort((a, b) => b.length - a.length || a[0]! - b[0]!);
}

const ranks = (rs: readonly number[]) => `rank${rs.length === 1 ? '' : 's'} ${rs.join(', ')}`;

/** Check that every data-parallel replica holds the same params after `iteration` (a collective). */
export async function checkWeightHashes(run: TrainRun, iteration: number): Promise<void> {
  const mine = await paramsHash(run);
  const all = new Uint16Array((HASH_BYTES / 2) * run.d);
  all.set(new Uint16Array(mine.buffer, mine.byteOffset, HASH_BYTES / 2), (HASH_BYTES / 2) * run.rank);
  await run.group.allGather(all);
  const hex = Array.from({ length: run.d }, (_, r) => Buffer.from(all.buffer, all.byteOffset + r * HASH_BYTES, HASH_BYTES).toString('hex'));
  const groups = groupByHash(hex);
  if (groups.length === 1) return;
  const [most, ...others] = groups;
  const differ = others.map((g) => `${ranks(g)} (${hex[g[0]!]!.slice(0, 12)})`).join('; ');
  throw new TrainingError(
    `params differ across data-parallel replicas after iteration ${iteration} (--check-weight-hash-across-dp-replicas-interval): ${differ} ${others.flat().length === 1 ? 'differs' : 'differ'} from ${ranks(most!)} (${hex[most![0]!]!.slice(0, 12)}); resume from the last checkpoint, and if it happens again, suspect that rank's device`,
  );
}

/** The test fault WEBTRON_FAULT_CORRUPT_PARAM: this rank adds 1 to the first element of its first param buffer. */
export async function maybeCorruptParams(run: TrainRun, iteration: number): Promise<void> {
  if (!corruptParam(iteration, run.rank)) return;
  await run.ddp.finishParamSync();
  const b = run.ddp.buffers[0]!;
  if (b.layout.paramDtype !== 'float32') throw new TrainingError('WEBTRON_FAULT_CORRUPT_PARAM needs fp32 params');
  const first = new Float32Array((await run.ctx.transfers.readback(b.params, 0, 4)).buffer);
  first[0]! += 1;
  run.ctx.transfers.upload(b.params, first, 0);
  run.ddp.paramsWritten();
}
