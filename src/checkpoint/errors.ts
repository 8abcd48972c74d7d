/** A checkpoint that cannot be written or read: the message names the file and the field. */
import { WebtronError } from '../errors.js';
export class CheckpointError extends WebtronError {
  override name = 'CheckpointError';
  override readonly code: string = 'ERR_CHECKPOINT';
}
