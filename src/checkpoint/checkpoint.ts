/**
 * Saving and loading a training state (model params, Adam's moments, fp32 main params of 16-bit
 * params, step, loss scaler, and whatever the trainer adds) in Megatron's folder layout (dir.ts),
 * by every rank at once:
 *
 *   SAVE/iter_NNNNNNN/index.json                    format, iteration, step, layout, scaler, extra,
 *                                                   every file's size and block checksums, and where
 *                                                   each param's values and state ranges are
 *   SAVE/iter_NNNNNNN/model-rRRRRR-KKK.safetensors   whole params in their own dtype, by name
 *   SAVE/iter_NNNNNNN/model.safetensors.index.json  Hugging Face's weight map of those files
 *   SAVE/iter_NNNNNNN/optim-rRRRRR-KKK.safetensors   fp32 state pieces named kind/param/start-end
 *   SAVE/iter_NNNNNNN/rank-RRRRR.json               what each rank wrote (index.json merges them)
 *
 * Each rank streams what it owns (its shards with the distributed optimizer; its share of the params
 * by size otherwise, and its share of the model params either way) into files of bounded size. A
 * load at any d reads only the ranges each rank needs. The ranks agree at three points (prepared,
 * written, committed): ranks that are done wait for the others in heartbeat rounds of a tiny
 * all-reduce under the op timeout, up to the save's own deadline, so a slow disk is not an op
 * timeout but a dead peer is; then an all-gather of their statuses brings an error on one rank to
 * every rank with its message. `startAsyncSave` does the writing in the background.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { open as openAsync, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CollectiveError } from '../collectives/errors.js';
import { float32ToWords, wordsToFloat32 } from '../collectives/reduce.js';
import { allGatherText, type Collectives } from '../collectives/process-group.js';
import type { ParamAndGradBuffer } from '../ddp/buffers.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import { BYTES, type ModelLayout, type ParamDtype } from '../ddp/layout.js';
import { stallSave } from '../faults.js';
import { writeFileAtomic } from '../files.js';
import type { LossScalerState } from '../optimizer/loss-scaler.js';
import type { StateDtype } from '../optimizer/adam.js';
import type { Optimizer, StateKind, StatePiece } from '../optimizer/optimizer-base.js';
import {
  cleanLeftovers,
  commitCheckpoint,
  dropUnretained,
  INDEX,
  iterName,
  pruneCheckpoints,
  resolveCheckpoint,
  trackedIteration,
} from './dir.js';
import { CheckpointError } from './errors.js';
import { checkIndex, layoutHash, type CheckpointIndex, type FileMeta, type PieceRef } from './index-file.js';
import { readHeader, type SafetensorsDtype } from './safetensors.js';
import {
  CheckedFile,
  type FileImage,
  imageBytes,
  snapshotTensorFile,
  UploadStream,
  writeFileImage,
  writeTensorFile,
  type GpuTensor,
} from './stream.js';

export { CheckpointError, layoutHash, type CheckpointIndex };

export const CHECKPOINT_FORMAT = 'webtron-checkpoint/2';
const STATE_KINDS: readonly StateKind[] = ['exp_avg', 'exp_avg_sq', 'momentum_buffer', 'main_params'];
/** A param dtype's safetensors name. */
export const SAFETENSORS_DTYPE: Record<ParamDtype, SafetensorsDtype> = { float32: 'F32', bfloat16: 'BF16', float16: 'F16' };

export interface CheckpointParts {
  group: Collectives;
  ddp: DistributedDataParallel;
  optimizer: Optimizer;
}

export interface SaveOptions {
  iteration: number;
  /** JSON the trainer keeps with the checkpoint (arguments, schedule, data position, RNG, tokenizer). */
  extra?: Record<string, unknown>;
  /** Keep only the newest N iteration folders (default 0: keep all). */
  retain?: number;
  /** Megatron's --save-retain-interval: each save removes the previous checkpoint unless its iteration is a multiple of this. */
  retainInterval?: number | null;
  /** Bytes per file before a rank starts its next one (default 2 GiB; a param larger than that gets a file of its own). */
  maxFileBytes?: number;
  /** The whole save's deadline on every rank (default 2 h): not the collectives' op timeout. */
  timeoutMs?: number;
  /**
   * false: the model params only (Megatron's --no-save-optim): no moments, main params, step or loss
   * scale, so a load must not ask for the optimizer's state (default true).
   */
  optimizerState?: boolean;
}

export interface SavedCheckpoint {
  dir: string;
  iteration: number;
  /** Bytes this rank wrote. */
  bytesWritten: number;
  /** Bytes of the whole checkpoint (every rank's files). */
  totalBytes: number;
}

