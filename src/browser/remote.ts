/**
 * A browser worker's files: every read and write goes to its launcher over HTTP (src/train/browser-host.ts),
 * which serves the job's data and its checkpoint folder and nothing else. Calls are synchronous
 * XMLHttpRequests, allowed in a dedicated worker, so that webtron's synchronous file code (the
 * dataset reader, the checkpoint writer) runs unchanged; reads are HTTP range requests of the same
 * files the Node ranks open.
 */

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

/** One file operation at the launcher: the response body, or a RemoteFsError. */
export function remoteCall(op: string, params: Record<string, string | number | boolean>, body?: Uint8Array): Uint8Array {
  if (!where) throw new RemoteFsError('ENOTCONN', `${op} ${String(params.path ?? '')}: this worker has not joined a launcher`);
  const query = new URLSearchParams({ op, ...Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)])) });
  const xhr = new XMLHttpRequest();
  xhr.open('POST', `${where.base}/webtron/fs?${query}`, false);
  xhr.responseType = 'arraybuffer';
  xhr.setRequestHeader('x-webtron-session', where.session);
  xhr.send(body ? body.slice() : null);
  const bytes = new Uint8Array(xhr.response as ArrayBuffer);
  if (xhr.status === 200) return bytes;
  let error: { code?: string; message?: string } = {};
  try {
    error = JSON.parse(new TextDecoder().decode(bytes)) as typeof error;
  } catch {
    // not JSON: the status says it
  }
  throw new RemoteFsError(error.code ?? `HTTP${xhr.status}`, error.message ?? `${op} ${String(params.path ?? '')}: HTTP ${xhr.status}`);
}

/**
 * `length` bytes of `path` from `offset` (all of it from `offset` when `length` is negative): an HTTP
 * GET with a Range header, as any HTTP client reads part of a file. Fewer bytes past the end.
 */
export function remoteRead(path: string, offset: number, length: number): Uint8Array {
  if (!where) throw new RemoteFsError('ENOTCONN', `read ${path}: this worker has not joined a launcher`);
  if (length === 0) return new Uint8Array(0);
  const xhr = new XMLHttpRequest();
  xhr.open('GET', `${where.base}/webtron/file?${new URLSearchParams({ path })}`, false);
  xhr.responseType = 'arraybuffer';
  xhr.setRequestHeader('x-webtron-session', where.session);
  xhr.setRequestHeader('range', length < 0 ? `bytes=${offset}-` : `bytes=${offset}-${offset + length - 1}`);
  xhr.send();
  const bytes = new Uint8Array(xhr.response as ArrayBuffer);
  if (xhr.status === 206 || xhr.status === 200) return bytes;
  if (xhr.status === 416) return new Uint8Array(0); // from the end of the file on
  let error: { code?: string; message?: string } = {};
  try {
    error = JSON.parse(new TextDecoder().decode(bytes)) as typeof error;
  } catch {
    // not JSON: the status says it
  }
  throw new RemoteFsError(error.code ?? `HTTP${xhr.status}`, error.message ?? `read ${path}: HTTP ${xhr.status}`);
}

/** The JSON answer of a call. */
export function remoteJson<T>(op: string, params: Record<string, string | number | boolean>): T {
  return JSON.parse(new TextDecoder().decode(remoteCall(op, params))) as T;
}
