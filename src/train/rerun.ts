/**
 * Megatron's result validation, one rank's part of it (its "rerun state machine",
 * megatron/core/rerun_state_machine.py, with the same modes, states, exit codes and tracker file).
 *
 * Checks look at a result of the iteration (a micro-batch's loss, the grad norm) before the
 * optimizer changes anything. With `validate_results` (Megatron's default) a rejected result on any
 * rank makes every rank run the iteration again, in place, on the same devices and the same data:
 * - the rerun gives another result: a transient fault; a fatal check stops the run (exit code 17,
 *   resume from the last checkpoint), another goes on with the rerun's grads;
 * - the rerun gives the same result: a fatal check saves a checkpoint from before the iteration and
 *   exits with code 16, for the job to resume on another device; there the iteration runs a third
 *   time: the same result again is a correct one (the data or the hyper-parameters are at fault), a
 *   different one blames the first device (a persistent fault); either way exit code 17. Resumed on
 *   the same node and device, it exits 16 again.
 * `report_stats` runs every iteration twice and reports how far the results moved (webtron's kernels
 * are deterministic, so a difference is itself news); `disabled` only checks.
 *
 * No check runs in a process's first iteration (no checkpoint could be taken before its first step),
 * as in Megatron; there, and with `disabled`, the NaN check after the step stops the run.
 *
 * The iteration's replay needs no saved state here: the data and the dropout masks are functions of
 * the sample index and the seed, and the optimizer has not moved.
 */
