/** `webtron preprocess-data`: Megatron-LM's tools/preprocess_data.py flags over src/data/preprocess.ts. */
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { preprocess, type PreprocessOptions } from '../data/preprocess.js';
import {
  checkTokenizerType,
  readTokenizerFiles,
  tokenizerFilesProblem,
  type TokenizerState,
  type TokenizerType,
} from '../data/tokenizer.js';
import type { Command } from './command.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';
import { ProgressBar } from './progress.js';

export const PREPROCESS_FLAGS: Record<string, FlagSpec> = {
  input: { kind: 'string', help: 'the corpus: JSON lines (.json, .jsonl) or a UTF-8 text file (documents split at blank lines)' },
  'input-format': { kind: 'string', default: 'auto', help: 'jsonl, text, or auto (jsonl for .json and .jsonl files)' },
  'json-keys': { kind: 'strings', default: ['text'], help: 'keys of each JSON line to tokenize, one output per key' },
  'output-prefix': { kind: 'string', help: 'writes OUTPUT_PREFIX_KEY_document.bin and .idx' },
  'tokenizer-type': { kind: 'string', help: 'ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer or NullTokenizer (text of ids)' },
  'vocab-size': { kind: 'int', help: 'NullTokenizer: its ids, the last the end of document' },
  'vocab-file': { kind: 'string', help: "GPT2BPETokenizer: vocab.json (default: GPT-2's, built in)" },
  'merge-file': { kind: 'string', help: "GPT2BPETokenizer: merges.txt (default: GPT-2's, built in)" },
  'tokenizer-model': { kind: 'string', help: 'HuggingFaceTokenizer: a tokenizer.json, or a folder holding one' },
  'append-eod': { kind: 'boolean', help: "end every document with the tokenizer's end-of-document token" },
  'keep-empty': { kind: 'boolean', help: 'keep documents that have no tokens (dropped by default)' },
  workers: { kind: 'int', help: 'tokenizer threads (default: every core)' },
  'on-bad-line': { kind: 'string', default: 'error', help: 'a malformed line: error (stop, write nothing) or skip (report it and go on)' },
  'log-interval': { kind: 'int', default: 1000, help: 'documents between progress updates' },
};

/** The options of `webtron preprocess-data`'s flags; every mistake a FlagError or ConfigError. */
export function preprocessOptions(values: FlagValues): PreprocessOptions {
  const input = values.input as string | undefined;
  if (!input) throw new FlagError('--input is required: the JSON lines or text file to tokenize');
  const outputPrefix = values['output-prefix'] as string | undefined;
  if (!outputPrefix) throw new FlagError('--output-prefix is required: outputs are OUTPUT_PREFIX_KEY_document.bin and .idx');
  const type = values['tokenizer-type'] as string | undefined;
  if (!type) throw new FlagError('--tokenizer-type is required: ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer or NullTokenizer');
  const tokenizerType = checkTokenizerType(type);
  if (tokenizerType === 'CharTokenizer')
    throw new FlagError(
      '--tokenizer-type CharTokenizer builds its vocabulary from the training text, so a preprocessed dataset cannot carry it; use ByteTokenizer, GPT2BPETokenizer, HuggingFaceTokenizer or NullTokenizer',
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
  const vocabSize = nullVocabSize(tokenizerType, values['vocab-size'] as number | undefined);
  const tokenizer: TokenizerState =
    tokenizerType === 'ByteTokenizer'
      ? { type: 'ByteTokenizer' }
      : tokenizerType === 'NullTokenizer'
        ? { type: 'NullTokenizer', vocabSize: vocabSize! }
        : readTokenizerFiles(tokenizerType, files);
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

export async function preprocessCommand(values: FlagValues): Promise<void> {
  const options = preprocessOptions(values);
  const summary = await preprocess({
    ...options,
    progress:
      process.stderr.isTTY === true || process.env.WEBTRON_STDERR_TTY === '1'
        ? (totalMb) => new ProgressBar(totalMb, process.stderr, true)
        : 'lines',
  });
  console.log(
    `webtron preprocess-data: ${summary.documents.toLocaleString('en-US')} documents, ${summary.tokens.toLocaleString('en-US')} tokens (${summary.dtype}) from ${(summary.bytes / 1e6).toFixed(2)} MB in ${summary.seconds.toFixed(2)} s (${summary.mbPerS.toFixed(2)} MB/s, ${options.workers} worker${options.workers === 1 ? '' : 's'})` +
      `${summary.skipped ? `; ${summary.skipped} malformed line${summary.skipped === 1 ? '' : 's'} skipped` : ''} -> ${summary.outputs.map((o) => `${o}.bin/.idx`).join(', ')}`,
  );
}

export const preprocessData: Command = {
  summary: "tokenize a JSON lines or text corpus into Megatron's indexed dataset (PREFIX_text_document.bin/.idx) for train --data-path",
  flags: PREPROCESS_FLAGS,
  run: (values) => preprocessCommand(values),
};

/** --vocab-size, which NullTokenizer needs and no other tokenizer takes (each brings its vocabulary). */
export function nullVocabSize(type: TokenizerType, given: number | undefined): number | null {
  if (type !== 'NullTokenizer') {
    if (given !== undefined)
      throw new FlagError(`--vocab-size is for --tokenizer-type NullTokenizer; ${type} brings its own vocabulary: leave it out`);
    return null;
  }
  if (given === undefined) throw new FlagError('--tokenizer-type NullTokenizer needs --vocab-size: its ids, the last the end of document');
  if (!Number.isInteger(given) || given < 2) throw new FlagError(`--vocab-size must be an integer of at least 2, got ${given}`);
  return given;
}
