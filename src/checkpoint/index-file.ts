/**
 * index.json of a checkpoint: its type, the layout hash that says which model it belongs to, and a
 * field-by-field check of a file read from disk (every problem names the field). Pure.
 */
import { OPTIMIZER_NAMES, type OptimizerName } from '../optimizer/momentum-math.js';
import { createHash } from 'node:crypto';
import type { ModelLayout } from '../ddp/layout.js';
import { BLOCK_BYTES } from './blocks.js';
import { CheckpointError } from './errors.js';

export interface FileMeta {
  bytes: number;
  /** CRC-32 of every BLOCK_BYTES block (blocks.ts). */
  crc32: number[];
}

/** Elements [start, end) of one param's state kept as tensor `tensor` of `file`. */
export interface PieceRef {
  start: number;
  end: number;
  file: string;
  tensor: string;
}

export interface CheckpointIndex {
  format: string;
  iteration: number;
  /** Adam steps taken (skipped fp16 steps do not count). */
  step: number;
  /** Information only: it loads at any d. */
  savedAtDataParallelSize: number;
  distributedOptimizer: boolean;
  layoutHash: string;
  params: { name: string; shape: number[]; dtype: string }[];
  scaler: Record<string, number> | null;
  extra: Record<string, unknown>;
  files: Record<string, FileMeta>;
  /** Where each param's values are (a whole tensor in its own dtype). */
  model: Record<string, { file: string; tensor: string }>;
  /** Per state kind (exp_avg, exp_avg_sq, momentum_buffer, main_params) and param: the pieces that hold it. */
  state: Record<string, Record<string, PieceRef[]>>;
  /** The optimizer whose state it holds (--optimizer); absent without its state, or from Adam before this field. */
  optimizer?: OptimizerName;
}

/** A hash of what the checkpoint's tensors mean: names, shapes and dtypes, in order; not d or buckets. */
export function layoutHash(layout: ModelLayout): string {
  // No grads are saved: bf16 main grads (--main-grads-dtype bf16) hash as bf16 params' fp32 grads,
  // so that either run resumes from the other's checkpoints.
  const grads = (b: ModelLayout['buffers'][number]) => (b.gradDtype === 'bfloat16' ? 'float32' : b.gradDtype);
  const params = layout.buffers.flatMap((b) => b.params.map((p) => [p.name, p.shape, b.paramDtype, grads(b)]));
  return createHash('sha256').update(JSON.stringify(params)).digest('hex').slice(0, 16);
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isFileName = (v: unknown): v is string => typeof v === 'string' && /^[A-Za-z0-9._-]+$/.test(v) && !v.startsWith('.');

/** Check a parsed index.json field by field; the first problem is a CheckpointError naming the field. */
export function checkIndex(raw: unknown, path: string, format: string): CheckpointIndex {
  const bad = (field: string, what: string) => new CheckpointError(`${path}: field '${field}' ${what}`);
  if (!isObject(raw)) throw new CheckpointError(`${path}: not a JSON object`);
  if (raw.format !== format)
    throw bad('format', `is '${String(raw.format).slice(0, 60)}', expected '${format}' (a checkpoint of another webtron version?)`);
  for (const f of ['iteration', 'step', 'savedAtDataParallelSize'] as const)
    if (!isCount(raw[f])) throw bad(f, `is ${JSON.stringify(raw[f])}, expected a non-negative integer`);
  if (typeof raw.layoutHash !== 'string') throw bad('layoutHash', 'is missing');
  if (!Array.isArray(raw.params)) throw bad('params', 'is not a list');
  if (!isObject(raw.files)) throw bad('files', 'is not an object');
  for (const [name, meta] of Object.entries(raw.files)) {
    if (!isFileName(name)) throw bad('files', `names '${String(name).slice(0, 60)}', which is not a plain file name`);
    if (
      !isObject(meta) ||
      !isCount(meta.bytes) ||
      !Array.isArray(meta.crc32) ||
      !meta.crc32.every(isCount) ||
      meta.crc32.length !== Math.ceil(meta.bytes / BLOCK_BYTES)
    ) {
      throw bad(`files.${name}`, `needs 'bytes' and one 'crc32' per ${BLOCK_BYTES} B block`);
    }
  }
  const files = raw.files as Record<string, FileMeta>;
  if (!isObject(raw.model)) throw bad('model', 'is not an object');
  for (const [name, ref] of Object.entries(raw.model)) {
    if (!isObject(ref) || typeof ref.file !== 'string' || !(ref.file in files) || typeof ref.tensor !== 'string')
      throw bad(`model.${name}`, 'does not name a listed file and a tensor');
  }
  if (!isObject(raw.state)) throw bad('state', 'is not an object');
  for (const [kind, byParam] of Object.entries(raw.state)) {
    if (!isObject(byParam)) throw bad(`state.${kind}`, 'is not an object');
    for (const [name, refs] of Object.entries(byParam)) {
      if (!Array.isArray(refs)) throw bad(`state.${kind}.${name}`, 'is not a list');
      for (const r of refs) {
        if (
          !isObject(r) ||
          !isCount(r.start) ||
          !isCount(r.end) ||
          r.start >= r.end ||
          typeof r.file !== 'string' ||
          !(r.file in files) ||
          typeof r.tensor !== 'string'
        ) {
          throw bad(`state.${kind}.${name}`, 'holds a piece without a range, a listed file and a tensor');
        }
      }
    }
  }
  if (raw.scaler !== null && !isObject(raw.scaler)) throw bad('scaler', 'is neither null nor an object');
  if (!isObject(raw.extra)) throw bad('extra', 'is not an object');
  if (raw.optimizer !== undefined && !OPTIMIZER_NAMES.includes(raw.optimizer as OptimizerName))
    throw bad('optimizer', `is ${JSON.stringify(raw.optimizer)}, expected one of ${OPTIMIZER_NAMES.join(', ')}`);
  return raw as unknown as CheckpointIndex;
}
