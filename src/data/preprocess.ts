/**
 * A corpus tokenized into Megatron's indexed dataset, with the flags of
 * Megatron-LM's tools/preprocess_data.py. Input is JSON lines (one document per line, the text
 * under --json-keys) or a plain text file (documents are paragraphs, split at blank lines). The main
 * thread reads the input as bytes, cuts it into lines (a line that is not UTF-8 is malformed),
 * sends chunks of about 1 MiB to --workers tokenizer threads, and writes their results in input
 * order to one builder per key: OUTPUT_PREFIX_KEY_document.bin/.idx, uint16 tokens when the
 * vocabulary fits, else int32. Outputs appear only when complete (src/data/indexed.ts).
 */
import { createReadStream, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConfigError } from '../errors.js';
import { NO_PROGRESS, type ProgressDisplay } from '../progress.js';
import { DataError, IndexedDatasetBuilder, tokenDtypeFor } from './indexed.js';
import type { Chunk, ChunkResult, WorkerInput } from './preprocess-worker.js';
import { loadTokenizer, type TokenizerState } from './tokenizer.js';

export interface PreprocessOptions {
  input: string;
  format: 'jsonl' | 'text';
  jsonKeys: string[];
  outputPrefix: string;
  tokenizer: TokenizerState;
  appendEod: boolean;
  keepEmpty: boolean;
  workers: number;
  skipBadLines: boolean;
  logInterval: number;
  /**
   * A progress display made for the input's size in MB (the CLI's bar on a terminal), or 'lines': a
   * progress line through `warn` every 10 s (piped); none by default.
   */
  progress?: 'lines' | 'none' | ((totalMb: number) => ProgressDisplay);
  warn?: (line: string) => void;
}

export interface PreprocessSummary {
  outputs: string[];
  documents: number;
  skipped: number;
  tokens: number;
  bytes: number;
  seconds: number;
  mbPerS: number;
  dtype: 'uint16' | 'int32';
}

/** The input's records and the line each starts on: JSON lines one per non-blank line, text one per paragraph. Lines that are not UTF-8 come as `bad`. */
async function* records(
  path: string,
  json: boolean,
): AsyncGenerator<{ line: number; text: string; bytes: number } | { line: number; bad: string; bytes: number }> {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let carry: Buffer = Buffer.alloc(0);
  let line = 0;
  let paragraph: string[] = [];
  let paragraphLine = 0;
  let paragraphBytes = 0;
  function* lineOut(
    bytes: Buffer,
  ): Generator<{ line: number; text: string; bytes: number } | { line: number; bad: string; bytes: number }> {
    line += 1;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      yield { line, bad: 'not UTF-8', bytes: bytes.byteLength + 1 };
      return;
    }
    if (text.endsWith('\r')) text = text.slice(0, -1);
    if (json) {
      if (text.trim() !== '') yield { line, text, bytes: bytes.byteLength + 1 };
      return;
    }
    if (text.trim() === '') {
      if (paragraph.length > 0)
        yield { line: paragraphLine, text: paragraph.join('\n').trim(), bytes: paragraphBytes + bytes.byteLength + 1 };
      paragraph = [];
      paragraphBytes = 0;
      return;
    }
    if (paragraph.length === 0) paragraphLine = line;
    paragraph.push(text);
    paragraphBytes += bytes.byteLength + 1;
  }
  for await (const data of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = carry.byteLength > 0 ? Buffer.concat([carry, data]) : data;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
      yield* lineOut(buf.subarray(start, nl));
      start = nl + 1;
    }
    carry = Buffer.from(buf.subarray(start));
  }
  if (carry.byteLength > 0) yield* lineOut(carry);
  if (paragraph.length > 0) yield { line: paragraphLine, text: paragraph.join('\n').trim(), bytes: paragraphBytes };
}

