/**
 * Megatron-LM's own checkpoints, read as the start of a webtron run (`--init-from`): the
 * `--ckpt-format torch` folder of one tensor- and pipeline-parallel rank,
 *
 *   SAVE/latest_checkpointed_iteration.txt     the iteration, or "release"
 *   SAVE/iter_0000050/mp_rank_00/model_optim_rng.pt
 *
 * whose torch.save dict holds `args` (the argparse namespace the run had), `iteration` and `model`,
 * Megatron-core GPTModel's state dict. Its names and layouts, from megatron/core:
 * - `embedding.word_embeddings.weight` [padded vocab, h], `embedding.position_embeddings.weight`;
 * - per layer `decoder.layers.N.`: the input norm (`input_layernorm.*`, or Transformer Engine's
 *   `self_attention.linear_qkv.layer_norm_*`), `self_attention.linear_qkv` whose rows are the query
 *   groups in turn, each its heads' q, then its k, then its v; `q_layernorm`, `k_layernorm`;
 *   `linear_proj`; the MLP's norm (`pre_mlp_layernorm.*` or `mlp.linear_fc1.layer_norm_*`);
 *   `mlp.linear_fc1` (the gate's rows, then the value's, with SwiGLU) and `mlp.linear_fc2`;
 * - `decoder.final_layernorm.*`, and `output_layer.weight` when the head is untied.
 * Every linear weight is torch's [out, in]; webtron keeps [in, out], q of all heads before k and v.
 * Transformer Engine's `_extra_state` records (its FP8 bookkeeping) carry no weights and are passed by.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { type GptShape, gptParams, headDim, queryGroups } from '../nn/gpt-spec.js';
import { TRACKER } from './dir.js';
import { isTensorRef, type TensorRef, TorchArchive } from './torch-archive.js';

const fail = (message: string) => new ConfigError(`initFrom: ${message}`, 'initFrom');

const RANK_FILE = 'model_optim_rng.pt';

/** The iteration folder a Megatron SAVE folder's tracker names ("release" or a number). */
function trackedFolder(dir: string): string {
  const text = readFileSync(join(dir, TRACKER), 'utf8').trim();
  if (text === 'release') return join(dir, 'release');
  if (!/^\d+$/.test(text)) throw fail(`${join(dir, TRACKER)} holds '${text.slice(0, 40)}', not an iteration or 'release'`);
  return join(dir, `iter_${text.padStart(7, '0')}`);
}

/**
 * The model_optim_rng.pt that `path` means, when it is a Megatron checkpoint: the file itself, a
 * rank folder (mp_rank_00), an iteration folder, or SAVE with its tracker. Null for anything else
 * (a Hugging Face folder, a webtron checkpoint, an ONNX model). Megatron's other layouts are one
 * line each: several model-parallel ranks, and torch_dist's sharded files.
 */
export function megatronCheckpointFile(path: string): string | null {
  if (!existsSync(path)) return null;
  if (!statSync(path).isDirectory()) return path.endsWith('.pt') ? path : null;
  if (existsSync(join(path, RANK_FILE))) return join(path, RANK_FILE);
  const iteration = existsSync(join(path, TRACKER)) ? trackedFolder(path) : path;
  if (!existsSync(iteration) || !statSync(iteration).isDirectory()) return null;
  const names = readdirSync(iteration);
  const ranks = names.filter((n) => /^mp_rank_\d\d(_\d{3}){0,2}$/.test(n)).sort();
  if (ranks.length > 1 || (ranks.length === 1 && ranks[0] !== 'mp_rank_00'))
    throw fail(
      `${iteration} holds ${ranks.length} model-parallel ranks (${ranks.slice(0, 3).join(', ')}${ranks.length > 3 ? ', …' : ''}); webtron reads one: convert it to tensor and pipeline parallel size 1 with Megatron's tools/checkpoint/convert.py (--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1)`,
    );
  if (ranks.length === 1) {
    const file = join(iteration, ranks[0]!, RANK_FILE);
    if (!existsSync(file)) throw fail(`${join(iteration, ranks[0]!)} has no ${RANK_FILE}`);
    return file;
  }
  if (names.includes('.metadata') || names.includes('common.pt'))
    throw fail(
      `${iteration} is Megatron's torch_dist format, which webtron does not read; have Megatron write the torch format: its training command with --load this folder --ckpt-convert-format torch --ckpt-convert-save NEW_DIR`,
    );
  return null;
}

