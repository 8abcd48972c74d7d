/** `node:fs` in a browser worker: the subset webtron uses, over its launcher (../remote.ts). */
import { Buffer } from 'buffer';
import { RemoteFsError, remoteCall, remoteJson, remoteRead } from '../remote.js';

interface RemoteStat {
  size: number;
  file: boolean;
  directory: boolean;
  mtimeMs: number;
}

export class Stats {
  readonly size: number;
  readonly mtimeMs: number;
  readonly mtime: Date;
  constructor(private readonly s: RemoteStat) {
    this.size = s.size;
    this.mtimeMs = s.mtimeMs;
    this.mtime = new Date(s.mtimeMs);
  }
  isFile(): boolean {
    return this.s.file;
  }
  isDirectory(): boolean {
    return this.s.directory;
  }
}

const path = (p: unknown): string => (p instanceof URL ? p.pathname : String(p));

export function statSync(p: string, options?: { throwIfNoEntry?: boolean }): Stats | undefined {
  try {
    return new Stats(remoteJson<RemoteStat>('stat', { path: path(p) }));
  } catch (error) {
    if (options?.throwIfNoEntry === false && (error as RemoteFsError).code === 'ENOENT') return undefined;
    throw error;
  }
}
export const lstatSync = statSync;

export function existsSync(p: string): boolean {
  try {
    remoteJson<RemoteStat>('stat', { path: path(p) });
    return true;
  } catch {
    return false;
  }
}

export function readFileSync(p: string | number, options?: BufferEncoding | { encoding?: BufferEncoding | null } | null): Buffer | string {
  const bytes = remoteRead(typeof p === 'number' ? file(p).path : path(p), 0, -1);
  const encoding = typeof options === 'string' ? options : options?.encoding;
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return encoding ? buffer.toString(encoding) : buffer;
}

export function readdirSync(p: string): string[] {
  return remoteJson<string[]>('readdir', { path: path(p) });
}

export function mkdirSync(p: string, options?: { recursive?: boolean }): void {
  remoteCall('mkdir', { path: path(p), recursive: options?.recursive === true });
}

export function rmSync(p: string, options?: { recursive?: boolean; force?: boolean }): void {
  remoteCall('rm', { path: path(p), recursive: options?.recursive === true, force: options?.force === true });
}

export function unlinkSync(p: string): void {
  remoteCall('rm', { path: path(p), recursive: false, force: false });
}

export function renameSync(from: string, to: string): void {
  remoteCall('rename', { path: path(from), to: path(to) });
}

export function realpathSync(p: string): string {
  return path(p);
}

/** Open files: a path, whether it was opened for writing, and the position of sequential writes. */
const files = new Map<number, { path: string; writable: boolean; position: number }>();
let nextFd = 100;

function file(fd: number): { path: string; writable: boolean; position: number } {
  const f = files.get(fd);
  if (!f) throw new RemoteFsError('EBADF', `file descriptor ${fd} is not open`);
  return f;
}

export function openSync(p: string, flags: string | number = 'r'): number {
  const name = path(p);
  const mode = String(flags);
  if (mode.startsWith('r') && !mode.includes('+')) remoteJson<RemoteStat>('stat', { path: name });
  else remoteCall('create', { path: name, truncate: mode.startsWith('w'), exclusive: mode.includes('x') });
  const fd = nextFd++;
  files.set(fd, { path: name, writable: !mode.startsWith('r') || mode.includes('+'), position: 0 });
  return fd;
}

export function closeSync(fd: number): void {
  file(fd);
  files.delete(fd);
}

export function fstatSync(fd: number): Stats {
  return statSync(file(fd).path)!;
}

export function fsyncSync(fd: number): void {
  remoteCall('fsync', { path: file(fd).path });
}

export function readSync(
  fd: number,
  buffer: Uint8Array,
  offset = 0,
  length = buffer.byteLength - offset,
  position: number | bigint | null = null,
): number {
  const f = file(fd);
  const at = position === null ? f.position : Number(position);
  const bytes = remoteRead(f.path, at, length);
  buffer.set(bytes, offset);
  if (position === null) f.position += bytes.byteLength;
  return bytes.byteLength;
}

export function writeSync(
  fd: number,
  data: Uint8Array | string,
  offset?: number | null,
  length?: number | null,
  position?: number | null,
): number {
  const f = file(fd);
  let bytes: Uint8Array;
  let at: number | null | undefined;
  if (typeof data === 'string') {
    bytes = new TextEncoder().encode(data);
    at = offset;
  } else {
    const from = offset ?? 0;
    bytes = new Uint8Array(data.buffer, data.byteOffset + from, length ?? data.byteLength - from);
    at = position;
  }
  const where = at === null || at === undefined ? f.position : at;
  remoteCall('write', { path: f.path, offset: where }, bytes);
  if (at === null || at === undefined) f.position += bytes.byteLength;
  return bytes.byteLength;
}

export function writeFileSync(p: string, data: Uint8Array | string): void {
  const fd = openSync(p, 'w');
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

export function appendFileSync(p: string, data: Uint8Array | string): void {
  remoteCall('append', { path: path(p) }, typeof data === 'string' ? new TextEncoder().encode(data) : data);
}

export function chmodSync(): void {}
export function chownSync(): void {}

export const constants = { O_RDONLY: 0, O_WRONLY: 1, O_RDWR: 2, O_CREAT: 64, O_EXCL: 128, O_TRUNC: 512 };

export default {
  Stats,
  statSync,
  lstatSync,
  existsSync,
  readFileSync,
  readdirSync,
  mkdirSync,
  rmSync,
  unlinkSync,
  renameSync,
  realpathSync,
  openSync,
  closeSync,
  fstatSync,
  fsyncSync,
  readSync,
  writeSync,
  writeFileSync,
  appendFileSync,
  chmodSync,
  chownSync,
  constants,
};
