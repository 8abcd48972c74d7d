/** Where webtron keeps what it works out once per machine: tuned matmul tiles, shader interfaces. */
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The folder of webtron's on-disk caches: WEBTRON_CACHE_DIR, else XDG_CACHE_HOME/webtron, else ~/.cache/webtron. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.WEBTRON_CACHE_DIR) return env.WEBTRON_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'webtron');
}
