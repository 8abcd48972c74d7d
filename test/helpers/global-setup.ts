/** Before any suite: make sure dist/ (which the spawned worker processes run) is built and current. */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  execFileSync('bash', [fileURLToPath(new URL('../../scripts/setup.sh', import.meta.url))], { stdio: 'inherit' });
}
