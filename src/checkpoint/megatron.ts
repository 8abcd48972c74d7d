/**
 * Megatron-LM's own checkpoints, read as the start of a webtron run (`--init-from`): the
 * `--ckpt-format torch` folder of one tensor- and pipeline-parallel rank,
 *
 *   SAVE/latest_checkpointed_iteration.txt     the iteration, or "release"
 *   SAVE/iter_0000050/mp_rank_00/model_optim_rng.pt
 *
 * whose torch.save dict holds `args` (the argparse namespace the run had), `iteration` and `model`,
 * Megatron-core GPTModel's state dict; or the `--ckpt-format torch_dist` folder (Megatron's
 * default), SAVE/iter_0000050/ holding torch's distributed checkpoint of the same tensors, global
 * whatever the parallel sizes (openDist). Their names and layouts, from megatron/core:
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
import { DistributedCheckpoint, METADATA_FILE } from './torch-dcp.js';

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
 * The Megatron checkpoint that `path` means: the model_optim_rng.pt of the torch format (the file
 * itself, a rank folder mp_rank_00, an iteration folder, or SAVE with its tracker), or the folder
 * of the torch_dist format (an iteration folder, or SAVE with its tracker). Null for anything else
 * (a Hugging Face folder, a webtron checkpoint, an ONNX model). The torch format's files of several
 * model-parallel ranks are one line.
 */
export function megatronCheckpointPath(path: string): string | null {
  if (!existsSync(path)) return null;
  if (!statSync(path).isDirectory()) return path.endsWith('.pt') ? path : null;
  if (existsSync(join(path, RANK_FILE))) return join(path, RANK_FILE);
  const iteration = existsSync(join(path, TRACKER)) ? trackedFolder(path) : path;
  if (!existsSync(iteration) || !statSync(iteration).isDirectory()) return null;
  if (existsSync(join(iteration, METADATA_FILE))) return iteration;
  const names = readdirSync(iteration);
  const ranks = names.filter((n) => /^mp_rank_\d\d(_\d{3}){0,2}$/.test(n)).sort();
  if (ranks.length > 1 || (ranks.length === 1 && ranks[0] !== 'mp_rank_00'))
    throw fail(
      `${iteration} holds ${ranks.length} model-parallel ranks (${ranks.slice(0, 3).join(', ')}${ranks.length > 3 ? ', …' : ''}); webtron reads one: convert it to tensor and pipeline parallel size 1 with Megatron's tools/checkpoint/convert.py (--target-tensor-parallel-size 1 --target-pipeline-parallel-size 1), or have Megatron save --ckpt-format torch_dist, which webtron reads at any parallel sizes`,
    );
  if (ranks.length === 1) {
    const file = join(iteration, ranks[0]!, RANK_FILE);
    if (!existsSync(file)) throw fail(`${join(iteration, ranks[0]!)} has no ${RANK_FILE}`);
    return file;
  }
  return null;
}

/** What a Megatron checkpoint holds that webtron reads. */
export interface MegatronCheckpoint {
  /** The torch format's .pt file, or the torch_dist format's folder. */
  path: string;
  format: 'torch' | 'torch_dist';
  /** The run's argparse namespace, field by field. */
  args: Record<string, unknown>;
  iteration: number | null;
  /**
   * The model's tensors, by their names in one rank's state dict (`decoder.layers.0.…`), with
   * torch's shapes; Transformer Engine's `_extra_state` records and the optimizer's state left out.
   */
  shapes: Map<string, number[]>;
  /** A tensor of `shapes` as fp32 values. */
  read(name: string): Float32Array;
  close(): void;
}

/** Open a checkpoint megatronCheckpointPath found: its args, iteration and the model's tensors. */
export function openMegatronCheckpoint(path: string): MegatronCheckpoint {
  return statSync(path).isDirectory() ? openDist(path) : openTorch(path);
}

