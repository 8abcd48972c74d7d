/**
 * `webtron dashboard` and `webtron train --dashboard`: the server's paths over plain HTTP, and the
 * page in headless Chromium (Debian's package, driven by playwright-core): its charts hold the
 * runs' points, a line appended to metrics.jsonl appears without a reload, the per-rank lanes show.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { basename, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chromium } from 'playwright-core';
import { CHROMIUM, chromiumUnavailable } from '../helpers/chromium.js';
import { BIN, dir, TINY, train } from '../helpers/train.js';

const unavailable = chromiumUnavailable();
if (unavailable) console.log(`skipped: the dashboard's page tests need headless Chromium: ${unavailable}`);

const started: ChildProcess[] = [];
afterAll(() => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
});

/** A command that prints a URL: the child and the URL. */
async function serving(args: string[]): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn('node', [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  let out = '';
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const url = await new Promise<string>((done, fail) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) done(m[1]!);
    });
    child.on('exit', (code) => fail(new Error(`exited ${code}: ${out}`)));
  });
  return { child, url, output: () => out };
}

/** A raw GET or POST (the path as given: no client normalises `/../`). */
function raw(url: string, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((done, fail) => {
    const req = request({ host: hostname, port, path, method }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => done({ status: res.statusCode!, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

const lines = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('webtron dashboard', () => {
  it('serves its page, uPlot and the runs, and nothing else: /../, absolute paths and the run files are 404, a POST is 405', async () => {
    const base = dir();
    const run = join(base, 'finished');
    const r = await train([...TINY, '--train-iters', '4', '--global-batch-size', '4', '--run-dir', run]);
    expect(r.code, r.stderr).toBe(0);
    const { child, url } = await serving(['dashboard', run, '--port', '0']);
    expect((await raw(url, '/')).body).toContain('<title>webtron dashboard</title>');
    expect((await raw(url, '/uplot.js')).status).toBe(200);
    const state = JSON.parse((await raw(url, '/api/state')).body) as { runs: { name: string; metrics: unknown[]; bigram: number }[] };
    expect(state.runs.map((x) => x.name)).toEqual(['finished']);
    expect(state.runs[0]!.metrics).toEqual(lines(join(run, 'metrics.jsonl')));
    for (const path of [
      '/../../etc/passwd',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/etc/passwd',
      `${resolve(run)}/metrics.jsonl`,
      '/metrics.jsonl',
      '/finished/metrics.jsonl',
      '/node_modules/uplot/package.json',
    ]) {
      expect((await raw(url, path)).status, path).toBe(404);
    }
    expect((await raw(url, '/api/state', 'POST')).status).toBe(405);
    child.kill('SIGTERM');
  });

  it.skipIf(unavailable !== null)(
    'in Chromium: a finished run and a growing one overlaid, the charts hold their points, a new metrics.jsonl line appears without a reload, per-rank lanes from --timing',
    async () => {
      const base = dir();
      const finished = join(base, 'finished');
      const r = await train([
        ...TINY,
        '--train-iters',
        '4',
        '--global-batch-size',
        '4',
        '--nproc-per-node',
        '2',
        '--timing',
        '--run-dir',
        finished,
      ]);
      expect(r.code, r.stderr).toBe(0);
      // A run still going: its first two lines so far.
      const growing = join(base, 'growing');
      mkdirSync(growing);
      copyFileSync(join(finished, 'config.json'), join(growing, 'config.json'));
      const all = lines(join(finished, 'metrics.jsonl'));
      writeFileSync(
        join(growing, 'metrics.jsonl'),
        `${all
          .slice(0, 2)
          .map((l) => JSON.stringify(l))
          .join('\n')}\n`,
      );
      const { child, url } = await serving(['dashboard', finished, growing, '--port', '0']);
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
      try {
        const page = await browser.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        await page.goto(url);
        await page.waitForFunction(
          () => (globalThis as unknown as { webtronDashboard?: { ready: boolean } }).webtronDashboard?.ready === true,
        );
        const points = (chart: string, label: string) =>
          page.evaluate(
            ([c, l]) =>
              (globalThis as unknown as { webtronDashboard: { points(c: string, l: string): number } }).webtronDashboard.points(c!, l!),
            [chart, label],
          );
        expect(await points('loss', 'finished: train')).toBe(all.length);
        expect(await points('loss', 'finished: validation')).toBe(all.filter((l) => l.val_loss !== undefined).length);
        expect(await points('loss', 'growing: train')).toBe(2);
        expect(await points('grad_norm', 'finished: grad norm')).toBe(all.length);
        expect(await points('memory', 'finished: params')).toBe(all.length);
        for (const rank of [0, 1]) {
          expect(await points('step_ms', `finished: rank ${rank}`)).toBe(lines(join(finished, `timing-rank${rank}.jsonl`)).length);
        }
        expect(await page.locator('#lanes g.lane').count()).toBe(2);
        // The page is not reloaded: a mark set now survives the update.
        await page.evaluate(() => Object.assign(globalThis, { stillHere: true }));
        appendFileSync(join(growing, 'metrics.jsonl'), `${JSON.stringify(all[2])}\n`);
        await page.waitForFunction(
          () =>
            (globalThis as unknown as { webtronDashboard: { points(c: string, l: string): number } }).webtronDashboard.points(
              'loss',
              'growing: train',
            ) === 3,
        );
        expect(await page.evaluate(() => (globalThis as unknown as { stillHere?: boolean }).stillHere)).toBe(true);
        expect(
          await page.evaluate(() =>
            (globalThis as unknown as { webtronDashboard: { lastX(c: string): number } }).webtronDashboard.lastX('loss'),
          ),
        ).toBe(all.at(-1)!.iteration);
        expect(errors).toEqual([]);
      } finally {
        await browser.close();
        child.kill('SIGTERM');
      }
    },
    60_000,
  );

  it('webtron train --dashboard serves the run while it trains and prints the URL', async () => {
    const runDir = join(dir(), 'live');
    const { child, url, output } = await serving([
      'train',
      ...TINY,
      '--train-iters',
      '6',
      '--global-batch-size',
      '4',
      '--run-dir',
      runDir,
      '--dashboard',
      '--dashboard-port',
      '0',
    ]);
    expect(output()).toMatch(new RegExp(`webtron train: dashboard of ${runDir} at http://127\\.0\\.0\\.1:\\d+/`));
    const state = JSON.parse((await raw(url, '/api/state')).body) as { runs: { name: string }[] };
    expect(state.runs.map((x) => x.name)).toEqual([basename(runDir)]);
    const code = await new Promise<number | null>((done) => child.on('exit', done));
    expect(code, output()).toBe(0);
  });

  it.each([
    [[], /^webtron dashboard: give one or more run folders/],
    [['/does/not/exist'], /^webtron dashboard: \/does\/not\/exist: no such folder; give a run folder/],
    [['.', '--port', '70000'], /^webtron dashboard: \.: no metrics\.jsonl or config\.json; give a run folder/],
  ])('bad input %j is one line, exit code 2', async (args, says) => {
    const child = spawn('node', [BIN, 'dashboard', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((done) => child.on('exit', done));
    expect(code).toBe(2);
    expect(err.trim()).toMatch(says);
    expect(err.trim().split('\n')).toHaveLength(1);
  });
});
