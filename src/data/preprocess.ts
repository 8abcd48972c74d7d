/**
 * `webtron preprocess-data`: a corpus tokenized into Megatron's indexed dataset, with the flags of
 * Megatron-LM's tools/preprocess_data.py. Input is JSON lines (one document per line, the text
 * under --json-keys) or a plain text file (documents are paragraphs, split at blank lines). The main
 * thread reads the input as bytes, cuts it into lines (a line that is not UTF-8 is malformed),
 * sends chunks of about 1 MiB to --workers tokenizer threads, and writes their results in input
 * order to one builder per key: OUTPUT_PREFIX_KEY_document.bin/.idx, uint16 tokens when the
 * vocabulary fits, else int32. Outputs appear only when complete (src/data/indexed.ts).
 */
import { createReadStream, mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ConfigError } from '../errors.js';
import { FlagError, type FlagSpec, type FlagValues } from '../train/flags.js';
import { ProgressBar } from '../train/run-log.js';
import { DataError, IndexedDatasetBuilder, tokenDtypeFor } from './indexed.js';
import type { Chunk, ChunkResult, WorkerInput } from './preprocess-worker.js';
import { checkTokenizerType, loadTokenizer, readTokenizerFiles, tokenizerFilesProblem, type TokenizerState } from './tokenizer.js';

export const PREPROCESS_FLAGS: Record<string, FlagSpec> = {
  input: { kind: 'string', help: 'the corpus: JSON lines (.json, .jsonl) or a UTF-8 text file (documents split at blank lines)' },
  'input-format': { kind: 'string', default: 'auto', help: 'jsonl, text, or auto (jsonl for .json and .jsonl files)' },
  'json-keys': { kind: 'strings', default: ['text'], help: 'keys of each JSON line to tokenize, one output per key' },
  'output-prefix': { kind: 'string', help: 'writes OUTPUT_PREFIX_KEY_document.bin and .idx' },
  'tokenizer-type': { kind: 'string', help: 'ByteTokenizer, GPT2BPETokenizer or HuggingFaceTokenizer' },
  'vocab-file': { kind: 'string', help: "GPT2BPETokenizer: vocab.json (default: GPT-2's, built in)" },
  'merge-file': { kind: 'string', help: "GPT2BPETokenizer: merges.txt (default: GPT-2's, built in)" },
  'tokenizer-model': { kind: 'string', help: 'HuggingFaceTokenizer: a tokenizer.json, or a folder holding one' },
  'append-eod': { kind: 'boolean', help: "end every document with the tokenizer's end-of-document token" },
  'keep-empty': { kind: 'boolean', help: 'keep documents that have no tokens (dropped by default)' },
  workers: { kind: 'int', help: 'tokenizer threads (default: every core)' },
  'on-bad-line': { kind: 'string', default: 'error', help: 'a malformed line: error (stop, write nothing) or skip (report it and go on)' },
  'log-interval': { kind: 'int', default: 1000, help: 'documents between progress updates' },
};

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
  /** 'bar': a progress bar on stderr (a terminal); 'lines': a progress line on stderr every 10 s (piped); none by default. */
  progress?: 'bar' | 'lines' | 'none';
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

