/**
 * Every fenced shell command in README.md and docs/*.md runs, in document order, in one scratch
 * folder (so a later page finds the checkpoint an earlier one wrote), on tiny sizes where the command
 * has a size flag (--train-iters, --eval-interval, --eval-iters, --log-interval, --tokens). A block
 * not run here says why on the line before its fence: `<!-- not run here: REASON -->`. `npm test`
 * (this suite) and `npm run setup` (the suite's global set-up) are not run again.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const PAGES = [
  'README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
];
/** Pages run first because later ones use what they write (the main job's checkpoint). */
const ORDER = ['README.md', 'docs/data.md', 'docs/training.md'];
const TINY: Record<string, string> = {
  'train-iters': '4',
  'eval-interval': '2',
  'eval-iters': '1',
  'log-interval': '2',
  'lr-warmup-iters': '1',
  tokens: '8',
};
const NOT_RUN = /^<!-- not run here: (.+) -->$/;

interface Block {
  page: string;
  line: number;
  commands: string[];
  skipped: string | null;
}

/** The fenced bash blocks of a page, each as its commands (continuations joined, comments dropped). */
function blocks(page: string): Block[] {
  const lines = readFileSync(join(root, page), 'utf8').split('\n');
  const found: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(bash|sh|shell)\s*$/.test(lines[i]!)) continue;
    const start = i;
    const body: string[] = [];
    for (i += 1; !lines[i]!.startsWith('```'); i++) body.push(lines[i]!);
    const commands = body
      .join('\n')
      .replace(/\\\n\s*/g, '')
      .split('\n')
      .map((c) => c.replace(/\s+#\s.*$/, '').trim())
      .filter((c) => c !== '');
    found.push({ page, line: start + 1, commands, skipped: NOT_RUN.exec(lines[start - 1] ?? '')?.[1] ?? null });
  }
  return found;
}

/** The command as this test runs it: webtron from this checkout, scripts and examples from the repository, tiny sizes. */
function tiny(command: string): string | null {
  if (command === 'npm test') return null;
  let c = command.replace(/^npm run setup && /, '');
  if (c === 'npm run setup') return null;
  c = c.replace(/\bnpx webtron\b/g, `node ${join(root, 'bin/webtron.js')}`);
  c = c.replace(/(^|\s)(scripts|dist\/examples)\//g, `$1${root}$2/`);
  for (const [flag, value] of Object.entries(TINY)) c = c.replace(new RegExp(`--${flag} \\S+`, 'g'), `--${flag} ${value}`);
  return c;
}

const all = [...ORDER, ...PAGES.filter((p) => !ORDER.includes(p))].flatMap(blocks);
const scratch = mkdtempSync(join(tmpdir(), 'webtron-docs-'));
mkdirSync(join(scratch, 'docs'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the commands in README.md and docs/', () => {
  it('every block not run here says why, and the README and docs have commands to run', () => {
    expect(all.filter((b) => b.skipped === null).length).toBeGreaterThan(5);
    for (const b of all) if (b.skipped !== null) expect(b.skipped.length, `${b.page}:${b.line}`).toBeGreaterThan(20);
  });

  for (const block of all.filter((b) => b.skipped === null))
    it(`${block.page}:${block.line}`, () => {
      for (const command of block.commands) {
        const run = tiny(command);
        if (run === null) continue;
        const result = spawnSync('bash', ['-c', run], { cwd: scratch, encoding: 'utf8', timeout: 300_000 });
        expect(result.status, `${block.page}:${block.line}: ${command}\n${result.stdout.slice(-2000)}\n${result.stderr.slice(-2000)}`).toBe(
          0,
        );
      }
    }, 900_000);
});
