/**
 * A worker thread of `webtron preprocess-data`: takes chunks of input records (JSON lines or text
 * documents), tokenizes the chosen keys and posts back, per record, the tokens of each key or what
 * was wrong with the line. One tokenizer per thread, built from the state the main thread passes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { concatTokens } from './indexed.js';
import { loadTokenizer, type TokenizerState } from './tokenizer.js';

export interface WorkerInput {
  tokenizer: TokenizerState;
  keys: string[];
  json: boolean;
  appendEod: boolean;
}

export interface Chunk {
  id: number;
  /** Line number (1-based) of each record's first line. */
  lines: number[];
  records: string[];
}

export interface ChunkResult {
  id: number;
  /** Per key: every record's tokens back to back. */
  tokens: Uint32Array[];
  /** Per key: tokens per record (records that failed count 0 and are listed in `bad`). */
  lengths: Uint32Array[];
  /** Records that failed: their index in the chunk and the reason. */
  bad: { record: number; reason: string }[];
}

const input = workerData as WorkerInput;
const tokenizer = await loadTokenizer(input.tokenizer);
if (input.appendEod && tokenizer.eod === null) throw new Error(`${tokenizer.type} has no end-of-document token`);

/** The texts of the record's keys, or why it has none. */
function texts(record: string): string[] | string {
  if (!input.json) return [record];
  let value: unknown;
  try {
    value = JSON.parse(record);
  } catch (error) {
    return `not JSON (${(error as Error).message})`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const out: string[] = [];
  for (const key of input.keys) {
    const text = (value as Record<string, unknown>)[key];
    if (typeof text !== 'string') return text === undefined ? `no key "${key}"` : `"${key}" is not a string`;
    out.push(text);
  }
  return out;
}

parentPort!.on('message', (chunk: Chunk) => {
  const perKey = input.keys.map(() => ({ parts: [] as Uint32Array[], lengths: new Uint32Array(chunk.records.length) }));
  const bad: ChunkResult['bad'] = [];
  chunk.records.forEach((record, r) => {
    const got = texts(record);
    if (typeof got === 'string') {
      bad.push({ record: r, reason: got });
      return;
    }
    let encoded: Uint32Array[];
    try {
      encoded = got.map((text) => tokenizer.encode(text));
    } catch (error) {
      // Text the tokenizer cannot read (NullTokenizer's, not ids) makes the line a bad one.
      bad.push({ record: r, reason: (error as Error).message });
      return;
    }
    encoded.forEach((tokens, k) => {
      let ids = tokens;
      if (input.appendEod && ids.length > 0) {
        const withEod = new Uint32Array(ids.length + 1);
        withEod.set(ids);
        withEod[ids.length] = tokenizer.eod!;
        ids = withEod;
      }
      perKey[k]!.parts.push(ids);
      perKey[k]!.lengths[r] = ids.length;
    });
  });
  const tokens = perKey.map(({ parts }) => concatTokens(parts));
  const result: ChunkResult = { id: chunk.id, tokens, lengths: perKey.map((k) => k.lengths), bad };
  parentPort!.postMessage(result, [...tokens.map((t) => t.buffer as ArrayBuffer), ...result.lengths.map((l) => l.buffer as ArrayBuffer)]);
});
parentPort!.postMessage('ready');