/** Params split over `d` ranks for writing, largest first onto the least-loaded rank. Pure. */
export function assignParams(layout: ModelLayout, d: number): Map<string, number> {
  const params = layout.buffers.flatMap((b) => b.params.map((p) => ({ name: p.name, bytes: p.numel * BYTES[b.paramDtype] })));
  params.sort((a, b) => b.bytes - a.bytes || (a.name < b.name ? -1 : 1));
  const load = new Array<number>(d).fill(0);
  const owner = new Map<string, number>();
  for (const p of params) {
    let best = 0;
    for (let r = 1; r < d; r++) if (load[r]! < load[best]!) best = r;
    owner.set(p.name, best);
    load[best]! += p.bytes;
  }
  return owner;
}

/** Statuses of every rank ('' for fine): one all-gather of a fixed-size message per rank, under the op timeout. */
async function agree(group: Collectives, status: string, what: string): Promise<void> {
  const failures = (await allGatherText(group, status, 512)).flatMap((text, r) => (text ? [`rank ${r}: ${text}`] : []));
  if (failures.length > 0) throw new CheckpointError(`${what} failed on ${failures.join('; ')}`);
}

/** How often ranks waiting on each other's disks check in: a quarter of the op timeout, at most 1 s. */
const heartbeatMs = (group: Collectives) => Math.min(1000, ((group as { timeoutMs?: number }).timeoutMs ?? 30_000) / 4);

/**
 * Every rank's `work` (its part of a save or a load; it resolves to '' or an error message), then
 * `agree`. Ranks that are done wait for the others in rounds of a one-element all-reduce every
 * heartbeat, each under the op timeout: a slow disk only takes more rounds (up to `deadlineMs`),
 * while a peer that is gone (killed, or its link down) fails the next round within the op timeout.
 * One long all-gather under the save's deadline instead waited for TCP keepalive to notice a dead
 * link (20 s here against a 4 s op timeout), or for the deadline itself.
 */
async function together(group: Collectives, work: Promise<string>, deadlineMs: number, what: string): Promise<void> {
  let status: string | null = null;
  void work.then((s) => {
    status = s;
  });
  const start = performance.now();
  for (;;) {
    await new Promise((resolve) => setImmediate(resolve)); // a work that is already done counts at once
    const flags = new Float32Array([status === null ? 1 : 0, performance.now() - start > deadlineMs ? 1 : 0]);
    try {
      await group.allReduce(flags, 'max');
    } catch (error) {
      // Say what the ranks were doing: "saving iteration 8 to ckpt: allReduce of 8 B failed on rank 0 (peer rank 1): …".
      if (error instanceof CollectiveError) throw new CollectiveError(`${what}: ${error.message}`);
      throw error;
    }
    if (flags[0] === 0) break;
    if (flags[1]! > 0)
      throw new CheckpointError(`${what}: not done on every rank after ${deadlineMs} ms (the deadline); a disk is stuck or too slow`);
    await Promise.race([work, new Promise((resolve) => setTimeout(resolve, heartbeatMs(group)))]);
  }
  await agree(group, status!, what);
}

/** `work`'s error as its message ('' when it succeeds). */
const settle = (work: Promise<unknown>): Promise<string> =>
  work.then(
    () => '',
    (error: unknown) => message(error),
  );

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ');

interface RankManifest {
  rank: number;
  files: Record<string, FileMeta>;
  model: Record<string, { file: string; tensor: string }>;
  state: Record<string, Record<string, PieceRef[]>>;
}

/** Split files once they pass `maxFileBytes` (a single tensor may exceed it). */
function packFiles<T extends { bytes: number }>(items: T[], maxFileBytes: number): T[][] {
  const files: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const item of items) {
    if (current.length > 0 && size + item.bytes > maxFileBytes) {
      files.push(current);
      current = [];
      size = 0;
    }
    current.push(item);
    size += item.bytes;
  }
  if (current.length > 0) files.push(current);
  return files;
}

/** One file this rank writes, its tensors, and what the manifest records about them. */
interface PlannedFile {
  file: string;
  tensors: GpuTensor[];
  metadata: Record<string, string>;
}

/**
 * This rank's files (its model params whole, its state pieces split to fit the file bound, unless
 * `optimizerState` is false) and the manifest without sizes and checksums.
 */
