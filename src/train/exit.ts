/**
 * Megatron's exit conditions, checked at every iteration boundary: --exit-interval (the same
 * iteration on every rank by itself), and --exit-duration-in-mins and --exit-signal-handler, which
 * every rank agrees on through one all-reduce (max) of two flags, so all ranks leave at the same
 * iteration and none is left alone in a collective. The same all-reduce carries a third flag while
 * a save is written in the background (--async-save): whether every rank's writer is done.
 */
import type { AsyncSaveState } from '../checkpoint/checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TrainRun } from './setup.js';

/** A background save's state as a flag whose maximum over the ranks is the state of them all. */
const SAVE_FLAG: Record<AsyncSaveState, number> = { written: 0, writing: 1, failed: 2 };

export class ExitConditions {
  private signalled = false;
  private readonly onSignal = () => {
    this.signalled = true;
  };

  constructor(
    private readonly cfg: TrainConfig,
    private readonly started: number,
  ) {
    // The handler replaces the signal's default (termination) for this process.
    if (cfg.exitSignalHandler) process.on(cfg.exitSignal, this.onSignal);
  }

  /**
   * Why the run leaves after `iteration` (null to go on), and, given this rank's background save,
   * where the save stands on all ranks: 'written' once every rank's writer is done, 'failed' once
   * any rank's failed, else 'writing'.
   */
  async check(
    run: TrainRun,
    iteration: number,
    save: AsyncSaveState | null = null,
  ): Promise<{ exit: string | null; save: AsyncSaveState | null }> {
    const { cfg } = this;
    let exit: string | null = null;
    let all: AsyncSaveState | null = null;
    if (cfg.exitSignalHandler || cfg.exitDurationInMins !== null || save !== null) {
      const overTime = cfg.exitDurationInMins !== null && (performance.now() - this.started) / 60_000 >= cfg.exitDurationInMins;
      const flags = new Float32Array([this.signalled ? 1 : 0, overTime ? 1 : 0, save === null ? 0 : SAVE_FLAG[save]]);
      // With --overlap-param-gather the step returned with the next forward's gathers being issued
      // bucket by bucket; a collective in between would meet a gather on a rank further along.
      await run.ddp.finishParamSync();
      await run.group.allReduce(flags, 'max');
      if (flags[0]! > 0) exit = `${cfg.exitSignal} received (--exit-signal-handler)`;
      else if (flags[1]! > 0) exit = `${cfg.exitDurationInMins} minutes of training (--exit-duration-in-mins)`;
      if (save !== null) all = flags[2] === 2 ? 'failed' : flags[2] === 1 ? 'writing' : 'written';
    }
    if (exit === null && cfg.exitInterval !== null && iteration % cfg.exitInterval === 0)
      exit = `iteration divisible by --exit-interval ${cfg.exitInterval}`;
    return { exit, save: all };
  }

  destroy(): void {
    if (this.cfg.exitSignalHandler) process.off(this.cfg.exitSignal, this.onSignal);
  }
}
