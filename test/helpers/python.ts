/**
 * Python referee scripts run many times in one interpreter. `import torch` alone costs about 1.5 s
 * of CPU here, so a test that writes or reads several checkpoints runs its script's command lines in
 * one process: each as `python3 SCRIPT ARGS...` would run it (the script's `__main__` with its
 * sys.argv), torch imported once.
 */
import { spawnSync } from 'node:child_process';
import { expect } from 'vitest';

export const PYTHON = '/usr/bin/python3';

/** Runs the script (argv[1]) as `__main__` once per line of stdin, a JSON list of its arguments; an error stops them all. */
const DRIVER = `
import json, os, runpy, sys
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
for line in sys.stdin:
    if line.strip():
        sys.argv = [script, *json.loads(line)]
        runpy.run_path(script, run_name='__main__')
`;

/** `python3 script ...argv` for each argv, in one interpreter; the test fails with Python's stderr if one fails. */
export function pythonRuns(script: string, argvs: (string | number)[][]): void {
  const input = argvs.map((argv) => JSON.stringify(argv.map(String))).join('\n');
  const run = spawnSync(PYTHON, ['-c', DRIVER, script], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  expect(run.status, `${script}: ${run.stderr}`).toBe(0);
}