function planRankFiles(
  parts: CheckpointParts,
  maxFileBytes: number,
  optimizerState = true,
): { files: PlannedFile[]; manifest: RankManifest } {
  const { group, ddp, optimizer } = parts;
  const layout = ddp.layout;
  const owner = assignParams(layout, group.worldSize);
  const manifest: RankManifest = { rank: group.rank, files: {}, model: {}, state: {} };
  const rank = String(group.rank).padStart(5, '0');
  const files: PlannedFile[] = [];

  const model: (GpuTensor & { bytes: number })[] = [];
  for (const [i, b] of layout.buffers.entries()) {
    const width = BYTES[b.paramDtype];
    for (const p of b.params) {
      if (owner.get(p.name) !== group.rank) continue;
      // Its view: in the param buffer, or in its bucket's buffer (sharded params, gathered for the save).
      const view = ddp.buffers[i]!.paramView(p.name);
      model.push({
        name: p.name,
        dtype: SAFETENSORS_DTYPE[b.paramDtype],
        shape: p.shape,
        buffer: view.buffer,
        byteOffset: view.offset * width,
        bytes: p.numel * width,
      });
    }
  }
  for (const [k, tensors] of packFiles(model, maxFileBytes).entries()) {
    const file = `model-r${rank}-${String(k).padStart(3, '0')}.safetensors`;
    files.push({ file, tensors, metadata: { format: 'pt' } });
    for (const t of tensors) manifest.model[t.name] = { file, tensor: t.name };
  }

  // With the non-distributed optimizer every rank holds all state: each writes its params' share.
  const pieces = optimizerState ? optimizer.statePieces().filter((p) => optimizer.distributed || owner.get(p.name) === group.rank) : [];
  const split: (StatePiece & { bytes: number })[] = [];
  for (const p of pieces) {
    const width = BYTES[p.dtype];
    // 16-bit state splits at even elements: the GPU reads whole words.
    const elementsPerFile = Math.max(2, Math.floor(maxFileBytes / width / 2) * 2);
    for (let s = p.range.start; s < p.range.end; s += elementsPerFile) {
      const e = Math.min(p.range.end, s + elementsPerFile);
      split.push({ ...p, range: { start: s, end: e }, offset: p.offset + (s - p.range.start), bytes: (e - s) * width });
    }
  }
  for (const [k, group_] of packFiles(split, maxFileBytes).entries()) {
    const file = `optim-r${rank}-${String(k).padStart(3, '0')}.safetensors`;
    const tensors = group_.map((p) => ({
      name: `${p.kind}/${p.name}/${p.range.start}-${p.range.end}`,
      dtype: SAFETENSORS_DTYPE[p.dtype],
      shape: [p.range.end - p.range.start],
      buffer: p.buffer,
      byteOffset: p.offset * BYTES[p.dtype],
    }));
    files.push({ file, tensors, metadata: {} });
    group_.forEach((p, j) => {
      const byKind = manifest.state[p.kind] ?? {};
      manifest.state[p.kind] = byKind;
      const refs = byKind[p.name] ?? [];
      byKind[p.name] = refs;
      refs.push({ start: p.range.start, end: p.range.end, file, tensor: tensors[j]!.name });
    });
  }
  return { files, manifest };
}

const rankManifestName = (rank: number) => `rank-${String(rank).padStart(5, '0')}.json`;

/** This rank's files streamed from the GPU into `tmp`, and its manifest beside them. */
async function writeRankFiles(tmp: string, parts: CheckpointParts, options: SaveOptions): Promise<RankManifest> {
  const { iteration } = options;
  const { files, manifest } = planRankFiles(parts, options.maxFileBytes ?? 2 ** 31, options.optimizerState);
  for (const [k, f] of files.entries()) {
    if (k === files.length - 1 && stallSave(iteration)) await new Promise(() => undefined);
    const written = await writeTensorFile(parts.ddp.ctx, join(tmp, f.file), f.tensors, f.metadata);
    manifest.files[f.file] = { bytes: written.bytes, crc32: written.crc32 };
  }
  writeFileAtomic(join(tmp, rankManifestName(parts.group.rank)), JSON.stringify(manifest));
  return manifest;
}

/**
 * The start of every save, sync or async: the params settled, then the first of its three
 * agreements, rank 0 having SAVE ready and an empty temporary folder in it. Returns that folder.
 */
async function beginSave(saveDir: string, parts: CheckpointParts, options: SaveOptions): Promise<string> {
  checkIteration(options.iteration);
  const tmp = join(saveDir, `${iterName(options.iteration)}.tmp`);
  await parts.ddp.finishParamSync();
  await parts.ddp.gatherAllParams(); // sharded params: whole while the save reads them (a collective)
  const work = async () => {
    if (parts.group.rank !== 0) return;
    mkdirSync(saveDir, { recursive: true });
    cleanLeftovers(saveDir);
    mkdirSync(tmp);
  };
  await together(parts.group, settle(work()), options.timeoutMs ?? 2 * 3600_000, `saving iteration ${options.iteration} to ${saveDir}`);
  return tmp;
}

/** A rank's writing as `together` takes it (its error message, or '') with the manifest it wrote. */
function outcome(writing: Promise<RankManifest>): Promise<string> & { manifest: Promise<RankManifest | null> } {
  return Object.assign(settle(writing), { manifest: writing.catch(() => null) });
}

/** What index.json records besides the files, taken when the buffers are (the step, the loss scaler, the trainer's JSON). */
interface SavedState {
  /** With the optimizer's state: whose it is. */
  optimizer?: Optimizer['name'];
  step: number;
  scaler: Record<string, number> | null;
  extra: Record<string, unknown>;
}

