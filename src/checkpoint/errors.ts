/** A checkpoint that cannot be written or read: the message names the file and the field. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}