import { appendFileSync, closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { WebtronError } from '../errors.js';

export const RERUN_MODES = ['disabled', 'validate_results', 'report_stats'] as const;
export type RerunMode = (typeof RERUN_MODES)[number];
export const RERUN_DIAGNOSTICS = ['correct_result', 'transient_error', 'persistent_error'] as const;
export type RerunDiagnostic = (typeof RERUN_DIAGNOSTICS)[number];
export type RerunState =
  | 'not_running_yet'
  | 'initial_run'
  | 'rerunning_in_place'
  | 'will_rerun_from_checkpoint'
  | 'rerunning_from_checkpoint'
  | 'rerunning_again_from_checkpoint';

/** Exit code when the job must resume from the checkpoint just saved, on another device. */
export const EXIT_RESUME_TO_DISAMBIGUATE = 16;
/** Exit code when a result failed validation for good. */
export const EXIT_FAILED_ON_RESULT_VALIDATION = 17;

/** A result failed validation: the run ends with Megatron's exit code for it (16 or 17). */
export class ResultValidationError extends WebtronError {
  override name = 'ResultValidationError';
  override readonly code = 'ERR_RESULT_VALIDATION';
  override sameOnEveryRank = true;
  constructor(
    message: string,
    override readonly exitCode: number,
  ) {
    super(message);
  }
}

/** Where a rank runs: a rerun from a checkpoint must run on another node or device. */
export interface Placement {
  node: string;
  device: number;
}

/** A check of one iteration: the n-th call with this message on this rank. */
interface Call {
  message: string;
  sequence: number;
}

/**
 * How far apart two results are: 0 when equal (NaN equals NaN), infinity when one is NaN or infinite
 * and the other is not, else the relative difference |a − b| / ((a + b) / 2). Megatron's comparison.
 */
export function compareResults(a: number, b: number): number {
  if (a === b || (Number.isNaN(a) && Number.isNaN(b))) return 0;
  if (!Number.isFinite(a) || !Number.isFinite(b)) return Infinity;
  return Math.abs(((a - b) / (a + b)) * 2);
}

/** What a rank keeps in the checkpoint that a rerun asks for (numbers as strings: JSON has no NaN). */
export interface RerunRankState {
  rerunRequested: boolean;
  checkpointRequested: boolean;
  restartAgainRequested: boolean;
  continueRequested: boolean;
  injected: RerunDiagnostic | null;
  failedCall: Call | null;
  initialResult: string | null;
  suspicious: Placement | null;
  largeValueCounts: Record<string, number>;
  maxValues: Record<string, number>;
}

/** The checkpoint's record of a pending rerun: the state every rank shares and each rank's own. */
export interface RerunCheckpoint {
  mode: RerunMode;
  state: RerunState;
  /** The iteration to run again (from 1). */
  iteration: number;
  ranks: RerunRankState[];
}

/** The spread of one check's results between runs (report_stats). */
export interface DeterminismStats {
  total: number;
  identical: number;
  /** Sum and maximum of the relative differences. */
  sum: number;
  max: number;
}

export interface RerunOptions {
  mode: RerunMode;
  /** Inject a rejected result in about one check in this many (0: never). */
  errorInjectionRate: number;
  errorInjectionType: RerunDiagnostic;
  /** --result-rejected-tracker-filename: every rejected result appended as a line; null: none. */
  trackerFile: string | null;
  rank: number;
  where: Placement;
  /** A uniform integer in [0, n): the injector's draw. */
  randomInt: (n: number) => number;
  /** This rank's own report of what it found (every rank). */
  warn: (line: string) => void;
}

/** Each rank's flags → whether any rank's is set, flag by flag (a collective). */
export type AnyRank = (flags: boolean[]) => Promise<boolean[]>;

/** One rank's result validation: call `shouldRunForwardBackward` around an iteration, `validate` on its results, `shouldCheckpointAndExit` after. */
export class RerunStateMachine {
  mode: RerunMode;
  state: RerunState = 'not_running_yet';
  /** The iteration being run (from 1), for messages and the tracker file. */
  iteration = 0;
  private firstIterationComplete = false;
  private rerunRequested = false;
  private checkpointRequested = false;
  private restartAgainRequested = false;
  private continueRequested = false;
  private injected: RerunDiagnostic | null = null;
  private readonly counts = new Map<string, number>();
  private failedCall: Call | null = null;
  private initialResult: number | null = null;
  private suspicious: Placement | null = null;
  private largeValueCounts: Record<string, number> = {};
  private maxValues: Record<string, number> = {};
  /** report_stats: the first run's results by call. */
  private readonly saved = new Map<string, number>();
  /** report_stats: each check's spread so far, by message. */
  readonly stats = new Map<string, DeterminismStats>();
  /** What this rank's reruns found, for the message the run ends with. */
  readonly findings: string[] = [];

  constructor(private readonly o: RerunOptions) {
    this.mode = o.mode;
    if (!(Number.isInteger(o.errorInjectionRate) && o.errorInjectionRate >= 0))
      throw new WebtronError(`--error-injection-rate ${o.errorInjectionRate}: give a whole number of checks, 0 for none`);
    if (o.trackerFile !== null) {
      // Fail now, not at the first rejected result, when the file cannot take lines.
      try {
        closeSync(openSync(o.trackerFile, 'a'));
      } catch (e) {
        throw new WebtronError(
          `--result-rejected-tracker-filename ${o.trackerFile}: cannot append to it (${(e as Error).message}); give a writable path`,
        );
      }
    }
  }

  /**
   * Whether to run the iteration's forwards and backwards (again); after the first run and after a
   * rerun, every rank learns whether any rank asked for more (a collective then).
   */
  async shouldRunForwardBackward(anyRank: AnyRank): Promise<boolean> {
    this.counts.clear();
    switch (this.state) {
      case 'not_running_yet':
        if (this.mode !== 'disabled') {
          this.rerunRequested = false;
          this.checkpointRequested = false;
          this.restartAgainRequested = false;
          this.continueRequested = false;
        }
        this.state = 'initial_run';
        return true;
      case 'initial_run': {
        if (this.mode === 'disabled') {
          this.state = 'not_running_yet';
          return false;
        }
        const [rerun] = await anyRank([this.rerunRequested]);
        this.state = rerun ? 'rerunning_in_place' : 'not_running_yet';
        return rerun!;
      }
      case 'rerunning_in_place': {
        if (this.mode === 'report_stats') {
          this.state = 'not_running_yet';
          this.saved.clear();
          return false;
        }
        const [goOn, checkpoint] = await anyRank([this.continueRequested, this.checkpointRequested]);
        if (goOn) this.state = 'not_running_yet';
        else if (checkpoint) this.state = 'will_rerun_from_checkpoint';
        return false;
      }
      case 'will_rerun_from_checkpoint':
        this.state = 'rerunning_from_checkpoint';
        return true;
      case 'rerunning_from_checkpoint': {
        const [again, goOn] = await anyRank([this.restartAgainRequested, this.continueRequested]);
        if (again) this.state = 'rerunning_again_from_checkpoint';
        else if (goOn) this.state = 'not_running_yet';
        return false;
      }
      default:
        throw new Error(`rerun state machine: no run follows state ${this.state}`);
    }
  }

  /** After the runs of an iteration: whether to save a checkpoint, and the exit code to leave with (null: go on). */
  shouldCheckpointAndExit(): { checkpoint: boolean; exitCode: number | null } {
    this.firstIterationComplete = true;
    if (this.mode !== 'validate_results') return { checkpoint: false, exitCode: null };
    switch (this.state) {
      case 'rerunning_in_place':
      case 'rerunning_from_checkpoint':
        return { checkpoint: false, exitCode: EXIT_FAILED_ON_RESULT_VALIDATION };
      case 'will_rerun_from_checkpoint':
        return { checkpoint: true, exitCode: EXIT_RESUME_TO_DISAMBIGUATE };
      case 'rerunning_again_from_checkpoint':
        return { checkpoint: false, exitCode: EXIT_RESUME_TO_DISAMBIGUATE };
      default:
        return { checkpoint: false, exitCode: null };
    }
  }

  /**
   * Check `result`: `reject` says whether it is unexpected; a rerun's result counts as the same within
   * `tolerance` (relative); `fatal`: whether a confirmed rejection ends the run.
   */
  validate(result: number, reject: (value: number) => boolean, message: string, tolerance: number, fatal: boolean): void {
    if (this.mode === 'disabled') {
      if (!reject(result)) return;
      this.track('rerun_disabled', result, message);
      // A fatal one: the NaN check after the step stops the run, as Megatron's check stops it here.
      if (!fatal) this.o.warn(`iteration ${this.iteration}: unexpected result ${result} (${message})`);
      return;
    }
    const sequence = (this.counts.get(message) ?? 0) + 1;
    this.counts.set(message, sequence);
    const key = `${message}\n${sequence}`;
    if (this.mode === 'report_stats') {
      if (this.state === 'initial_run') {
        this.rerunRequested = true;
        this.saved.set(key, result);
      } else if (this.state === 'rerunning_in_place') {
        const first = this.saved.get(key);
        if (first === undefined)
          throw new Error(`rerun of iteration ${this.iteration}: the first run made no check '${message}' #${sequence}`);
        this.record(message, compareResults(first, result));
      }
      return;
    }
    if (this.state === 'initial_run' && !this.rerunRequested) {
      if (!this.firstIterationComplete) return;
      if (!(this.maybeInject() || reject(result))) return;
      this.failedCall = { message, sequence };
      this.initialResult = result;
      this.rerunRequested = true;
      this.track('initial_run', result, message);
      this.o.warn(`iteration ${this.iteration}: unexpected result ${result} (${message}, check #${sequence})`);
      return;
    }
    const failed = this.failedCall;
    if (!failed || failed.message !== message || failed.sequence !== sequence) return;
    const initial = this.initialResult!;
    const injected = this.injected;
    const comparison = this.compare(initial, result);
    const what = `${message}: ${initial}${injected === null ? '' : ` (an injected ${injected.replace('_', ' ')})`}`;
    if (this.state === 'rerunning_in_place') {
      if (comparison > tolerance) {
        if (!fatal) this.continueRequested = true;
        this.track('first_rerun_not_reproducible', result, message);
        this.found(`${what}, then ${result} on a rerun on the same device: not reproducible, a transient fault`);
      } else {
        if (fatal) this.checkpointRequested = true;
        else this.continueRequested = true;
        this.suspicious = { ...this.o.where };
        this.track('first_rerun_reproducible', result, message);
        this.found(
          `${what}, the same on a rerun on the same device: it takes a rerun on another device to tell a faulty device from a correct result`,
        );
      }
    } else if (this.state === 'rerunning_from_checkpoint') {
      const { node, device } = this.o.where;
      if (this.suspicious && node === this.suspicious.node && device === this.suspicious.device) {
        this.restartAgainRequested = true;
        this.found(`resumed on node ${node} device ${device}, the one that reproduced it (${what}): resume again on another`);
      } else if (comparison > tolerance) {
        this.track('second_rerun_not_reproducible', result, message);
        this.found(
          `${what} on node ${this.suspicious?.node} device ${this.suspicious?.device}, ${result} on node ${node} device ${device}: that device is likely faulty (a persistent fault)`,
        );
        if (!fatal) this.continueRequested = true;
      } else {
        this.track('second_rerun_reproducible', result, message);
        this.found(
          `${what} again on node ${node} device ${device}: the result is correct for its input (look at the data or the hyper-parameters)`,
        );
        if (!fatal) this.continueRequested = true;
      }
    }
  }

  /**
   * Whether `value` is at least `threshold` times the largest magnitude of the first `samples` values
   * seen for `context` (those first values are never rejected); NaN and infinities are not (other checks see them).
   */
  isUnexpectedlyLarge(value: number, threshold: number, context: string, samples = 100): boolean {
    const v = Math.abs(value);
    if (!Number.isFinite(v)) return false;
    const seen = this.largeValueCounts[context] ?? 0;
    if (seen < samples) {
      this.largeValueCounts[context] = seen + 1;
      this.maxValues[context] = Math.max(this.maxValues[context] ?? 0, v);
      return false;
    }
    return v >= this.maxValues[context]! * threshold;
  }

  /** This rank's part of the checkpoint a rerun asks for. */
  rankState(): RerunRankState {
    return {
      rerunRequested: this.rerunRequested,
      checkpointRequested: this.checkpointRequested,
      restartAgainRequested: this.restartAgainRequested,
      continueRequested: this.continueRequested,
      injected: this.injected,
      failedCall: this.failedCall,
      initialResult: this.initialResult === null ? null : String(this.initialResult),
      suspicious: this.suspicious,
      largeValueCounts: this.largeValueCounts,
      maxValues: this.maxValues,
    };
  }

  /** Take up the rerun a checkpoint waits for: the next iteration runs once more and is compared. */
  load(saved: RerunCheckpoint, rank: number): void {
    const mine = saved.ranks[rank]!;
    this.mode = saved.mode;
    this.state = saved.state;
    this.rerunRequested = mine.rerunRequested;
    this.checkpointRequested = mine.checkpointRequested;
    this.restartAgainRequested = mine.restartAgainRequested;
    this.continueRequested = mine.continueRequested;
    this.injected = mine.injected;
    this.failedCall = mine.failedCall;
    this.initialResult = mine.initialResult === null ? null : Number(mine.initialResult);
    this.suspicious = mine.suspicious;
    this.largeValueCounts = { ...mine.largeValueCounts };
    this.maxValues = { ...mine.maxValues };
  }

  private found(line: string): void {
    this.findings.push(line);
    this.o.warn(`iteration ${this.iteration}: ${line}`);
  }

  private record(message: string, difference: number): void {
    const s = this.stats.get(message) ?? { total: 0, identical: 0, sum: 0, max: 0 };
    s.total += 1;
    if (difference === 0) s.identical += 1;
    else {
      s.sum += difference;
      s.max = Math.max(s.max, difference);
    }
    this.stats.set(message, s);
  }

  /** --error-injection-rate: reject about one check in that many, one at a time until a rerun has dealt with it. */
  private maybeInject(): boolean {
    const rate = this.o.errorInjectionRate;
    if (rate <= 0 || this.injected !== null) return false;
    if ((this.o.randomInt(rate) + this.o.rank) % rate !== 0) return false;
    this.injected = this.o.errorInjectionType;
    this.o.warn(`iteration ${this.iteration}: injecting a ${this.injected.replace('_', ' ')} (--error-injection-type)`);
    return true;
  }

  /** The comparison, or what an injected error makes of it: unequal where the injected kind would be. */
  private compare(initial: number, result: number): number {
    const injected = this.injected;
    if (injected === null) return compareResults(initial, result);
    if (this.state === 'rerunning_in_place') {
      if (injected !== 'transient_error') return 0;
      this.injected = null;
      return Infinity;
    }
    this.injected = null;
    return injected === 'persistent_error' ? Infinity : 0;
  }

  private track(status: string, result: number, message: string): void {
    if (this.o.trackerFile === null) return;
    const { node, device } = this.o.where;
    appendFileSync(
      this.o.trackerFile,
      `ts=${new Date().toISOString()} node=${node} device=${device} jobID=${process.env.SLURM_JOBID ?? 'N/A'} rank=${this.o.rank} iteration=${this.iteration} status=${status} result=${result} message='${message}'\n`,
    );
  }
}

/**
 * The iterations a tracker file says to skip (Megatron's rule): one whose result was rejected twice
 * on the same rank, with reruns disabled or reproduced by a rerun, unless it was rejected on more than
 * one rank in one job (then the input is not what is wrong).
 */
export function iterationsToSkip(trackerFile: string): number[] {
  if (!existsSync(trackerFile)) return [];
  const seen = new Set<string>();
  const skip = new Set<number>();
  const ignore = new Set<number>();
  const ranksByJob = new Map<string, Set<number>>();
  const line = /ts=.+ node=.+ device=.+ jobID=(.+) rank=(.+) iteration=(.+) status=(.+) result=.+ message=.+/;
  for (const text of readFileSync(trackerFile, 'utf8').split('\n')) {
    const m = line.exec(text);
    if (!m) continue;
    const [, job, rank, iteration, status] = m as unknown as [string, string, string, string, string];
    if (!['RERUN_DISABLED', 'FIRST_RERUN_REPRODUCIBLE', 'SECOND_RERUN_REPRODUCIBLE'].includes(status.split('.').at(-1)!.toUpperCase()))
      continue;
    const it = Number(iteration);
    const key = `${rank} ${it}`;
    if (seen.has(key)) skip.add(it);
    seen.add(key);
    const ranks = ranksByJob.get(`${job} ${it}`) ?? new Set<number>();
    ranks.add(Number(rank));
    ranksByJob.set(`${job} ${it}`, ranks);
    if (ranks.size > 1) ignore.add(it);
  }
  return [...skip].filter((it) => !ignore.has(it)).sort((a, b) => a - b);
}
