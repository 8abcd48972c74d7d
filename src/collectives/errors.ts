/** Errors of the collectives layer: each names the op, its size, this rank and the peer where known. */
import { WebtronError } from '../errors.js';

export class CollectiveError extends WebtronError {
  override name = 'CollectiveError';
  override readonly code: string = 'ERR_COLLECTIVE';
  override readonly exitCode: 1 | 2 = 1;
}

/** A store request failed or timed out; the message names the keys. */
export class StoreError extends CollectiveError {
  override name = 'StoreError';
  override readonly code: string = 'ERR_STORE';
}

/** A peer failed the token check, spoke garbage, or the wire broke. */
export class TransportError extends CollectiveError {
  override name = 'TransportError';
  override readonly code: string = 'ERR_TRANSPORT';
  constructor(
    message: string,
    /** The peer rank, when known. */
    readonly peer?: number,
  ) {
    super(message);
  }
}

/** A collective op failed; the group is closed afterwards. */
export class CollectiveOpError extends CollectiveError {
  override name = 'CollectiveOpError';
  override readonly code: string = 'ERR_COLLECTIVE_OP';
  constructor(
    readonly op: string,
    readonly bytes: number,
    readonly rank: number,
    readonly peer: number | undefined,
    readonly reason: string,
  ) {
    super(`${op} of ${bytes} B failed on rank ${rank}${peer === undefined ? '' : ` (peer rank ${peer})`}: ${reason}`);
  }
}

/** Rendezvous did not complete: "k/n workers joined", with the missing ranks. */
export class JoinError extends CollectiveError {
  override name = 'JoinError';
  override readonly code: string = 'ERR_JOIN';
}
