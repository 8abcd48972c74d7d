/**
 * `webtron train --timing`: the arithmetic of idle time and of the timeline's rows against plain
 * references, and a real two-rank run whose per-rank files, printed lines, metrics and timeline
 * agree with each other and whose losses equal a run without --timing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { uncovered } from '../../src/ddp/phases.js';
import { packRows } from '../../src/plot/svg.js';
import type { IterationTiming } from '../../src/train/timing.js';
import { seeded } from '../helpers/seed.js';
import { dir, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const { seed, random } = seeded('train/timing.test.ts');
const msg = (what: string) => `${what} (seed ${seed}: replay with WEBTRON_TEST_SEED=${seed})`;

/** Random spans on whole milliseconds of [0, 200). */
function randomSpans(n: number) {
  return Array.from({ length: n }, () => {
    const start = Math.floor(random() * 190);
    return { phase: 'p', start, end: start + 1 + Math.floor(random() * 40) };
  });
}

describe('timing arithmetic', () => {
  it('idle time is the milliseconds no span covers (against counting whole milliseconds)', () => {
    for (let trial = 0; trial < 50; trial++) {
      const spans = randomSpans(1 + Math.floor(random() * 8));
      const [from, to] = [Math.floor(random() * 50), 150 + Math.floor(random() * 100)];
      let free = 0;
      for (let t = from; t < to; t++) if (!spans.some((s) => s.start <= t && t < s.end)) free++;
      expect(uncovered(spans, from, to), msg(`trial ${trial}: ${JSON.stringify(spans)} in [${from}, ${to})`)).toBe(free);
    }
  });

  it('timeline rows never overlap and are as few as the deepest overlap', () => {
    for (let trial = 0; trial < 50; trial++) {
      const spans = randomSpans(1 + Math.floor(random() * 12));
      const rows = packRows(spans);
      for (const row of rows)
        for (let i = 1; i < row.length; i++)
          expect(row[i]!.start, msg(`trial ${trial}: a row overlaps`)).toBeGreaterThanOrEqual(row[i - 1]!.end);
      expect(rows.flat().length).toBe(spans.length);
      let depth = 0;
      for (let t = 0; t < 250; t++) depth = Math.max(depth, spans.filter((s) => s.start <= t && t < s.end).length);
      expect(rows.length, msg(`trial ${trial}: ${JSON.stringify(spans)}`)).toBe(depth);
    }
  });
});