/** What a Megatron checkpoint file holds that webtron reads. */
export interface MegatronCheckpoint {
  file: string;
  /** The run's argparse namespace, field by field. */
  args: Record<string, unknown>;
  iteration: number | null;
  /** The model's state dict: tensors by name (Transformer Engine's `_extra_state` left out). */
  tensors: Map<string, TensorRef>;
  archive: TorchArchive;
}

/** Open `file` (megatronCheckpointFile) and read its pickle: args, iteration and the model's tensors. */
export function openMegatronCheckpoint(file: string): MegatronCheckpoint {
  const archive = TorchArchive.open(file);
  try {
    const root = archive.load();
    if (!(root instanceof Map)) throw fail(`${file} holds no dict (torch.load would give ${typeof root})`);
    const args = root.get('args');
    if (typeof args !== 'object' || args === null || (args as { $call?: string }).$call !== 'argparse.Namespace')
      throw fail(`${file} holds no 'args' namespace; is it a checkpoint Megatron's save_checkpoint wrote?`);
    const model = root.get('model');
    if (!(model instanceof Map)) {
      const many = [...root.keys()].filter((k) => /^model\d+$/.test(String(k)));
      throw fail(
        many.length > 0
          ? `${file} holds ${many.length} model chunks (virtual pipeline stages); convert it to one with Megatron's tools/checkpoint/convert.py`
          : `${file} holds no 'model' state dict`,
      );
    }
    const tensors = new Map<string, TensorRef>();
    const legacy: string[] = [];
    for (const [name, value] of model) {
      if (String(name).endsWith('._extra_state')) continue;
      if (isTensorRef(value)) tensors.set(String(name), value);
      else legacy.push(String(name));
    }
    if (legacy.length > 0)
      throw fail(
        `${file}'s model holds ${legacy.slice(0, 2).join(', ')}, not tensors: Megatron's legacy model (language_model.*), which webtron does not read; convert it to Megatron-core's names with Megatron's tools/checkpoint/convert.py --saver core`,
      );
    const iteration = root.get('iteration');
    return { file, args: args as Record<string, unknown>, iteration: typeof iteration === 'number' ? iteration : null, tensors, archive };
  } catch (error) {
    archive.close();
    throw error;
  }
}

/** The weights of a Megatron checkpoint as webtron's params: `read(param)` for each of gptParams(model). */
export interface MegatronWeights {
  read(name: string): Float32Array;
  files: string[];
  close(): void;
}

/**
 * Where one of webtron's params lies in Megatron-core's state dict: the tensor's name, and its
 * arrangement. A linear weight is transposed (webtron [in, out], torch [out, in]); qkv's outputs are
 * also regrouped, webtron's output c being Megatron's `row(c)`.
 */
interface Placement {
  name: string;
  /** webtron [in, out] against torch's [out, in]. */
  transposed: boolean;
  row?: (c: number) => number;
}

/**
 * linear_qkv's row for webtron's qkv column c: webtron has q of every head, then k of every group,
 * then v; Megatron has, group by group, the group's heads' q, its k and its v.
 */
