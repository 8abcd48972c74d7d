/**
 * The optimizer checkpoint: one format, compact per-param tensors without padding, so that it loads
 * at any data-parallel size (each rank re-slices its shards from whole params).
 *
 *   DIR/index.json              format, step, hyper-parameters, clip, loss-scaler state, layout hash,
 *                               params (name, shape, dtype) and each file's size and SHA-256
 *   DIR/params.safetensors      model params (fp32: also the optimizer's main params)
 *   DIR/exp_avg.safetensors     Adam's first moments
 *   DIR/exp_avg_sq.safetensors  Adam's second moments
 *   DIR/main_params.safetensors fp32 main params (only when the model params are 16-bit)
 *
 * Rank 0 writes everything into a temporary folder and renames it over DIR (the previous checkpoint
 * is moved aside first and deleted last), so a crash leaves the previous checkpoint whole.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ProcessGroup } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { ModelLayout } from '../ddp/layout.js';
import type { AdamHyperParams } from './adam-math.js';
import type { LossScalerState } from './loss-scaler.js';
import type { Optimizer, OptimizerState } from './optimizer.js';
import { CheckpointError, decodeSafetensors, encodeSafetensors, type Tensor } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'webtron-optimizer-checkpoint/1';
const FILES = { params: 'params.safetensors', expAvg: 'exp_avg.safetensors', expAvgSq: 'exp_avg_sq.safetensors', main: 'main_params.safetensors' } as const;

export interface CheckpointIndex {
  format: string;
  step: number;
  hyper: AdamHyperParams;
  clipGrad: number;
  /** The dynamic loss scaler's state (fp16); null without one. */
  scaler: Record<string, number> | null;
  /** The data-parallel size it was saved at (information only: it loads at any). */
  savedAtDataParallelSize: number;
  layoutHash: string;
  params: { name: string; shape: number[]; dtype: string }[];
  files: Record<string, { bytes: number; sha256: string }>;
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** A hash of what the checkpoint's tensors mean: names, shapes and dtypes, in order; not d or buckets. */
export function layoutHash(layout: ModelLayout): string {
  const params = layout.buffers.flatMap((b) => b.params.map((p) => [p.name, p.shape, b.paramDtype, b.gradDtype]));
  return sha256(Buffer.from(JSON.stringify(params))).slice(0, 16);
}

export interface CheckpointParts {
  group: ProcessGroup;
  ddp: DistributedDataParallel;
  optimizer: Optimizer;
  hyper: AdamHyperParams;
  clipGrad?: number;
}

function tensors(layout: ModelLayout, values: Map<string, Float32Array>): Tensor[] {
  return layout.buffers.flatMap((b) => b.params.map((p) => ({ name: p.name, shape: p.shape, data: values.get(p.name)! })));
}

/** Save (a collective: every rank calls it; rank 0 writes). */
export async function saveCheckpoint(dir: string, parts: CheckpointParts): Promise<void> {
  const { group, ddp, optimizer } = parts;
  const state = await optimizer.exportState();
  const params = await ddp.exportParams();
  if (group.rank === 0) {
    const layout = ddp.layout;
    const contents: Record<string, Buffer> = {
      [FILES.params]: encodeSafetensors(tensors(layout, params), { kind: 'params' }),
      [FILES.expAvg]: encodeSafetensors(tensors(layout, state.expAvg), { kind: 'exp_avg' }),
      [FILES.expAvgSq]: encodeSafetensors(tensors(layout, state.expAvgSq), { kind: 'exp_avg_sq' }),
      ...(state.main ? { [FILES.main]: encodeSafetensors(tensors(layout, state.main), { kind: 'main_params' }) } : {}),
    };
    const index: CheckpointIndex = {
      format: CHECKPOINT_FORMAT,
      step: optimizer.stepCount,
      hyper: parts.hyper,
      clipGrad: parts.clipGrad ?? 0,
      scaler: optimizer.scalerState() as Record<string, number> | null,
      savedAtDataParallelSize: group.worldSize,
      layoutHash: layoutHash(layout),
      params: layout.buffers.flatMap((b) => b.params.map((p) => ({ name: p.name, shape: [...p.shape], dtype: b.paramDtype }))),
      files: Object.fromEntries(Object.entries(contents).map(([name, bytes]) => [name, { bytes: bytes.byteLength, sha256: sha256(bytes) }])),
    };
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    for (const [name, bytes] of Object.entries(contents)) writeFileSync(join(tmp, name), bytes);
    writeFileSync(join(tmp, 'index.json'), `${JSON.stringify(index, null, 1)}\n`);
    const old = `${dir}.old-${process.pid}`;
    if (existsSync(dir)) renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  }
  await group.barrier();
}

