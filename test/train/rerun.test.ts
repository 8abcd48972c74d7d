/**
 * Result validation (src/train/rerun.ts) against Megatron-LM's own rerun state machine: the fixture
 * (scripts/make-rerun-fixtures.py) ran Megatron's module on scripted results — NaN and infinite
 * losses that a rerun reproduces or not, spiky losses and large grads, injected transient, persistent
 * and correct-result errors, restarts on the same node and on another, report_stats — and kept what
 * it did. Each script replays here through webtron's machine, which must do the same: the passes of
 * every iteration, the state, the checkpoint and exit code, the tracker file's lines, the statistics.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { iterationsToSkip, type RerunCheckpoint, type RerunDiagnostic, type RerunMode, RerunStateMachine } from '../../src/train/rerun.js';

interface Check {
  kind: 'nan' | 'inf' | 'large';
  context?: string;
  message: string;
  tolerance: number;
  fatal: boolean;
}
interface Outcome {
  passes: number;
  state: string;
  checkpoint: boolean;
  exit: number | null;
}
interface Scenario {
  name: string;
  mode: RerunMode;
  rate?: number;
  type?: RerunDiagnostic;
  large_samples?: number;
  checks: Check[];
  processes: { node: string; iterations: { passes: (number | string)[][] }[] }[];
  megatron: {
    processes: Outcome[][];
    tracker: { node: string; iteration: number; status: string; message: string }[];
    stats: Record<string, { total: number; identical: number; sum: number | string; max: number | string }>;
  };
}

const FIXTURE = JSON.parse(readFileSync(new URL('../fixtures/rerun-megatron.json', import.meta.url), 'utf8')) as {
  scenarios: Scenario[];
  tracker: { lines: string[]; skip: number[] };
};
const value = (x: number | string) => (typeof x === 'number' ? x : Number(x.replace('inf', 'Infinity').replace('nan', 'NaN')));

/** One rank through the scenario's processes, as src/train/step.ts drives the machine. */
async function replay(s: Scenario) {
  const tracker = join(mkdtempSync(join(tmpdir(), 'webtron-rerun-')), 'tracker.txt');
  const anyRank = async (flags: boolean[]) => flags; // one rank
  let saved: RerunCheckpoint | null = null;
  const processes: Outcome[][] = [];
  let m: RerunStateMachine | null = null;
  for (const process of s.processes) {
    m = new RerunStateMachine({
      mode: s.mode,
      errorInjectionRate: s.rate ?? 0,
      errorInjectionType: s.type ?? 'transient_error',
      trackerFile: tracker,
      rank: 0,
      where: { node: process.node, device: 0 },
      randomInt: () => 0,
      warn: () => {},
    });
    let iteration = 1;
    if (saved) {
      m.load(saved, 0);
      iteration = saved.iteration;
    }
    const out: Outcome[] = [];
    for (const it of process.iterations) {
      m.iteration = iteration++;
      let passes = 0;
      while (await m.shouldRunForwardBackward(anyRank)) {
        const values = it.passes[Math.min(passes, it.passes.length - 1)]!.map(value);
        for (const [c, check] of s.checks.entries()) {
          const machine = m;
          const reject =
            check.kind === 'nan'
              ? Number.isNaN
              : check.kind === 'inf'
                ? (v: number) => Math.abs(v) === Infinity
                : (v: number) => machine.isUnexpectedlyLarge(v, 10, check.context!, s.large_samples ?? 100);
          m.validate(values[c]!, reject, check.message, check.tolerance, check.fatal);
        }
        passes++;
      }
      const { checkpoint, exitCode } = m.shouldCheckpointAndExit();
      out.push({ passes, state: m.state, checkpoint, exit: exitCode });
      if (checkpoint) saved = { mode: m.mode, state: m.state, iteration: m.iteration, ranks: [JSON.parse(JSON.stringify(m.rankState()))] };
      if (exitCode !== null) break;
    }
    processes.push(out);
  }
  const lines = readFileSync(tracker, 'utf8').trim().split('\n').filter(Boolean);
  const statuses = lines.map((line) => {
    const field = (name: string) => new RegExp(` ${name}=(\\S+)`).exec(` ${line}`)![1]!;
    return {
      node: field('node'),
      iteration: Number(field('iteration')),
      status: field('status'),
      message: /message='(.*)'$/.exec(line)![1]!,
    };
  });
  return { processes, tracker: statuses, stats: Object.fromEntries(m!.stats) };
}

describe("result validation against Megatron's rerun state machine", () => {
  for (const s of FIXTURE.scenarios) {
    it(s.name, async () => {
      const ours = await replay(s);
      expect(ours.processes).toEqual(s.megatron.processes);
      expect(ours.tracker).toEqual(s.megatron.tracker);
      for (const [message, want] of Object.entries(s.megatron.stats)) {
        const got = ours.stats[message]!;
        expect([got.total, got.identical], message).toEqual([want.total, want.identical]);
        expect(got.sum, message).toBeCloseTo(value(want.sum), 12);
        expect(got.max, message).toBeCloseTo(value(want.max), 12);
      }
      expect(Object.keys(ours.stats).sort()).toEqual(Object.keys(s.megatron.stats).sort());
    });
  }

  it("a tracker file's repeated rejections name the iterations Megatron's reader skips", () => {
    const file = join(mkdtempSync(join(tmpdir(), 'webtron-rerun-')), 'tracker.txt');
    writeFileSync(file, `${FIXTURE.tracker.lines.join('\n')}\n`);
    expect(FIXTURE.tracker.skip.length).toBeGreaterThan(0);
    expect(iterationsToSkip(file)).toEqual(FIXTURE.tracker.skip);
    expect(iterationsToSkip(join(tmpdir(), 'no-such-tracker-file.txt'))).toEqual([]);
  });
});
