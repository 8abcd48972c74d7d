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

/**
 * Why /usr/bin/python3 cannot import `modules` here, or null: `packages` (Debian's) installed as root
 * when they are missing.
 */
export function pythonModulesMissing(modules: string[], packages: string[]): string | null {
  const importable = () => spawnSync('/usr/bin/python3', ['-c', `import ${modules.join(', ')}`]).status === 0;
  if (importable()) return null;
  if (process.getuid?.() !== 0)
    return `not root, and /usr/bin/python3 has no ${modules.join(' and ')} (apt-get install ${packages.join(' ')})`;
  const failed = aptInstall(packages);
  return failed ?? (importable() ? null : `${packages.join(' and ')} installed, but ${modules.join(', ')} does not import`);
}

/**
 * For tests refereed by Debian's torch and numpy: `find()` in beforeAll (installing them as root
 * where missing), then `skipWithout(context)` first in each such test, which skips it with one line
 * when they are not there.
 */
export function torchReferee(): { find: () => void; skipWithout: (context: { skip: () => void }) => void } {
  let missing: string | null = null;
  return {
    find: () => {
      missing = pythonModulesMissing(['torch', 'numpy'], ['python3-torch', 'python3-numpy']);
    },
    skipWithout: (context) => {
      if (!missing) return;
      console.log(`skipped: ${missing}`);
      context.skip();
    },
  };
}