/** The options of `webtron preprocess-data`'s flags; every mistake a FlagError or ConfigError. */
export function preprocessOptions(values: FlagValues): PreprocessOptions {
  const input = values.input as string | undefined;
  if (!input) throw new FlagError('--input is required: the JSON lines or text file to tokenize');
  const outputPrefix = values['output-prefix'] as string | undefined;
  if (!outputPrefix) throw new FlagError('--output-prefix is required: outputs are OUTPUT_PREFIX_KEY_document.bin and .idx');
  const type = values['tokenizer-type'] as string | undefined;
  if (!type) throw new FlagError('--tokenizer-type is required: ByteTokenizer, GPT2BPETokenizer or HuggingFaceTokenizer');
  const tokenizerType = checkTokenizerType(type);
  if (tokenizerType === 'CharTokenizer')
    throw new FlagError(
      '--tokenizer-type CharTokenizer builds its vocabulary from the training text, so a preprocessed dataset cannot carry it; use ByteTokenizer, GPT2BPETokenizer or HuggingFaceTokenizer',
    );
  const files = {
    vocabFile: (values['vocab-file'] as string | undefined) ?? null,
    mergeFile: (values['merge-file'] as string | undefined) ?? null,
    tokenizerModel: (values['tokenizer-model'] as string | undefined) ?? null,
  };
  const tokenizerProblem = tokenizerFilesProblem(tokenizerType, files);
  if (tokenizerProblem) throw new FlagError(tokenizerProblem);
  const format = values['input-format'] as string;
  if (!['auto', 'jsonl', 'text'].includes(format)) throw new FlagError(`--input-format must be auto, jsonl or text, got '${format}'`);
  const workers = (values.workers as number | undefined) ?? availableParallelism();
  if (!Number.isInteger(workers) || workers < 1) throw new FlagError(`--workers must be an integer of at least 1, got ${workers}`);
  const logInterval = values['log-interval'] as number;
  if (!Number.isInteger(logInterval) || logInterval < 1)
    throw new FlagError(`--log-interval must be an integer of at least 1, got ${logInterval}`);
  const onBad = values['on-bad-line'] as string;
  if (onBad !== 'error' && onBad !== 'skip') throw new FlagError(`--on-bad-line must be error or skip, got '${onBad}'`);
  const jsonKeys = values['json-keys'] as string[];
  if (new Set(jsonKeys).size !== jsonKeys.length) throw new FlagError(`--json-keys names a key twice: ${jsonKeys.join(' ')}`);
  let size: number;
  try {
    const stat = statSync(input);
    if (!stat.isFile()) throw new Error('not a file');
    size = stat.size;
  } catch (error) {
    throw new FlagError(
      `--input: cannot read ${input}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; give a JSON lines or text file`,
    );
  }
  if (size === 0) throw new FlagError(`--input: ${input} is empty; give a corpus`);
  const resolved = format === 'auto' ? (/\.jsonl?$/i.test(input) ? 'jsonl' : 'text') : (format as 'jsonl' | 'text');
  if (resolved === 'text' && values['json-keys'] !== PREPROCESS_FLAGS['json-keys']!.default && jsonKeys.join() !== 'text')
    throw new FlagError(
      `--json-keys is for JSON lines input, and ${input} is read as text (--input-format jsonl to read it as JSON lines)`,
    );
  const tokenizer: TokenizerState =
    tokenizerType === 'ByteTokenizer' ? { type: 'ByteTokenizer' } : readTokenizerFiles(tokenizerType, files);
  return {
    input,
    format: resolved,
    jsonKeys: resolved === 'text' ? ['text'] : jsonKeys,
    outputPrefix,
    tokenizer,
    appendEod: values['append-eod'] === true,
    keepEmpty: values['keep-empty'] === true,
    workers,
    skipBadLines: onBad === 'skip',
    logInterval,
  };
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
  const progress = new ProgressBar(Math.max(1, Math.round(total / 1e5) / 10), process.stderr, options.progress === 'bar');
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

export async function preprocessCommand(values: FlagValues): Promise<void> {
  const options = preprocessOptions(values);
  const summary = await preprocess({
    ...options,
    progress: process.stderr.isTTY === true || process.env.WEBTRON_STDERR_TTY === '1' ? 'bar' : 'lines',
  });
  console.log(
    `webtron preprocess-data: ${summary.documents.toLocaleString('en-US')} documents, ${summary.tokens.toLocaleString('en-US')} tokens (${summary.dtype}) from ${(summary.bytes / 1e6).toFixed(2)} MB in ${summary.seconds.toFixed(2)} s (${summary.mbPerS.toFixed(2)} MB/s, ${options.workers} worker${options.workers === 1 ? '' : 's'})` +
      `${summary.skipped ? `; ${summary.skipped} malformed line${summary.skipped === 1 ? '' : 's'} skipped` : ''} -> ${summary.outputs.map((o) => `${o}.bin/.idx`).join(', ')}`,
  );
}
