/**
 * examples/ run as a user runs them: the MLP example trains over `webtron launch` with two workers
 * and the distributed optimizer, through the public API only.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));

describe('examples/train-mlp.ts', () => {
  it('imports only the package name', () => {
    const source = readFileSync(`${root}examples/train-mlp.ts`, 'utf8');
    const from = [...source.matchAll(/from '([^']+)'/g)].map((m) => m[1]);
    expect(from.filter((f) => f !== 'webtron' && !f!.startsWith('node:'))).toEqual([]);
  });

  it('trains on two workers: the loss falls, held-out accuracy is far above chance, every rank ends with the same params', () => {
    const run = spawnSync(
      process.execPath,
      ['bin/webtron.js', 'launch', '--nproc-per-node', '2', '--', 'dist/examples/train-mlp.js', '--steps', '30'],
      {
        cwd: root,
        encoding: 'utf8',
      },
    );
    expect(run.status, run.stderr).toBe(0);
    const final = /final loss ([\d.]+) \(first ([\d.]+)\), held-out accuracy ([\d.]+)%, params (\w+) on 2 ranks/.exec(run.stdout);
    expect(final, run.stdout).not.toBeNull();
    const [, last, first, accuracy, params] = final!;
    expect(Number(first)).toBeCloseTo(Math.log(4), 1); // 4 classes, small initial weights
    expect(Number(last)).toBeLessThan(0.5 * Number(first));
    expect(Number(accuracy)).toBeGreaterThan(60); // chance is 25%
    expect(params).toBe('identical');
  });
});