function stateOf(parts: CheckpointParts, options: SaveOptions): SavedState {
  const { optimizer } = parts;
  // A copy through JSON: a background save commits it later, when the trainer's objects have moved on.
  const extra = JSON.parse(JSON.stringify(options.extra ?? {})) as Record<string, unknown>;
  if (options.optimizerState === false) return { step: 0, scaler: null, extra };
  return { optimizer: optimizer.name, step: optimizer.stepCount, scaler: optimizer.scalerState() as Record<string, number> | null, extra };
}

/** Rank 0: merge every rank's manifest into index.json and the weight map, commit the folder, prune. Returns the folder and the checkpoint's bytes. */
function commitSave(
  saveDir: string,
  tmp: string,
  parts: CheckpointParts,
  options: SaveOptions,
  state: SavedState,
): { dir: string; totalBytes: number } {
  const { group, ddp, optimizer } = parts;
  const manifests = Array.from(
    { length: group.worldSize },
    (_, r) => JSON.parse(readFileSync(join(tmp, rankManifestName(r)), 'utf8')) as RankManifest,
  );
  const index: CheckpointIndex = {
    format: CHECKPOINT_FORMAT,
    iteration: options.iteration,
    step: state.step,
    savedAtDataParallelSize: group.worldSize,
    distributedOptimizer: optimizer.distributed,
    layoutHash: layoutHash(ddp.layout),
    params: ddp.layout.buffers.flatMap((b) => b.params.map((p) => ({ name: p.name, shape: [...p.shape], dtype: b.paramDtype }))),
    scaler: state.scaler,
    extra: state.extra,
    ...(state.optimizer ? { optimizer: state.optimizer } : {}),
    files: Object.assign({}, ...manifests.map((m) => m.files)) as Record<string, FileMeta>,
    model: Object.assign({}, ...manifests.map((m) => m.model)) as CheckpointIndex['model'],
    state: {},
  };
  for (const kind of STATE_KINDS) {
    for (const m of manifests) {
      for (const [name, refs] of Object.entries(m.state[kind] ?? {})) {
        index.state[kind] ??= {};
        index.state[kind][name] ??= [];
        index.state[kind][name].push(...refs);
      }
    }
  }
  const totalBytes = Object.values(index.files).reduce((s, f) => s + f.bytes, 0);
  writeFileAtomic(join(tmp, INDEX), `${JSON.stringify(index)}\n`);
  const weightMap = Object.fromEntries(Object.entries(index.model).map(([name, ref]) => [name, ref.file]));
  writeFileAtomic(
    join(tmp, 'model.safetensors.index.json'),
    `${JSON.stringify({ metadata: { total_size: ddp.layout.buffers.reduce((s, b) => s + b.paramNumel * BYTES[b.paramDtype], 0), format: CHECKPOINT_FORMAT }, weight_map: weightMap }, null, 1)}\n`,
  );
  const previous = trackedIteration(saveDir);
  const dir = commitCheckpoint(saveDir, tmp, options.iteration);
  if (options.retainInterval) dropUnretained(saveDir, previous, options.iteration, options.retainInterval);
  pruneCheckpoints(saveDir, options.retain ?? 0);
  return { dir, totalBytes };
}

/** The last two agreements of a save: every rank's files written (else the folder is dropped), then rank 0's commit. */
async function agreeAndCommit(
  saveDir: string,
  tmp: string,
  parts: CheckpointParts,
  options: SaveOptions,
  state: SavedState,
  written: Promise<string> & { manifest: Promise<RankManifest | null> },
): Promise<SavedCheckpoint> {
  const { group } = parts;
  const deadlineMs = options.timeoutMs ?? 2 * 3600_000;
  const what = `saving iteration ${options.iteration} to ${saveDir}`;
  try {
    await together(group, written, deadlineMs, what);
  } catch (error) {
    if (group.rank === 0) rmSync(tmp, { recursive: true, force: true });
    throw error;
  }
  let dir = join(saveDir, iterName(options.iteration));
  let totalBytes = 0;
  const commit = async () => {
    if (group.rank !== 0) return;
    ({ dir, totalBytes } = commitSave(saveDir, tmp, parts, options, state));
  };
  await together(group, settle(commit()), deadlineMs, what);
  const manifest = await written.manifest;
  const bytesWritten = Object.values(manifest!.files).reduce((s, f) => s + f.bytes, 0);
  return { dir, iteration: options.iteration, bytesWritten, totalBytes };
}

function checkIteration(iteration: number): void {
  if (!Number.isSafeInteger(iteration) || iteration < 0)
    throw new CheckpointError(`save: iteration must be a non-negative integer, got ${iteration}`);
}

/**
 * Save (a collective: every rank calls it) into SAVE/iter_NNNNNNN and point the tracker at it.
 * Throws a CheckpointError on every rank if any rank failed; the previous checkpoint stays.
 */
