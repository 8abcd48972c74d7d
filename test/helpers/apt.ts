/** Debian packages a test needs, installed with apt-get when missing (root only). */
import { spawnSync } from 'node:child_process';

/** Whether `command` is on the PATH. */
export const has = (command: string) => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;

/**
 * Install `packages` (without recommends), once more after an `apt-get update` if the first try
 * fails. Null when installed; otherwise why not, in a phrase.
 */
export function aptInstall(packages: string[]): string | null {
  if (!has('apt-get')) return `${packages.join(' and ')} ${packages.length > 1 ? 'are' : 'is'} not installed and there is no apt-get`;
  const install = () =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      encoding: 'utf8',
    });
  let r = install();
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore' });
    r = install();
  }
  return r.status === 0 ? null : `apt-get install ${packages.join(' ')} failed: ${r.stderr.trim().split('\n').at(-1)}`;
}