/** Read and verify a checkpoint; every problem names the file and the field. */
export function readCheckpoint(dir: string, layout: ModelLayout): { index: CheckpointIndex; params: Map<string, Float32Array>; state: OptimizerState } {
  const indexPath = join(dir, 'index.json');
  if (!existsSync(indexPath)) throw new CheckpointError(`${indexPath}: missing; is ${dir} a webtron optimizer checkpoint?`);
  let index: CheckpointIndex;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8')) as CheckpointIndex;
  } catch {
    throw new CheckpointError(`${indexPath}: not valid JSON`);
  }
  if (index.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${indexPath}: field 'format' is '${index.format}', expected '${CHECKPOINT_FORMAT}'`);
  const want = layoutHash(layout);
  if (index.layoutHash !== want) {
    throw new CheckpointError(`${indexPath}: field 'layoutHash' is ${index.layoutHash} but this model's is ${want}: the params (names, shapes, dtypes) differ`);
  }
  if (!Number.isInteger(index.step) || index.step < 0) throw new CheckpointError(`${indexPath}: field 'step' is ${String(index.step)}, expected a non-negative integer`);
  const read = (name: string): Map<string, Float32Array> => {
    const path = join(dir, name);
    const entry = index.files?.[name];
    if (!entry) throw new CheckpointError(`${indexPath}: field 'files' has no entry for ${name}`);
    if (!existsSync(path)) throw new CheckpointError(`${path}: missing`);
    const bytes = readFileSync(path);
    if (bytes.byteLength !== entry.bytes || sha256(bytes) !== entry.sha256) {
      throw new CheckpointError(`${path}: does not match field 'files.${name}.sha256' of index.json (corrupt or replaced); restore it or use an earlier checkpoint`);
    }
    const out = new Map<string, Float32Array>();
    for (const [tensorName, t] of decodeSafetensors(bytes, path)) out.set(tensorName, t.data);
    for (const b of layout.buffers) {
      for (const p of b.params) {
        const t = out.get(p.name);
        if (!t || t.length !== p.numel) throw new CheckpointError(`${path}: tensor '${p.name}' ${t ? `has ${t.length} values, expected ${p.numel}` : 'is missing'}`);
      }
    }
    return out;
  };
  const main = index.files?.[FILES.main] ? { main: read(FILES.main) } : {};
  return { index, params: read(FILES.params), state: { expAvg: read(FILES.expAvg), expAvgSq: read(FILES.expAvgSq), ...main } };
}

/** Load into this job's buffers and optimizer, whatever d the checkpoint was saved at. */
export async function loadCheckpoint(dir: string, parts: Omit<CheckpointParts, 'hyper'>): Promise<CheckpointIndex> {
  const { index, params, state } = readCheckpoint(dir, parts.ddp.layout);
  parts.ddp.importParams(params);
  parts.optimizer.importState(state, index.step);
  if (parts.optimizer.scaler && index.scaler) {
    try {
      parts.optimizer.scaler.loadStateDict(index.scaler as unknown as LossScalerState);
    } catch (error) {
      throw new CheckpointError(`${join(dir, 'index.json')}: field 'scaler': ${(error as Error).message}`);
    }
  }
  await parts.group.barrier();
  return index;
}