export async function saveCheckpoint(saveDir: string, parts: CheckpointParts, options: SaveOptions): Promise<SavedCheckpoint> {
  const tmp = await beginSave(saveDir, parts, options);
  // Sharded params are whole for the save's reads only.
  const writing = writeRankFiles(tmp, parts, options).finally(() => parts.ddp.releaseParams());
  return agreeAndCommit(saveDir, tmp, parts, options, stateOf(parts, options), outcome(writing));
}

/** Where a background save stands on this rank: its files still being written, written, or failed. */
export type AsyncSaveState = 'writing' | 'written' | 'failed';

/**
 * A save whose files this rank writes in the background (see `startAsyncSave`). Training goes on;
 * the checkpoint counts only once `finish` (a collective) has seen every rank's files durable and
 * rank 0 has moved the tracker, so a crash before then leaves the previous checkpoint the latest.
 */
export class AsyncSave {
  private status = '';
  private done = false;
  private readonly writing: Promise<void>;

  constructor(
    readonly saveDir: string,
    private readonly tmp: string,
    private readonly parts: CheckpointParts,
    readonly options: SaveOptions,
    private readonly state_: SavedState,
    private readonly manifest: RankManifest,
    private readonly images: { file: string; image: FileImage }[],
  ) {
    this.writing = (async () => {
      try {
        for (const [k, { file, image }] of images.entries()) {
          if (k === images.length - 1 && stallSave(options.iteration)) await new Promise(() => undefined);
          this.manifest.files[file] = await writeFileImage(join(tmp, file), image);
        }
        await writeFile(join(tmp, rankManifestName(parts.group.rank)), JSON.stringify(manifest));
        const fh = await openAsync(join(tmp, rankManifestName(parts.group.rank)), 'r');
        await fh.sync().finally(() => fh.close());
      } catch (error) {
        this.status = message(error);
      } finally {
        this.done = true;
      }
    })();
  }

  get iteration(): number {
    return this.options.iteration;
  }

  /** This rank's side only: whether its writer still runs. Ranks agree on it through a collective before `finish`. */
  get state(): AsyncSaveState {
    return !this.done ? 'writing' : this.status ? 'failed' : 'written';
  }

  /** The host memory of the images, for the next save to reuse once this one is finished. */
  memory(): Uint8Array[] {
    return this.images.map((i) => new Uint8Array(i.image.bytes.buffer, i.image.bytes.byteOffset));
  }

  /** Wait for every rank's writer, agree, and commit (a collective: every rank calls it). */
  async finish(): Promise<SavedCheckpoint> {
    const written = outcome(
      this.writing.then(() => {
        if (this.status) throw new CheckpointError(this.status);
        return this.manifest;
      }),
    );
    return agreeAndCommit(this.saveDir, this.tmp, this.parts, this.options, this.state_, written);
  }
}

/**
 * Host memory for this rank's background saves, its pages touched now: memory a save copies into
 * for the first time costs a page fault per page, which measured here (2 vCPUs, a VM) made the
 * copy of 400 MiB take 2.7 s instead of 0.08 s. Pass it to `startAsyncSave` as `reuse`.
 */
export function reserveAsyncSaveMemory(
  parts: CheckpointParts,
  options: Pick<SaveOptions, 'maxFileBytes' | 'optimizerState'> = {},
): Uint8Array[] {
  return planRankFiles(parts, options.maxFileBytes ?? 2 ** 31, options.optimizerState).files.map((f) =>
    new Uint8Array(imageBytes(f.tensors, f.metadata)).fill(0),
  );
}

/**
 * Start a save that writes in the background (Megatron's --async-save; a collective: every rank
 * calls it). Returns once this rank's shard and params are copied to host memory: the buffers may
 * change from then on. Call `finish` on every rank at the same point later (the trainer does it at
 * the first iteration boundary where every rank's writer is done, or before the next save).
 * `reuse` is memory from `reserveAsyncSaveMemory` or an earlier AsyncSave's `memory()`.
 */
export async function startAsyncSave(
  saveDir: string,
  parts: CheckpointParts,
  options: SaveOptions,
  reuse: Uint8Array[] = [],
): Promise<AsyncSave> {
  const tmp = await beginSave(saveDir, parts, options);
  const { files, manifest } = planRankFiles(parts, options.maxFileBytes ?? 2 ** 31, options.optimizerState);
  const spare = [...reuse];
  const take = (size: number) => {
    const i = spare.findIndex((m) => m.byteLength >= size);
    return i < 0 ? undefined : spare.splice(i, 1)[0];
  };
  const images: { file: string; image: FileImage }[] = [];
  try {
    for (const f of files) images.push({ file: f.file, image: await snapshotTensorFile(parts.ddp.ctx, f.tensors, f.metadata, take) });
  } finally {
    await parts.ddp.releaseParams(); // sharded params were whole for the copy only
  }
  return new AsyncSave(saveDir, tmp, parts, options, stateOf(parts, options), manifest, images);
}

