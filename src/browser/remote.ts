/**
 * A browser worker's files: every read and write goes to its launcher over HTTP (src/train/browser-host.ts),
 * which serves the job's data and its checkpoint folder and nothing else. Calls are synchronous
 * XMLHttpRequests, allowed in a dedicated worker, so that webtron's synchronous file code (the
 * dataset reader, the checkpoint writer) runs unchanged; reads are HTTP range requests of the same
 * files the Node ranks open.
 */

import { SESSION_HEADER } from '../train/browser-protocol.js';

let where: { base: string; session: string } | null = null;

/** Where this worker's launcher is and the session it was given at join. */
export function useLauncher(base: string, session: string): void {
  where = { base, session };
}

/** An error as Node's fs throws it: `code` (ENOENT, EACCES, …) and a message naming the path. */
export class RemoteFsError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A synchronous request to the launcher with this worker's session: its status and body. */
function request(
  method: 'GET' | 'POST',
  url: string,
  headers: Record<string, string>,
  body?: Uint8Array,
): { status: number; bytes: Uint8Array } {
  const xhr = new XMLHttpRequest();
  xhr.open(method, url, false);
  xhr.responseType = 'arraybuffer';
  xhr.setRequestHeader(SESSION_HEADER, where!.session);
  for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
  xhr.send(body ? body.slice() : null);
  return { status: xhr.status, bytes: new Uint8Array(xhr.response as ArrayBuffer) };
}

/** The launcher's refusal or failure as Node's fs error: its code and message when it sent them, else the status. */
function failure(status: number, bytes: Uint8Array, what: string): RemoteFsError {
  let error: { code?: string; message?: string } = {};
  try {
    error = JSON.parse(new TextDecoder().decode(bytes)) as typeof error;
  } catch {
    // not JSON: the status says it
  }
  return new RemoteFsError(error.code ?? `HTTP${status}`, error.message ?? `${what}: HTTP ${status}`);
}

/** One file operation at the launcher: the response body, or a RemoteFsError. */
export function remoteCall(op: string, params: Record<string, string | number | boolean>, body?: Uint8Array): Uint8Array {
  const what = `${op} ${String(params.path ?? '')}`;
  if (!where) throw new RemoteFsError('ENOTCONN', `${what}: this worker has not joined a launcher`);
  const query = new URLSearchParams({ op, ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])) });
  const { status, bytes } = request('POST', `${where.base}/webtron/fs?${query}`, {}, body);
  if (status === 200) return bytes;
  throw failure(status, bytes, what);
}

/**
 * `length` bytes of `path` from `offset` (all of it from `offset` when `length` is negative): an HTTP
 * GET with a Range header, as any HTTP client reads part of a file. Fewer bytes past the end.
 */
export function remoteRead(path: string, offset: number, length: number): Uint8Array {
  if (!where) throw new RemoteFsError('ENOTCONN', `read ${path}: this worker has not joined a launcher`);
  if (length === 0) return new Uint8Array(0);
  const range = length < 0 ? `bytes=${offset}-` : `bytes=${offset}-${offset + length - 1}`;
  const { status, bytes } = request('GET', `${where.base}/webtron/file?${new URLSearchParams({ path })}`, { range });
  if (status === 206 || status === 200) return bytes;
  if (status === 416) return new Uint8Array(0); // from the end of the file on
  throw failure(status, bytes, `read ${path}`);
}

/** The JSON answer of a call. */
export function remoteJson<T>(op: string, params: Record<string, string | number | boolean>): T {
  return JSON.parse(new TextDecoder().decode(remoteCall(op, params))) as T;
}
