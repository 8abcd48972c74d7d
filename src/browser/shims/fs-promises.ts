/** `node:fs/promises` in a browser worker: the synchronous shim (./fs.ts) behind promises. */
import * as fs from './fs.js';

export interface FileHandle {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number; buffer: Uint8Array }>;
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number; buffer: Uint8Array }>;
  sync(): Promise<void>;
  stat(): Promise<fs.Stats>;
  close(): Promise<void>;
}

export async function open(path: string, flags = 'r'): Promise<FileHandle> {
  const fd = fs.openSync(path, flags);
  return {
    read: async (buffer, offset, length, position) => ({ bytesRead: fs.readSync(fd, buffer, offset, length, position), buffer }),
    write: async (buffer, offset, length, position) => ({ bytesWritten: fs.writeSync(fd, buffer, offset, length, position), buffer }),
    sync: async () => fs.fsyncSync(fd),
    stat: async () => fs.fstatSync(fd),
    close: async () => fs.closeSync(fd),
  };
}

export const writeFile = async (path: string, data: Uint8Array | string) => fs.writeFileSync(path, data);
export const readFile = async (path: string, options?: BufferEncoding) => fs.readFileSync(path, options);
export const mkdir = async (path: string, options?: { recursive?: boolean }) => fs.mkdirSync(path, options);
export const rename = async (from: string, to: string) => fs.renameSync(from, to);
export const rm = async (path: string, options?: { recursive?: boolean; force?: boolean }) => fs.rmSync(path, options);
export const stat = async (path: string) => fs.statSync(path);
export const readdir = async (path: string) => fs.readdirSync(path);

export default { open, writeFile, readFile, mkdir, rename, rm, stat, readdir };
