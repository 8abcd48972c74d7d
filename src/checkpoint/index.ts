/**
 * `webtron/checkpoint`: Megatron-layout checkpoints of a DDP model and its optimizer.
 *
 * @module webtron/checkpoint
 */
export {
  saveCheckpoint,
  startAsyncSave,
  reserveAsyncSaveMemory,
  AsyncSave,
  type AsyncSaveState,
  loadCheckpoint,
  loadModelParams,
  readCheckpointIndex,
  CHECKPOINT_FORMAT,
  type CheckpointParts,
  type SaveOptions,
  type SavedCheckpoint,
  type LoadedCheckpoint,
  type CheckpointIndex,
} from './checkpoint.js';
export { resolveCheckpoint, savedIterations, TRACKER } from './dir.js';
export { CheckpointError } from './errors.js';