export function megatronQkvRow(model: GptShape): (c: number) => number {
  const hd = headDim(model);
  const heads = model.numAttentionHeads;
  const perGroup = heads / queryGroups(model);
  const groupRows = (perGroup + 2) * hd;
  return (c) => {
    const j = c % hd;
    const unit = Math.floor(c / hd);
    if (unit < heads) return Math.floor(unit / perGroup) * groupRows + (unit % perGroup) * hd + j;
    const kv = unit - heads;
    const groups = queryGroups(model);
    return kv < groups ? kv * groupRows + perGroup * hd + j : (kv - groups) * groupRows + (perGroup + 1) * hd + j;
  };
}

/** Megatron's implementations, by their names for the layer norms before qkv and fc1. */
export type TransformerImpl = 'local' | 'transformer_engine';

/**
 * Where each of webtron's params lies in Megatron-core's state dict. `fused(layer)` says whether a
 * norm before qkv or fc1 is Transformer Engine's, fused into the linear layer (`linear_qkv.layer_norm_weight`),
 * or the local spec's module (`input_layernorm.weight`).
 */
function placements(model: GptShape, fused: (local: string) => boolean): Map<string, Placement> {
  const map = new Map<string, Placement>();
  const put = (param: string, name: string, transposed = false, row?: (c: number) => number) =>
    map.set(param, { name, transposed, ...(row ? { row } : {}) });
  const norm = (param: string, local: string, te: string) => {
    const prefix = fused(local) ? te : `${local}.`;
    put(`${param}.weight`, `${prefix}weight`);
    put(`${param}.bias`, `${prefix}bias`);
  };
  put('wte.weight', 'embedding.word_embeddings.weight');
  put('wpe.weight', 'embedding.position_embeddings.weight');
  const row = megatronQkvRow(model);
  for (let l = 0; l < model.numLayers; l++) {
    const b = `blocks.${l}`;
    const m = `decoder.layers.${l}`;
    norm(`${b}.ln_1`, `${m}.input_layernorm`, `${m}.self_attention.linear_qkv.layer_norm_`);
    put(`${b}.attn.qkv.weight`, `${m}.self_attention.linear_qkv.weight`, true, row);
    put(`${b}.attn.qkv.bias`, `${m}.self_attention.linear_qkv.bias`, false, row);
    put(`${b}.attn.ln_q.weight`, `${m}.self_attention.q_layernorm.weight`);
    put(`${b}.attn.ln_q.bias`, `${m}.self_attention.q_layernorm.bias`);
    put(`${b}.attn.ln_k.weight`, `${m}.self_attention.k_layernorm.weight`);
    put(`${b}.attn.ln_k.bias`, `${m}.self_attention.k_layernorm.bias`);
    put(`${b}.attn.proj.weight`, `${m}.self_attention.linear_proj.weight`, true);
    put(`${b}.attn.proj.bias`, `${m}.self_attention.linear_proj.bias`);
    norm(`${b}.ln_2`, `${m}.pre_mlp_layernorm`, `${m}.mlp.linear_fc1.layer_norm_`);
    put(`${b}.mlp.fc.weight`, `${m}.mlp.linear_fc1.weight`, true);
    put(`${b}.mlp.fc.bias`, `${m}.mlp.linear_fc1.bias`);
    put(`${b}.mlp.proj.weight`, `${m}.mlp.linear_fc2.weight`, true);
    put(`${b}.mlp.proj.bias`, `${m}.mlp.linear_fc2.bias`);
  }
  put('ln_f.weight', 'decoder.final_layernorm.weight');
  put('ln_f.bias', 'decoder.final_layernorm.bias');
  put('lm_head.weight', 'output_layer.weight');
  return map;
}

/** The torch shape of a param of webtron shape `shape` placed by `p`: [out, in] for a linear weight. */
const torchShape = (p: Placement, shape: readonly number[]): number[] => (p.transposed ? [...shape].reverse() : [...shape]);

