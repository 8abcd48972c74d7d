/**
 * webtron's one error family. A `WebtronError` is something a user can cause or meet: a wrong
 * option, a missing or corrupt file, a shape that cannot work, a peer that died, a run that
 * diverged. Anything else that escapes webtron is a bug in webtron. Each area's subclass lives
 * with its code (`CheckpointError` in src/checkpoint, `CollectiveError` in src/collectives, …).
 */

export class WebtronError extends Error {
  override name = 'WebtronError';
  /**
   * A stable identifier for programs to branch on ("ERR_CHECKPOINT"): the message's wording may
   * change between versions, the code does not.
   */
  readonly code: string = 'ERR_WEBTRON';
  /**
   * What `webtron` exits with: 2 when what it was given is wrong, 1 when a run failed; 16 and 17 when
   * a result failed validation (Megatron's codes, src/train/rerun.ts).
   */
  readonly exitCode: number = 2;
  /**
   * Every rank of a job meets this error the same way (a check of the flags against the model):
   * rank 0 says it, and the other workers leave without repeating it.
   */
  sameOnEveryRank = false;

  constructor(
    message: string,
    /**
     * The API options the message names, spelled as the API spells them (`clipGrad`,
     * `hiddenSize`); a command line says its flag for each instead.
     */
    readonly options: readonly string[] = [],
  ) {
    super(message);
  }
}

/**
 * An option of the library's API has a value it cannot use. `option` is the name as the API spells
 * it (`clipGrad`, `beta1`); the CLI says which flag that is.
 */
export class ConfigError extends WebtronError {
  override name = 'ConfigError';
  override readonly code = 'ERR_CONFIG';
  constructor(
    message: string,
    /** The option at fault, as the API spells it, when there is one. */
    readonly option?: string,
  ) {
    super(message, option ? [option] : []);
  }
}