/** Tokenize `options.input` into indexed datasets. */
export async function preprocess(options: PreprocessOptions): Promise<PreprocessSummary> {
  const started = performance.now();
  const tokenizer = await loadTokenizer(options.tokenizer);
  if (options.appendEod && tokenizer.eod === null)
    throw new ConfigError(
      `appendEod: ${tokenizer.type} has no end-of-document token; leave out --append-eod, or use a tokenizer that has one`,
      'appendEod',
    );
  const dtype = tokenDtypeFor(tokenizer.vocabSize);
  try {
    mkdirSync(dirname(options.outputPrefix), { recursive: true });
  } catch (error) {
    throw new ConfigError(
      `outputPrefix: cannot make the folder ${dirname(options.outputPrefix)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give a prefix in a folder you can write`,
      'outputPrefix',
    );
  }
  const outputs = options.jsonKeys.map((key) => `${options.outputPrefix}_${key}_document`);
  const total = statSync(options.input).size;
  const warn = options.warn ?? ((line: string) => process.stderr.write(`${line}\n`));
  const progress = typeof options.progress === 'function' ? options.progress(Math.max(1, Math.round(total / 1e5) / 10)) : NO_PROGRESS;
  let lastLine = performance.now();
  const workerInput: WorkerInput = {
    tokenizer: options.tokenizer,
    keys: options.jsonKeys,
    json: options.format === 'jsonl',
    appendEod: options.appendEod,
  };
  const workers = Array.from(
    { length: options.workers },
    () => new Worker(new URL('./preprocess-worker.js', import.meta.url), { workerData: workerInput }),
  );
  const builders: IndexedDatasetBuilder[] = [];
  let failure: Error | null = null;
  const results = new Map<number, ChunkResult>();
  const chunkLines = new Map<number, number[]>();
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  const ready = workers.map(
    (w) =>
      new Promise<void>((resolve, reject) => {
        w.on('message', (m: ChunkResult | 'ready') => {
          if (m === 'ready') resolve();
          else {
            results.set(m.id, m);
            notify();
          }
        });
        w.on('error', (error) => {
          failure ??= error;
          reject(error);
          notify();
        });
      }),
  );
  let documents = 0;
  let skipped = 0;
  let tokens = 0;
  let bytesRead = 0;
  let written = 0; // chunks written, in order
  let sent = 0;
  const inFlight = () => sent - written;
  const fail = (line: number, reason: string): void => {
    const where = `${options.input} line ${line}: ${reason}`;
    if (!options.skipBadLines) throw new DataError(`${where}; fix or remove the line, or give --on-bad-line skip`);
    progress.clear();
    warn(`webtron preprocess-data: ${where}; skipped`);
    skipped += 1;
  };
  /** Write every finished chunk that is next in input order. */
  const drain = () => {
    for (let r = results.get(written); r; r = results.get(written)) {
      results.delete(written);
      const lines = chunkLines.get(written)!;
      chunkLines.delete(written);
      const bad = new Map(r.bad.map((b) => [b.record, b.reason]));
      const offsets = r.lengths.map(() => 0);
      for (let i = 0; i < lines.length; i++) {
        const reason = bad.get(i);
        if (reason !== undefined) {
          fail(lines[i]!, reason);
          continue;
        }
        r.lengths.forEach((lengths, k) => {
          const n = lengths[i]!;
          if (n > 0 || options.keepEmpty) builders[k]!.addDocument([r.tokens[k]!.subarray(offsets[k]!, offsets[k]! + n)]);
          offsets[k]! += n;
          tokens += n;
        });
        documents += 1;
        if (documents % options.logInterval === 0) {
          const rate = `${(bytesRead / 1e6 / ((performance.now() - started) / 1000)).toFixed(2)} MB/s`;
          progress.update(Math.round(bytesRead / 1e5) / 10, `MB | ${documents.toLocaleString('en-US')} documents | ${rate}`);
          if (options.progress === 'lines' && performance.now() - lastLine >= 10_000) {
            lastLine = performance.now();
            warn(
              `webtron preprocess-data: ${documents.toLocaleString('en-US')} documents, ${(bytesRead / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB, ${rate}`,
            );
          }
        }
      }
      written += 1;
    }
  };
  const waitFor = async (condition: () => boolean) => {
    while (!condition()) {
      if (failure) throw failure;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      if (failure) throw failure;
      drain();
    }
  };
  try {
    await Promise.all(ready);
    for (const path of outputs) builders.push(new IndexedDatasetBuilder(path, dtype));
    let chunk: Chunk = { id: 0, lines: [], records: [] };
    let chunkBytes = 0;
    const send = async () => {
      if (chunk.records.length === 0) return;
      await waitFor(() => inFlight() < 2 * workers.length);
      chunkLines.set(chunk.id, chunk.lines);
      workers[chunk.id % workers.length]!.postMessage(chunk);
      sent += 1;
      chunk = { id: sent, lines: [], records: [] };
      chunkBytes = 0;
    };
    for await (const record of records(options.input, options.format === 'jsonl')) {
      bytesRead += record.bytes;
      if ('bad' in record) {
        await send(); // lines before it first, in order
        await waitFor(() => inFlight() === 0);
        fail(record.line, record.bad);
        continue;
      }
      chunk.lines.push(record.line);
      chunk.records.push(record.text);
      chunkBytes += record.bytes;
      if (chunkBytes >= 1 << 20) await send();
    }
    await send();
    await waitFor(() => inFlight() === 0);
    if (documents === 0)
      throw new DataError(`${options.input}: no documents${skipped ? ` (${skipped} malformed lines skipped)` : ''}; nothing to write`);
    for (const b of builders) b.finish();
  } catch (error) {
    for (const b of builders) b.abort();
    throw error;
  } finally {
    progress.finish();
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const seconds = (performance.now() - started) / 1000;
  return { outputs, documents, skipped, tokens, bytes: total, seconds, mbPerS: total / 1e6 / seconds, dtype };
}
