/**
 * Megatron's exit conditions, checked at every iteration boundary: --exit-interval (the same
 * iteration on every rank by itself), and --exit-duration-in-mins and --exit-signal-handler, which
 * every rank agrees on through one all-reduce (max) of two flags, so all ranks leave at the same
 * iteration and none is left alone in a collective.
 */
import type { TrainConfig } from './config.js';
import type { TrainRun } from './setup.js';

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

  /** Why the run leaves after `iteration`, or null to go on. */
  async check(run: TrainRun, iteration: number): Promise<string | null> {
    const { cfg } = this;
    if (cfg.exitSignalHandler || cfg.exitDurationInMins !== null) {
      const overTime = cfg.exitDurationInMins !== null && (performance.now() - this.started) / 60_000 >= cfg.exitDurationInMins;
      const flags = new Float32Array([this.signalled ? 1 : 0, overTime ? 1 : 0]);
      await run.group.allReduce(flags, 'max');
      if (flags[0]! > 0) return `${cfg.exitSignal} received (--exit-signal-handler)`;
      if (flags[1]! > 0) return `${cfg.exitDurationInMins} minutes of training (--exit-duration-in-mins)`;
    }
    if (cfg.exitInterval !== null && iteration % cfg.exitInterval === 0)
      return `iteration divisible by --exit-interval ${cfg.exitInterval}`;
    return null;
  }

  destroy(): void {
    if (this.cfg.exitSignalHandler) process.off(this.cfg.exitSignal, this.onSignal);
  }
}
