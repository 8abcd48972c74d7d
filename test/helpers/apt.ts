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
  // Test files run two at a time: one apt-get waits for another's to finish.
  const run = (args: string[]) => {
    const argv = ['apt-get', '-o', 'DPkg::Lock::Timeout=600', ...args];
    const [command, ...rest] = has('flock') ? ['flock', '/tmp/webtron-test-apt.lock', ...argv] : argv;
    return spawnSync(command!, rest, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, encoding: 'utf8' });
  };
  const install = () => run(['install', '-y', '--no-install-recommends', ...packages]);
  let r = install();
  if (r.status !== 0) {
    run(['update']);
    r = install();
  }
  return r.status === 0 ? null : `apt-get install ${packages.join(' ')} failed: ${r.stderr.trim().split('\n').at(-1)}`;
}