describe('webtron train --timing', () => {
  it("two ranks with the distributed optimizer and overlap: every phase of every iteration per rank, the same losses as without; --profile's window only", async () => {
    const base = dir();
    const args = [
      ...TINY,
      '--train-iters',
      '4',
      '--global-batch-size',
      '4',
      '--nproc-per-node',
      '2',
      '--use-distributed-optimizer',
      '--overlap-grad-reduce',
      '--ddp-bucket-size',
      '2000',
      '--hidden-dropout',
      '0',
      '--attention-dropout',
      '0',
    ];
    const plain = await train([...args, '--run-dir', join(base, 'plain')]);
    expect(plain.code, plain.stderr).toBe(0);
    const timed = await train([...args, '--timing', '--run-dir', join(base, 'timed')]);
    expect(timed.code, timed.stderr).toBe(0);
    expectSameLosses(losses(join(base, 'plain')), losses(join(base, 'timed')), 0, 'without vs with --timing');

    const metrics = readFileSync(join(base, 'timed', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { iteration: number; timing?: IterationTiming });
    const fromMetrics = metrics.flatMap((m) => (m.timing ? [m.timing] : []));
    expect(fromMetrics.map((t) => t.iteration)).toEqual([1, 2, 3, 4]);
    for (const rank of [0, 1]) {
      const records = readFileSync(join(base, 'timed', `timing-rank${rank}.jsonl`), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as IterationTiming);
      expect(records.map((t) => [t.iteration, t.rank])).toEqual([1, 2, 3, 4].map((i) => [i, rank]));
      if (rank === 0) expect(records).toEqual(fromMetrics);
      for (const t of records) {
        const what = `rank ${rank}, iteration ${t.iteration}`;
        for (const phase of ['data', 'forward', 'backward', 'grad readback', 'reduce-scatter', 'adam', 'param readback', 'all-gather'])
          expect(t.phases[phase], `${what}: ${phase} in ${JSON.stringify(t.phases)}`).toBeGreaterThan(0);
        // Several buckets: a grad readback and reduce-scatter per bucket, some during the backward pass.
        expect(t.spans.filter((s) => s.phase === 'reduce-scatter').length, what).toBeGreaterThan(1);
        const sums: Record<string, number> = {};
        for (const s of t.spans) {
          expect(s.start, what).toBeGreaterThanOrEqual(0);
          expect(s.end, what).toBeGreaterThanOrEqual(s.start);
          expect(s.end, what).toBeLessThanOrEqual(t.step_ms + 1e-3);
          sums[s.phase] = (sums[s.phase] ?? 0) + s.end - s.start;
        }
        for (const [phase, ms] of Object.entries(t.phases)) expect(Math.abs(sums[phase]! - ms), `${what}: ${phase}`).toBeLessThan(0.01);
        expect(Math.abs(uncovered(t.spans, 0, t.step_ms) - t.idle_ms), `${what}: idle`).toBeLessThan(0.01);
        if (t.gpu_ms) {
          // GPU time of a phase's passes fits inside the phase's wall time.
          for (const phase of ['forward', 'backward']) {
            expect(t.gpu_ms[phase], `${what}: GPU ${phase}`).toBeGreaterThan(0);
            expect(t.gpu_ms[phase]!, `${what}: GPU ${phase}`).toBeLessThanOrEqual(t.phases[phase]! + 0.01);
          }
        }
      }
    }
    const lines = timed.stdout.split('\n').filter((l) => l.startsWith(' timing | iteration'));
    expect(lines.length).toBe(4);
    expect(lines[3]).toMatch(/^ timing \| iteration 4 \| rank 0 \| step [\d.]+ ms \| .*forward [\d.]+.* \| idle [\d.]+$/);
    // The timeline: iteration 4 of both ranks, a bar per span.
    const svg = readFileSync(join(base, 'timed', 'timeline.svg'), 'utf8');
    const last = [0, 1].map(
      (r) =>
        readFileSync(join(base, 'timed', `timing-rank${r}.jsonl`), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as IterationTiming)
          .at(-1)!,
    );
    expect(svg).toContain('iteration 4, 2 ranks');
    for (const r of [0, 1]) expect(svg).toContain(`>rank ${r}</text>`);
    expect(svg.match(/<title>rank \d, /g)!.length).toBe(last[0]!.spans.length + last[1]!.spans.length);
    expect(existsSync(join(base, 'plain', 'timeline.svg'))).toBe(false);

    // Megatron's --profile window: after 1 iteration, to the end of iteration 3; the same losses again.
    const window = ['--profile', '--profile-step-start', '1', '--profile-step-end', '3'];
    /** The iterations a rank of run `name` recorded (none without its file). */
    const recorded = (name: string, rank: number) => {
      const file = join(base, name, `timing-rank${rank}.jsonl`);
      const text = existsSync(file) ? readFileSync(file, 'utf8').trim() : '';
      return text === '' ? [] : text.split('\n').map((l) => (JSON.parse(l) as IterationTiming).iteration);
    };
    const profiled = await train([...args, ...window, '--run-dir', join(base, 'profiled')]);
    expect(profiled.code, profiled.stderr).toBe(0);
    expectSameLosses(losses(join(base, 'plain')), losses(join(base, 'profiled')), 0, 'without vs with --profile');
    for (const rank of [0, 1]) expect(recorded('profiled', rank)).toEqual([2, 3]);
    expect(profiled.stdout.split('\n').filter((l) => l.startsWith(' timing | iteration')).length).toBe(2);
    expect(readFileSync(join(base, 'profiled', 'timeline.svg'), 'utf8')).toContain('iteration 3, 2 ranks');

    // --profile-ranks 1: only rank 1 records the window; rank 0 prints no timing lines but draws rank 1's.
    const one = await train([...args, ...window, '--profile-ranks', '1', '--run-dir', join(base, 'rank-1')]);
    expect(one.code, one.stderr).toBe(0);
    expectSameLosses(losses(join(base, 'plain')), losses(join(base, 'rank-1')), 0, 'without vs with --profile-ranks 1');
    expect(recorded('rank-1', 0)).toEqual([]);
    expect(recorded('rank-1', 1)).toEqual([2, 3]);
    expect(one.stdout.split('\n').filter((l) => l.startsWith(' timing | iteration'))).toEqual([]);
    const svg1 = readFileSync(join(base, 'rank-1', 'timeline.svg'), 'utf8');
    expect(svg1).toContain('iteration 3, 1 rank');
    expect(svg1).not.toContain('>rank 0</text>');
  });
});
