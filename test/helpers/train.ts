/** `webtron train` as a user runs it, for the tests: the CLI, a tiny GPT, the losses of a run folder. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { freePort } from './job.js';

export const BIN = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
export const TINY = [
  '--num-layers',
  '2',
  '--hidden-size',
  '32',
  '--num-attention-heads',
  '2',
  '--seq-length',
  '16',
  '--micro-batch-size',
  '2',
  '--make-vocab-size-divisible-by',
  '8',
  '--split',
  '90,10',
  '--lr',
  '3e-3',
  '--lr-warmup-iters',
  '2',
  '--log-interval',
  '1',
  '--eval-interval',
  '1000',
  '--eval-iters',
  '1',
];
export const dir = () => mkdtempSync(join(tmpdir(), 'webtron-train-'));

export async function train(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const port = await freePort();
  return new Promise((resolve) => {
    const child = spawn('node', [BIN, 'train', '--master-port', String(port), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A run folder's metrics.jsonl, a line each. */
export const metricsOf = (runDir: string) =>
  readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map(
      (l) =>
        JSON.parse(l) as {
          iteration: number;
          consumed_samples: number;
          lr: number;
          loss: number;
          grad_norm?: number | null;
          val_loss?: number;
        },
    );

export const losses = (runDir: string) => new Map(metricsOf(runDir).map((m) => [m.iteration, m.loss]));

export function expectSameLosses(a: Map<number, number>, b: Map<number, number>, tolerance: number, what: string): void {
  expect([...b.keys()], what).toEqual([...a.keys()]);
  for (const [it, loss] of a) {
    const other = b.get(it)!;
    expect(Math.abs(other - loss) / Math.abs(loss), `${what}, iteration ${it}: ${loss} vs ${other}`).toBeLessThanOrEqual(tolerance);
  }
}

/** The run `b` has every iteration of `a` and the same loss at each, bit for bit (a repeated iteration counts with its last loss). */
export function expectIdenticalLosses(a: Map<number, number>, b: Map<number, number>): void {
  expect([...b.keys()].sort((x, y) => x - y)).toEqual([...a.keys()]);
  for (const [it, loss] of a) expect(b.get(it), `iteration ${it}`).toBe(loss);
}