/** The iteration folder `path` means (a --save folder or one iter_NNNNNNN folder) and its index.json, checked field by field. */
export function readCheckpointIndex(path: string): { dir: string; index: CheckpointIndex } {
  const { dir } = resolveCheckpoint(path);
  const indexPath = join(dir, INDEX);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch {
    throw new CheckpointError(`${indexPath}: not valid JSON`);
  }
  return { dir, index: checkIndex(raw, indexPath, CHECKPOINT_FORMAT) };
}

/** Read and check index.json (and that every file it lists is there) against this model's layout. */
export function readIndex(path: string, layout: ModelLayout): { dir: string; index: CheckpointIndex } {
  const { dir, index } = readCheckpointIndex(path);
  const want = layoutHash(layout);
  if (index.layoutHash !== want) {
    throw new CheckpointError(
      `${join(dir, INDEX)}: field 'layoutHash' is ${index.layoutHash} but this model's is ${want}: the params (names, shapes, dtypes) differ; give the model flags and the precision it was saved with`,
    );
  }
  for (const file of Object.keys(index.files)) {
    const p = join(dir, file);
    if (!existsSync(p)) throw new CheckpointError(`${p}: missing (index.json lists it)`);
  }
  return { dir, index };
}

/** Each file of a checkpoint opened once, on first use; `close` closes them all. */
function checkedFiles(dir: string, index: CheckpointIndex): { fileOf: (name: string) => CheckedFile; close: () => Promise<void> } {
  const files = new Map<string, CheckedFile>();
  return {
    fileOf: (name) => {
      let f = files.get(name);
      if (!f) {
        f = new CheckedFile(join(dir, name), index.files[name]!);
        files.set(name, f);
      }
      return f;
    },
    close: async () => {
      await Promise.all([...files.values()].map((f) => f.close()));
    },
  };
}

export interface LoadedCheckpoint {
  dir: string;
  index: CheckpointIndex;
  /** Bytes this rank read. */
  bytesRead: number;
}

/**
 * Where each tensor's bytes are in a file (`locate`, checked against the index and the expected
 * dtype and size) and which dtype it was saved as (`dtypeOf`): from the files' safetensors headers.
 */
function tensorLocator(dir: string, index: CheckpointIndex) {
  const headers = new Map<string, ReturnType<typeof readHeader>>();
  const entry = (file: string, tensor: string) => {
    let header = headers.get(file);
    if (!header) {
      const path = join(dir, file);
      const fd = openSync(path, 'r');
      try {
        header = readHeader(fd, path);
      } finally {
        closeSync(fd);
      }
      headers.set(file, header);
    }
    const e = header.entries.get(tensor);
    if (!e) throw new CheckpointError(`${header.file}: no tensor '${tensor}' (index.json points to it)`);
    return { header, e };
  };
  const locate = (file: string, tensor: string, dtype: SafetensorsDtype, numel: number): { start: number; end: number } => {
    const { header, e } = entry(file, tensor);
    const width = dtype === 'F32' ? 4 : 2;
    if (e.dtype !== dtype || e.end - e.begin !== numel * width) {
      throw new CheckpointError(
        `${header.file}: tensor '${tensor}' is ${e.dtype} [${e.shape.join(', ')}], expected ${dtype} of ${numel} elements`,
      );
    }
    if (header.dataStart + e.end > index.files[file]!.bytes)
      throw new CheckpointError(`${header.file}: tensor '${tensor}' runs past the file's size in index.json`);
    return { start: header.dataStart + e.begin, end: header.dataStart + e.end };
  };
  const dtypeOf = (file: string, tensor: string): StateDtype => {
    const { header, e } = entry(file, tensor);
    const dtype = STATE_DTYPE_OF[e.dtype];
    if (!dtype) throw new CheckpointError(`${header.file}: tensor '${tensor}' is ${e.dtype}; optimizer state is F32, BF16 or F16`);
    return dtype;
  };
  return Object.assign(locate, { dtypeOf });
}

const STATE_DTYPE_OF = Object.fromEntries(Object.entries(SAFETENSORS_DTYPE).map(([dtype, st]) => [st, dtype])) as Partial<
  Record<SafetensorsDtype, StateDtype>
>;

/**
 * A writer of `from` elements that hands `sink` the same elements as `to` (rounded to nearest even
 * when narrower); bytes may arrive split anywhere.
 */
function convertingState(from: StateDtype, to: StateDtype, sink: (bytes: Uint8Array) => void): (bytes: Uint8Array) => void {
  if (from === to) return sink;
  const width = BYTES[from];
  let carry = new Uint8Array(0);
  return (bytes) => {
    const all = new Uint8Array(carry.length + bytes.length);
    all.set(carry);
    all.set(bytes, carry.length);
    const n = Math.floor(all.length / width);
    carry = all.slice(n * width);
    const values = from === 'float32' ? new Float32Array(all.buffer, 0, n) : wordsToFloat32(new Uint16Array(all.buffer, 0, n), from);
    if (to === 'float32') {
      sink(new Uint8Array(values.buffer, values.byteOffset, n * 4));
      return;
    }
    const words = new Uint16Array(n);
    float32ToWords(values, to, words);
    sink(new Uint8Array(words.buffer));
  };
}

