/** `node:zlib` in a browser worker: crc32 (the checkpoint's block checksums) from the crc-32 package, unsigned as Node's. */
import CRC32 from 'crc-32';

export const crc32 = (data: Uint8Array | string, value = 0) =>
  (typeof data === 'string' ? CRC32.str(data, value) : CRC32.buf(data, value)) >>> 0;

export default { crc32 };
