/**
 * Headless Chromium for the tests that load a page: Debian's `chromium` package, installed with apt
 * when missing (root only), driven by playwright-core.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const CHROMIUM = '/usr/bin/chromium';

/** Why Chromium cannot run here (after trying to install it), or null when it can. */
export function chromiumUnavailable(): string | null {
  if (existsSync(CHROMIUM)) return null;
  if (process.getuid?.() !== 0) return "not root, so Debian's chromium cannot be installed";
  if (spawnSync('sh', ['-c', 'command -v apt-get']).status !== 0) return 'chromium is not installed and there is no apt-get';
  console.log("installing Debian's chromium with apt-get for the dashboard test");
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      encoding: 'utf8',
    });
  let r = install();
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore' });
    r = install();
  }
  if (r.status !== 0) return `apt-get install chromium failed: ${r.stderr.trim().split('\n').at(-1)}`;
  return existsSync(CHROMIUM) ? null : `apt-get installed chromium but ${CHROMIUM} is missing`;
}