/** Every param of `buffers` from the checkpoint's model files (whole tensors in the buffers' dtypes); bytes read. */
async function readModelParams(
  dir: string,
  index: CheckpointIndex,
  buffers: readonly ParamAndGradBuffer[],
  fileOf: (name: string) => CheckedFile,
  locate: ReturnType<typeof tensorLocator>,
): Promise<number> {
  let bytesRead = 0;
  for (const b of buffers) {
    const width = BYTES[b.layout.paramDtype];
    for (const p of b.layout.params) {
      const ref = index.model[p.name];
      if (!ref) throw new CheckpointError(`${join(dir, INDEX)}: field 'model' has no entry for '${p.name}'`);
      const at = locate(ref.file, ref.tensor, SAFETENSORS_DTYPE[b.layout.paramDtype], p.numel);
      // Sharded params: only the part in this rank's shard of the param's bucket.
      const part = b.sharding?.params
        ? b.shardPart(p.name, 'params', b.sharding.rank, b.sharding.d)
        : { from: p.start, to: p.end, place: { buffer: b.params, offset: p.start } };
      if (!part) continue;
      const { from, to, place } = part;
      const upload = new UploadStream(b.ctx, place.buffer, place.offset * width);
      await fileOf(ref.file).read(at.start + (from - p.start) * width, at.start + (to - p.start) * width, (bytes) => upload.write(bytes));
      bytesRead += upload.end();
    }
  }
  return bytesRead;
}

/**
 * Model params only (inference: `webtron sample`, `webtron export`) into `buffers` (a LocalParams'),
 * whose params must have the checkpoint's names, shapes and dtypes.
 */
export async function loadModelParams(
  path: string,
  buffers: readonly ParamAndGradBuffer[],
): Promise<{ dir: string; index: CheckpointIndex }> {
  const { dir, index } = readCheckpointIndex(path);
  const files = checkedFiles(dir, index);
  try {
    await readModelParams(dir, index, buffers, files.fileOf, tensorLocator(dir, index));
    await buffers[0]?.ctx.sync();
  } finally {
    await files.close();
  }
  return { dir, index };
}