/** The saved dict's args and iteration, checked as Megatron's save_checkpoint writes them. */
function savedState(root: unknown, where: string): { args: Record<string, unknown>; iteration: number | null } {
  if (!(root instanceof Map)) throw fail(`${where} holds no dict (torch.load would give ${typeof root})`);
  const args = root.get('args');
  if (typeof args !== 'object' || args === null || (args as { $call?: string }).$call !== 'argparse.Namespace')
    throw fail(`${where} holds no 'args' namespace; is it a checkpoint Megatron's save_checkpoint wrote?`);
  const iteration = root.get('iteration');
  return { args: args as Record<string, unknown>, iteration: typeof iteration === 'number' ? iteration : null };
}

const legacyModel = (where: string, names: string[]) =>
  fail(
    `${where}'s model holds ${names.slice(0, 2).join(', ')}: Megatron's legacy model (language_model.*), which webtron does not read; convert it to Megatron-core's names with Megatron's tools/checkpoint/convert.py --saver core`,
  );

/** The torch format: one torch.save dict holding args, iteration and the model's state dict. */
function openTorch(file: string): MegatronCheckpoint {
  const archive = TorchArchive.open(file);
  try {
    const root = archive.load();
    const { args, iteration } = savedState(root, file);
    const model = (root as Map<string, unknown>).get('model');
    if (!(model instanceof Map)) {
      const many = [...(root as Map<string, unknown>).keys()].filter((k) => /^model\d+$/.test(String(k)));
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
    if (legacy.length > 0) throw legacyModel(file, legacy);
    return {
      path: file,
      format: 'torch',
      args,
      iteration,
      shapes: new Map([...tensors].map(([name, t]) => [name, t.shape])),
      read: (name) => archive.read(tensors.get(name)!, name),
      close: () => archive.close(),
    };
  } catch (error) {
    archive.close();
    throw error;
  }
}

/**
 * The torch_dist format (megatron/core/dist_checkpointing): torch's distributed checkpoint of the
 * model's global tensors, whatever the tensor- and pipeline-parallel sizes that wrote it, beside
 * the optimizer's (`optimizer.…`, passed by); the args in the common state, Megatron's object
 * `common_state` (a torch.save'd list of the dict) or, before Megatron-core 0.19, common.pt.
 *
 * Layers are stacked on a leading axis under one key (`decoder.layers.self_attention.linear_qkv.weight`
 * [num_layers, …], TransformerBlock.sharded_state_dict's default) or keep their own
 * (`decoder.layers.0.…`); SwiGLU's linear_fc1 is one tensor, the gate's rows before the value's
 * (apply_swiglu_sharded_factory), or two, `weight_w` and `weight_v`. Either way the names here are
 * one rank's state dict's.
 */
function openDist(folder: string): MegatronCheckpoint {
  const dcp = DistributedCheckpoint.open(folder)!;
  const inObject = dcp.objects.has(COMMON_OBJECT);
  const where = inObject ? `${folder}'s ${COMMON_OBJECT}` : join(folder, COMMON_FILE);
  const common = inObject ? (dcp.object(COMMON_OBJECT) as unknown[] | undefined)?.[0] : existsSync(where) ? loadWhole(where) : undefined;
  if (common === undefined)
    throw fail(`${folder} has neither Megatron's ${COMMON_OBJECT} nor ${COMMON_FILE}; is it a torch_dist checkpoint Megatron wrote?`);
  const { args, iteration } = savedState(common, where);
  const layers = args.num_layers as number;
  const readers = new Map<string, { shape: number[]; read: () => Float32Array }>();
  const legacy: string[] = [];
  for (const [key, tensor] of dcp.tensors) {
    if (key.startsWith('optimizer.')) continue;
    if (key.startsWith('language_model.') || key.startsWith('model.language_model.')) {
      legacy.push(key);
      continue;
    }
    if (!/^decoder\.layers\.[^\d]/.test(key)) {
      readers.set(key, {
        shape: tensor.shape,
        read: () =>
          dcp.read(
            key,
            tensor.shape.map(() => 0),
            tensor.shape,
          ),
      });
      continue;
    }
    if (tensor.shape[0] !== layers)
      throw fail(`${folder}'s ${key} stacks ${tensor.shape[0]} layers, where its args say num_layers ${layers}`);
    const shape = tensor.shape.slice(1);
    for (let l = 0; l < layers; l++)
      readers.set(key.replace('decoder.layers.', `decoder.layers.${l}.`), {
        shape,
        read: () => dcp.read(key, [l, ...shape.map(() => 0)], [1, ...shape]),
      });
  }
  if (legacy.length > 0) throw legacyModel(folder, legacy);
  // SwiGLU's linear_fc1 as two tensors (weight_w, weight_v): one, the gate's rows before the value's.
  for (const [name, w] of [...readers]) {
    if (!/\.(weight|bias)_w$/.test(name)) continue;
    const v = readers.get(`${name.slice(0, -2)}_v`);
    if (!v) throw fail(`${folder} holds ${name} without its ${name.slice(0, -2)}_v`);
    readers.delete(name);
    readers.delete(`${name.slice(0, -2)}_v`);
    readers.set(name.slice(0, -2), {
      shape: [w.shape[0]! + v.shape[0]!, ...w.shape.slice(1)],
      read: () => {
        const [gate, value] = [w.read(), v.read()];
        const out = new Float32Array(gate.length + value.length);
        out.set(gate);
        out.set(value, gate.length);
        return out;
      },
    });
  }
  return {
    path: folder,
    format: 'torch_dist',
    args,
    iteration,
    shapes: new Map([...readers].map(([name, r]) => [name, r.shape])),
    read: (name) => readers.get(name)!.read(),
    close: () => {},
  };
}

/** Megatron's common state in a torch_dist checkpoint: its object, or the file versions before Megatron-core 0.19 wrote. */
const COMMON_OBJECT = 'common_state/shard_0_1';
const COMMON_FILE = 'common.pt';

/** What a whole torch.save file holds. */
function loadWhole(file: string): unknown {
  const archive = TorchArchive.open(file);
  try {
    return archive.load();
  } finally {
    archive.close();
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
  const { shapes: tensors, path: file } = checkpoint;
  // Transformer Engine's fused norms where the file has them, else the local spec's modules.
  const te = [...tensors.keys()].some((name) => name.includes('.layer_norm_'));
  const map = placements(model, (local) => te && !tensors.has(`${local}.weight`));
  const used = new Set<string>();
  const problems: string[] = [];
  const shapes = new Map(gptParams(model).map((spec) => [spec.name, spec.shape]));
  for (const [param, shape] of shapes) {
    const p = map.get(param)!; // placements places every param gptParams can name
    used.add(p.name);
    const have = tensors.get(p.name);
    const want = torchShape(p, shape);
    if (!have) problems.push(`it has no ${p.name} [${want.join(', ')}]`);
    else if (have.join(',') !== want.join(','))
      problems.push(`its ${p.name} is [${have.join(', ')}], where the model's flags make it [${want.join(', ')}]`);
  }
  const strangers = [...tensors.keys()].filter((name) => !used.has(name) && !(name === 'output_layer.weight' && model.tiedHead !== false));
  if (strangers.length > 0)
    problems.push(
      `it holds ${strangers.slice(0, 3).join(', ')}${strangers.length > 3 ? ` and ${strangers.length - 3} more` : ''}, which no param of the model takes`,
    );
  if (problems.length > 0) {
    checkpoint.close();
    const more = problems.length > 3 ? `; and ${problems.length - 3} more` : '';
    throw fail(`${file}: ${problems.slice(0, 3).join('; ')}${more}`);
  }
  return {
    files: [file],
    read(name) {
      const p = map.get(name)!;
      return toWebtron(p, shapes.get(name)!, checkpoint.read(p.name));
    },
    close: () => checkpoint.close(),
  };
}
