/**
 * A Hugging Face GPT-2 or Llama model's weights read one tensor at a time: model.safetensors, or the shards that
 * model.safetensors.index.json maps. Every header is read and every param's name, shape and dtype
 * checked before any data; then each param is read when it is asked for, so host memory holds one
 * tensor (and its 16-bit words while they widen) whatever the model's size.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readHeader, type SafetensorsHeader, type TensorEntry } from '../checkpoint/safetensors.js';
import { wordsToFloat32 } from '../collectives/reduce.js';
import { ConfigError } from '../errors.js';
import type { GptShape } from '../nn/gpt-spec.js';
import { gptParams, isNormWeight } from '../nn/gpt-spec.js';
import { isMaskBuffer, unlikeGpt2, webtronName } from './gpt2.js';
import { llamaImport } from './llama.js';

/** Whether `path` is a folder (a Hugging Face model for --init-from) rather than a file (an ONNX model). */
export function isFolder(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory();
}

export interface HfWeights {
  /** Param `name`'s values (webtron's name), read from its file now. */
  read(name: string): Float32Array;
  /** The files read: one, or the shards of the index. */
  files: string[];
  close(): void;
}

const fail = (message: string) => new ConfigError(`initFrom: ${message}`, 'initFrom');

/** The safetensors files of `dir`: model.safetensors, or the shards its index names. */
function weightFiles(dir: string): string[] {
  const single = join(dir, 'model.safetensors');
  if (existsSync(single)) return [single];
  const indexFile = join(dir, 'model.safetensors.index.json');
  if (existsSync(indexFile)) {
    let map: unknown;
    try {
      map = (JSON.parse(readFileSync(indexFile, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (error) {
      throw fail(`${indexFile} is not JSON (${(error as Error).message})`);
    }
    if (typeof map !== 'object' || map === null || !Object.values(map).every((f) => typeof f === 'string' && !f.includes('/')))
      throw fail(`${indexFile} has no weight_map of tensor names to file names in the folder`);
    return [...new Set(Object.values(map as Record<string, string>))].map((f) => join(dir, f));
  }
  const bin = existsSync(join(dir, 'pytorch_model.bin'));
  throw fail(
    `${dir} has no model.safetensors${bin ? ' (only pytorch_model.bin, a pickle webtron does not read)' : ''}; save the model with save_pretrained(DIR, safe_serialization=True), or give a folder that has one`,
  );
}

/**
 * Open the weights of the folder `dir` for `model`: a GPT-2 folder's (openHfWeights) when the model
 * has GPT-2's block, else a Llama folder's, each param assembled from Llama's tensors (llamaImport);
 * norm weights less 1 for a model with zero-centered ones (--apply-layernorm-1p).
 */
export function openFolderWeights(dir: string, model: GptShape): HfWeights {
  const weights = openFolderTensors(dir, model);
  return model.applyLayernorm1p ? zeroCenteredNorms(weights) : weights;
}

function openFolderTensors(dir: string, model: GptShape): HfWeights {
  if (unlikeGpt2(model) === null) return openHfWeights(dir, gptParams(model), model.tiedHead !== false);
  const llama = llamaImport(model);
  const names = new Set(llama.expected.map((t) => t.name));
  const tensors = openKeyedTensors(dir, llama.expected, (name) => {
    if (names.has(name)) return name;
    // Buffers some savers write: rope's inverse frequencies, and the tied head's copy.
    return /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (name === 'lm_head.weight' && model.tiedHead !== false)
      ? 'skip'
      : null;
  });
  return { files: tensors.files, read: (param) => llama.assemble(param, (name) => tensors.read(name)), close: () => tensors.close() };
}

/**
 * `weights` for a model with zero-centered norm weights (--apply-layernorm-1p): a folder's norms
 * hold gamma, the model's params gamma - 1.
 */
function zeroCenteredNorms(weights: HfWeights): HfWeights {
  return { ...weights, read: (param) => (isNormWeight(param) ? weights.read(param).map((v) => v - 1) : weights.read(param)) };
}

/**
 * Open `dir`'s weights for params `specs` (webtron's names and shapes): names with or without
 * `transformer.`, F32, F16 or BF16. A param missing, a shape that differs, another dtype, or a
 * tensor that is no GPT-2 param is one ConfigError naming each. With a tied head, an
 * `lm_head.weight` in the file is the tied copy some savers write, and is not read.
 */
export function openHfWeights(dir: string, specs: readonly { name: string; shape: readonly number[] }[], tiedHead: boolean): HfWeights {
  return openKeyedTensors(dir, specs, (file) => {
    const name = webtronName(file);
    if (name === null) return isMaskBuffer(file) || (tiedHead && /^(transformer\.)?lm_head\.weight$/.test(file)) ? 'skip' : null;
    return name === 'lm_head.weight' && tiedHead ? 'skip' : name;
  });
}

/**
 * The tensors of `dir`'s files by key: `keyOf` names each file tensor's key ('skip' to pass it by,
 * null for a stranger); every key of `expected` must be there at its shape, in F32, F16 or BF16, and
 * no stranger, else one ConfigError names each problem.
 */
export function openKeyedTensors(
  dir: string,
  expected: readonly { name: string; shape: readonly number[] }[],
  keyOf: (fileName: string) => string | 'skip' | null,
): HfWeights {
  const files = weightFiles(dir);
  const fds = new Map<string, number>();
  const close = () => {
    for (const fd of fds.values()) closeSync(fd);
    fds.clear();
  };
  try {
    const found = new Map<string, { header: SafetensorsHeader; entry: TensorEntry; fd: number }>();
    const strangers: string[] = [];
    for (const file of files) {
      let fd: number;
      try {
        fd = openSync(file, 'r');
      } catch (error) {
        throw fail(`cannot open ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      }
      fds.set(file, fd);
      let header: SafetensorsHeader;
      try {
        header = readHeader(fd, file);
      } catch (error) {
        throw fail((error as Error).message);
      }
      for (const entry of header.entries.values()) {
        const name = keyOf(entry.name);
        if (name === 'skip') continue;
        if (name === null) {
          strangers.push(entry.name);
          continue;
        }
        if (found.has(name)) throw fail(`${file}: '${entry.name}' is a second copy of '${name}'`);
        found.set(name, { header, entry, fd });
      }
    }
    const problems: string[] = [];
    for (const spec of expected) {
      const f = found.get(spec.name);
      if (!f) problems.push(`'${spec.name}' [${spec.shape.join(', ')}] is missing`);
      else if (f.entry.shape.join(',') !== spec.shape.join(','))
        problems.push(`'${f.entry.name}' is [${f.entry.shape.join(', ')}], config.json makes it [${spec.shape.join(', ')}]`);
      else if (!['F32', 'F16', 'BF16'].includes(f.entry.dtype))
        problems.push(`'${f.entry.name}' is ${f.entry.dtype}, not F32, F16 or BF16`);
    }
    const wanted = new Set(expected.map((s) => s.name));
    for (const name of found.keys()) if (!wanted.has(name)) strangers.push(name);
    if (strangers.length > 0)
      problems.push(
        `${strangers.length === 1 ? 'tensor' : 'tensors'} ${strangers
          .slice(0, 5)
          .map((s) => `'${s}'`)
          .join(
            ', ',
          )}${strangers.length > 5 ? ` and ${strangers.length - 5} more` : ''} ${strangers.length === 1 ? 'is' : 'are'} no param of the model config.json describes`,
      );
    if (problems.length > 0) throw fail(`${dir}: the weights do not fit its config.json: ${problems.join('; ')}`);
    return {
      files,
      read(name) {
        const f = found.get(name);
        if (!f) throw fail(`${dir}: no tensor for '${name}'`);
        const { header, entry, fd } = f;
        const numel = entry.shape.reduce((a, b) => a * b, 1);
        const out = new Float32Array(numel);
        const bytes = entry.dtype === 'F32' ? new Uint8Array(out.buffer) : new Uint8Array(new Uint16Array(numel).buffer, 0, numel * 2);
        for (let at = 0; at < bytes.byteLength; ) {
          const got = readSync(fd, bytes, at, bytes.byteLength - at, header.dataStart + entry.begin + at);
          if (got === 0) throw fail(`${header.file}: ends inside '${entry.name}'`);
          at += got;
        }
        if (entry.dtype !== 'F32') wordsToFloat32(new Uint16Array(bytes.buffer), entry.dtype === 'BF16' ? 'bfloat16' : 'float16', out);
        return out;
      },
      close,
    };
  } catch (error) {
    close();
    throw error;
  }
}