/** A checkpoint's model params straight from its files, each checked and streamed in any dtype (see `openModelTensors`). */
export interface ModelTensors {
  dir: string;
  index: CheckpointIndex;
  /** The params in the model's order, each in the dtype the checkpoint holds it. */
  params: { name: string; shape: number[]; dtype: ParamDtype }[];
  /** Param `name`'s bytes as `dtype` (rounded to nearest even when narrower), checked block by block, in order to `sink`. */
  stream(name: string, dtype: ParamDtype, sink: (bytes: Uint8Array) => void): Promise<void>;
  /** Param `name`'s values as fp32, whole. */
  values(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/**
 * The model params of the checkpoint at `path` (a --save folder or one iter_NNNNNNN folder), read
 * from its files without a GPU: memory stays at a few chunks whatever the model's size.
 */
export function openModelTensors(path: string): ModelTensors {
  const { dir, index } = readCheckpointIndex(path);
  const files = checkedFiles(dir, index);
  const locate = tensorLocator(dir, index);
  const params = index.params.map((p) => ({ name: p.name, shape: p.shape, dtype: p.dtype as ParamDtype }));
  return {
    dir,
    index,
    params,
    async stream(name, dtype, sink) {
      const p = params.find((x) => x.name === name);
      const ref = index.model[name];
      if (!p || !ref) throw new CheckpointError(`${join(dir, INDEX)}: field 'model' has no entry for '${name}'`);
      const at = locate(
        ref.file,
        ref.tensor,
        SAFETENSORS_DTYPE[p.dtype],
        p.shape.reduce((a, b) => a * b, 1),
      );
      await files.fileOf(ref.file).read(at.start, at.end, convertingState(p.dtype, dtype, sink));
    },
    async values(name) {
      const chunks: Uint8Array[] = [];
      await this.stream(name, 'float32', (chunk) => chunks.push(chunk.slice()));
      const bytes = Buffer.concat(chunks);
      return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    },
    close: files.close,
  };
}

/**
 * Whether a checkpoint holds the optimizer's state: it names its optimizer, or (written before it
 * did) holds Adam's moments; neither means it was saved without (--no-save-optim).
 */
export function savedOptimizerState(index: CheckpointIndex): boolean {
  return index.optimizer !== undefined || Object.keys(index.state).length > 0;
}

/**
 * Why the optimizer state a checkpoint holds cannot resume a run of `optimizer` keeping `moments`
 * (another optimizer's state, or SGD's saved at momentum 0), or null.
 */
export function otherOptimizer(index: CheckpointIndex, optimizer: Optimizer['name'], moments: readonly string[]): string | null {
  const saved = index.optimizer ?? 'adam';
  const alone = 'or take its params alone with --no-load-optim or --finetune';
  if (saved !== optimizer)
    return `holds the state of --optimizer ${saved}, not of this run's ${optimizer}; resume with --optimizer ${saved}, ${alone}`;
  // A checkpoint of Adam or Lion without its moments is damaged: the load names what is missing.
  const missing = optimizer === 'sgd' && moments.find((kind) => !(kind in index.state));
  if (missing) return `holds no ${missing}: saved by SGD at --sgd-momentum 0, which keeps none; resume with --sgd-momentum 0, ${alone}`;
  return null;
}

/** This rank's part of a load: every model param, and the state pieces it holds (with `optimizerState`). */
async function loadRank(path: string, parts: CheckpointParts, optimizerState: boolean): Promise<LoadedCheckpoint> {
  const { ddp } = parts;
  const ctx = ddp.ctx;
  const { dir, index } = readIndex(path, ddp.layout);
  const { fileOf, close } = checkedFiles(dir, index);
  const locate = tensorLocator(dir, index);
  let bytesRead = 0;
  try {
    await ddp.finishParamSync();
    bytesRead += await readModelParams(dir, index, ddp.buffers, fileOf, locate);
    ddp.paramsWritten();
    if (optimizerState) {
      if (!savedOptimizerState(index))
        throw new CheckpointError(
          `${join(dir, INDEX)}: saved without the optimizer's state (--no-save-optim); load its params with --no-load-optim or --finetune`,
        );
      const mismatch = otherOptimizer(index, parts.optimizer.name, parts.optimizer.moments);
      if (mismatch) throw new CheckpointError(`${join(dir, INDEX)}: ${mismatch}`);
      bytesRead += await readOptimizerState(dir, index, parts, fileOf, locate);
    }
    await ctx.sync();
  } finally {
    await close();
  }
  return { dir, index, bytesRead };
}

/** This rank's pieces of Adam's state into its buffers, then the optimizer's step and the loss scaler's state. */
async function readOptimizerState(
  dir: string,
  index: CheckpointIndex,
  { ddp, optimizer }: CheckpointParts,
  fileOf: (name: string) => CheckedFile,
  locate: ReturnType<typeof tensorLocator>,
): Promise<number> {
  let bytesRead = 0;
  for (const piece of optimizer.statePieces()) {
    const refs = index.state[piece.kind]?.[piece.name] ?? [];
    let covered = 0;
    for (const ref of refs) {
      const start = Math.max(ref.start, piece.range.start);
      const end = Math.min(ref.end, piece.range.end);
      if (start >= end) continue;
      // The state as it was saved (fp32, or 16-bit from the precision-aware optimizer), converted
      // on its way when this run stores it otherwise.
      const saved = locate.dtypeOf(ref.file, ref.tensor);
      const from = BYTES[saved];
      const at = locate(ref.file, ref.tensor, SAFETENSORS_DTYPE[saved], ref.end - ref.start);
      const upload = new UploadStream(ddp.ctx, piece.buffer, (piece.offset + start - piece.range.start) * BYTES[piece.dtype]);
      const write = convertingState(saved, piece.dtype, (bytes) => upload.write(bytes));
      await fileOf(ref.file).read(at.start + (start - ref.start) * from, at.start + (end - ref.start) * from, write);
      bytesRead += upload.end();
      covered += end - start;
    }
    if (covered !== piece.range.end - piece.range.start) {
      throw new CheckpointError(
        `${join(dir, INDEX)}: ${piece.kind} of '${piece.name}' covers ${covered} of elements ${piece.range.start}..${piece.range.end} this rank needs`,
      );
    }
  }
  optimizer.stateLoaded(index.step);
  if (optimizer.scaler && index.scaler) {
    try {
      optimizer.scaler.loadStateDict(index.scaler as unknown as LossScalerState);
    } catch (error) {
      throw new CheckpointError(`${join(dir, INDEX)}: field 'scaler': ${(error as Error).message}`);
    }
  }
  return bytesRead;
}

/**
 * Load SAVE (the tracker's iteration) or SAVE/iter_NNNNNNN into this job's buffers and optimizer,
 * whatever d it was saved at (a collective: every rank calls it; an error on one is an error on all).
 * `optimizerState: false` loads the model params only: the optimizer keeps its fresh state (zero
 * moments, step 0, its own loss scale), and 16-bit params' main params follow the loaded params.
 */
export async function loadCheckpoint(
  path: string,
  parts: CheckpointParts,
  options: { timeoutMs?: number; optimizerState?: boolean } = {},
): Promise<LoadedCheckpoint> {
  const loading = loadRank(path, parts, options.optimizerState ?? true);
  await together(parts.group, settle(loading), options.timeoutMs ?? 2 * 3600_000, `loading ${path}`);
  return loading;
}