/** A tensor of Megatron's state dict, `values` in torch's layout, as webtron's param of shape `shape`. */
function toWebtron(p: Placement, shape: readonly number[], values: Float32Array): Float32Array {
  const row = p.row ?? ((c: number) => c);
  if (!p.transposed) return p.row ? Float32Array.from({ length: values.length }, (_, c) => values[row(c)]!) : values;
  const [inputs, outputs] = shape as [number, number];
  const out = new Float32Array(inputs * outputs);
  for (let c = 0; c < outputs; c++) {
    const from = row(c) * inputs;
    for (let r = 0; r < inputs; r++) out[r * outputs + c] = values[from + r]!;
  }
  return out;
}

/** webtron's param `values` of shape `shape` in torch's layout for Megatron's state dict (toWebtron's inverse). */
function toMegatron(p: Placement, shape: readonly number[], values: Float32Array): Float32Array {
  const row = p.row ?? ((c: number) => c);
  const out = new Float32Array(values.length);
  if (!p.transposed) {
    for (let c = 0; c < values.length; c++) out[row(c)] = values[c]!;
    return out;
  }
  const [inputs, outputs] = shape as [number, number];
  for (let c = 0; c < outputs; c++) {
    const to = row(c) * inputs;
    for (let r = 0; r < inputs; r++) out[to + r] = values[r * outputs + c]!;
  }
  return out;
}

/** Megatron-core's state dict for webtron's `model` under `impl`: each tensor's name, torch shape, param, and its values from the param's. */
export function megatronTensors(
  model: GptShape,
  impl: TransformerImpl,
): { name: string; shape: number[]; param: string; values: (param: Float32Array) => Float32Array }[] {
  const map = placements(model, () => impl === 'transformer_engine');
  return gptParams(model).map((spec) => {
    const p = map.get(spec.name)!;
    return { name: p.name, shape: torchShape(p, spec.shape), param: spec.name, values: (v) => toMegatron(p, spec.shape, v) };
  });
}

/**
 * The params of `model` from an open checkpoint. Every param's tensor must be there at its shape
 * (torch's), and every tensor of the state dict must be some param's (a tied head's
 * `output_layer.weight` aside), else one ConfigError names the first three problems.
 */
export function megatronWeights(checkpoint: MegatronCheckpoint, model: GptShape): MegatronWeights {
  const { tensors, file, archive } = checkpoint;
  // Transformer Engine's fused norms where the file has them, else the local spec's modules.
  const te = [...tensors.keys()].some((name) => name.includes('.layer_norm_'));
  const map = placements(model, (local) => te && !tensors.has(`${local}.weight`));
  const used = new Set<string>();
  const problems: string[] = [];
  const shapes = new Map(gptParams(model).map((spec) => [spec.name, spec.shape]));
  for (const [param, shape] of shapes) {
    const p = map.get(param)!; // placements places every param gptParams can name
    used.add(p.name);
    const tensor = tensors.get(p.name);
    const want = torchShape(p, shape);
    if (!tensor) problems.push(`it has no ${p.name} [${want.join(', ')}]`);
    else if (tensor.shape.join(',') !== want.join(','))
      problems.push(`its ${p.name} is [${tensor.shape.join(', ')}], where the model's flags make it [${want.join(', ')}]`);
  }
  const strangers = [...tensors.keys()].filter((name) => !used.has(name) && !(name === 'output_layer.weight' && model.tiedHead !== false));
  if (strangers.length > 0)
    problems.push(
      `it holds ${strangers.slice(0, 3).join(', ')}${strangers.length > 3 ? ` and ${strangers.length - 3} more` : ''}, which no param of the model takes`,
    );
  if (problems.length > 0) {
    archive.close();
    const more = problems.length > 3 ? `; and ${problems.length - 3} more` : '';
    throw fail(`${file}: ${problems.slice(0, 3).join('; ')}${more}`);
  }
  return {
    files: [file],
    read(name) {
      const p = map.get(name)!;
      return toWebtron(p, shapes.get(name)!, archive.read(tensors.get(p.name)!, p.name));
    },
    close: () => archive.close(),
  };
}
