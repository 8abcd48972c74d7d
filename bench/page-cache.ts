/** Empty the page cache (root only), so that the next reads come from the disk. */
import { writeFileSync } from 'node:fs';

export function dropCaches(): boolean {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}
