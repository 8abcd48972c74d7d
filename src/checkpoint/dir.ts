/**
 * Megatron-LM's checkpoint folder layout, crash-safe:
 *
 *   SAVE/latest_checkpointed_iteration.txt   the newest complete iteration, e.g. "100"
 *   SAVE/iter_0000100/                        one folder per saved iteration
 *
 * A save writes `iter_NNNNNNN.tmp/`, fsyncs its files and the folder, renames it to `iter_NNNNNNN/`,
 * fsyncs SAVE, and only then replaces the tracker (temporary file, fsync, rename, fsync of SAVE).
 * Saving an iteration that exists moves the old folder to `iter_NNNNNNN.old` first and removes it
 * last. So at every moment a complete checkpoint is on disk and the tracker names one; whatever an
 * interrupted save leaves (`*.tmp`, `*.old`) is cleaned up by the next save or used by a load.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../files.js';
import { CheckpointError } from './errors.js';

export const TRACKER = 'latest_checkpointed_iteration.txt';
export const INDEX = 'index.json';

export function iterName(iteration: number): string {
  return `iter_${String(iteration).padStart(7, '0')}`;
}

const ITER = /^iter_(\d{7,})$/;

/** The complete iteration folders in SAVE, oldest first. */
export function savedIterations(saveDir: string): number[] {
  if (!existsSync(saveDir)) return [];
  return readdirSync(saveDir)
    .map((name) => ITER.exec(name))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(join(saveDir, m[0], INDEX)))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** The iteration an index.json records (for a checkpoint folder renamed from iter_NNNNNNN). */
function iterationOf(indexPath: string): number {
  let index: { iteration?: unknown };
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8')) as typeof index;
  } catch {
    throw new CheckpointError(`${indexPath}: not valid JSON`);
  }
  if (!Number.isSafeInteger(index.iteration))
    throw new CheckpointError(`${indexPath}: field 'iteration' is ${JSON.stringify(index.iteration)}, expected a non-negative integer`);
  return index.iteration as number;
}

/**
 * The iteration folder `path` means: SAVE (read the tracker) or SAVE/iter_NNNNNNN itself. A tracker
 * naming a folder that an interrupted re-save moved aside finds it at `.old`.
 */
export function resolveCheckpoint(path: string): { dir: string; iteration: number } {
  if (existsSync(join(path, INDEX))) {
    const m = ITER.exec(path.replace(/\/+$/, '').split('/').pop() ?? '');
    return { dir: path, iteration: m ? Number(m[1]) : iterationOf(join(path, INDEX)) };
  }
  const tracker = join(path, TRACKER);
  if (!existsSync(tracker)) {
    throw new CheckpointError(
      `${path}: neither a checkpoint folder (no ${INDEX}) nor a save folder (no ${TRACKER}); give a folder --save wrote to, or one of its iter_NNNNNNN folders`,
    );
  }
  const text = readFileSync(tracker, 'utf8').trim();
  if (!/^\d+$/.test(text)) throw new CheckpointError(`${tracker}: expected an iteration number, got '${text.slice(0, 40)}'`);
  const iteration = Number(text);
  for (const name of [iterName(iteration), `${iterName(iteration)}.old`]) {
    if (existsSync(join(path, name, INDEX))) return { dir: join(path, name), iteration };
  }
  throw new CheckpointError(`${tracker}: names iteration ${iteration} but ${join(path, iterName(iteration))} is missing or incomplete`);
}

/**
 * Tidy what interrupted saves left in SAVE: temporary folders are removed; a moved-aside folder is
 * removed once its replacement is complete, and otherwise moved back (it is that iteration's only copy).
 */
export function cleanLeftovers(saveDir: string): string[] {
  if (!existsSync(saveDir)) return [];
  const changed: string[] = [];
  for (const name of readdirSync(saveDir)) {
    const old = /^(iter_\d{7,})\.old$/.exec(name);
    if (/^iter_\d{7,}\.tmp$/.test(name) || name.startsWith(`${TRACKER}.tmp-`) || (old && existsSync(join(saveDir, old[1]!, INDEX)))) {
      rmSync(join(saveDir, name), { recursive: true, force: true });
      changed.push(name);
    } else if (old) {
      rmSync(join(saveDir, old[1]!), { recursive: true, force: true });
      renameSync(join(saveDir, name), join(saveDir, old[1]!));
      changed.push(name);
    }
  }
  if (changed.length > 0) fsyncDir(saveDir);
  return changed;
}

/** Make the complete temporary folder the checkpoint of `iteration` and point the tracker at it. */
export function commitCheckpoint(saveDir: string, tmp: string, iteration: number): string {
  const final = join(saveDir, iterName(iteration));
  const old = `${final}.old`;
  fsyncDir(tmp);
  if (existsSync(final)) {
    rmSync(old, { recursive: true, force: true });
    renameSync(final, old);
  }
  renameSync(tmp, final);
  fsyncDir(saveDir);
  writeFileAtomic(join(saveDir, TRACKER), `${iteration}\n`);
  rmSync(old, { recursive: true, force: true });
  return final;
}

/** The iteration the tracker names (null: no tracker, or not a number, e.g. Megatron's 'release'). */
export function trackedIteration(saveDir: string): number | null {
  const tracker = join(saveDir, TRACKER);
  if (!existsSync(tracker)) return null;
  const it = Number(readFileSync(tracker, 'utf8').trim());
  return Number.isInteger(it) ? it : null;
}

/**
 * Megatron's --save-retain-interval, after the tracker moved from `previous` to `iteration`: the
 * previous checkpoint goes unless its iteration is a multiple of `interval` (or it is a symbolic
 * link); so the multiples and the newest stay. Returns the removed iteration, if any.
 */
export function dropUnretained(saveDir: string, previous: number | null, iteration: number, interval: number): number | null {
  if (previous === null || previous <= 0 || previous === iteration || previous % interval === 0) return null;
  const dir = join(saveDir, iterName(previous));
  if (!existsSync(dir) || lstatSync(dir).isSymbolicLink()) return null;
  rmSync(dir, { recursive: true, force: true });
  fsyncDir(saveDir);
  return previous;
}

/** Keep the newest `retain` iteration folders (0: all); the tracker's is always kept. Returns the removed iterations. */
export function pruneCheckpoints(saveDir: string, retain: number): number[] {
  if (!(retain > 0)) return [];
  const tracked = trackedIteration(saveDir);
  const all = savedIterations(saveDir);
  const drop = all.slice(0, Math.max(0, all.length - retain)).filter((it) => it !== tracked);
  for (const it of drop) rmSync(join(saveDir, iterName(it)), { recursive: true, force: true });
  if (drop.length > 0) fsyncDir(saveDir);
  return drop;
}

/** Bytes of every file under a folder. */
export function folderBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const s = statSync(join(dir, name));
    total += s.isDirectory() ? folderBytes(join(dir, name)) : s.size;
  }
  return total;
}
