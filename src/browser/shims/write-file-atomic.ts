/** `write-file-atomic` in a browser worker: a temporary name, fsync, rename, over the launcher (./fs.ts). */
import * as fs from './fs.js';

let counter = 0;

export function sync(path: string, data: Uint8Array | string): void {
  const tmp = `${path}.tmp-browser-${Date.now()}-${counter++}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path);
}

export default { sync };
