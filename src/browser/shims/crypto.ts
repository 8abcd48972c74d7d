/**
 * `node:crypto` in a browser worker: SHA-256 and HMAC-SHA256 from @noble/hashes (WebCrypto has no
 * synchronous hash, and the handshake's MACs are synchronous in Node), random bytes from WebCrypto.
 */
import { Buffer } from 'buffer';
import { hmac } from '@noble/hashes/hmac';
import { sha256 } from '@noble/hashes/sha256';

type Input = string | Uint8Array;
const bytes = (data: Input) => (typeof data === 'string' ? new TextEncoder().encode(data) : data);

function digestOf(parts: Uint8Array[], finish: (all: Uint8Array) => Uint8Array) {
  return {
    update(data: Input) {
      parts.push(bytes(data).slice());
      return this;
    },
    digest(encoding?: 'hex') {
      const all = Buffer.concat(parts);
      const out = Buffer.from(finish(all));
      return encoding ? out.toString(encoding) : out;
    },
  };
}

export function createHash(algorithm: string) {
  if (algorithm !== 'sha256') throw new Error(`createHash('${algorithm}') is not available in a browser worker`);
  return digestOf([], (all) => sha256(all));
}

export function createHmac(algorithm: string, key: Input) {
  if (algorithm !== 'sha256') throw new Error(`createHmac('${algorithm}') is not available in a browser worker`);
  return digestOf([], (all) => hmac(sha256, bytes(key), all));
}

export function randomBytes(n: number): Buffer {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(n)));
}

/** Equal bytes, in time that depends on the length only. */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) throw new RangeError('timingSafeEqual: the inputs differ in length');
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export default { createHash, createHmac, randomBytes, timingSafeEqual };
