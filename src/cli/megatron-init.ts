/**
 * `webtron train --init-from` a Megatron-LM checkpoint (`--ckpt-format torch_dist` at any parallel
 * sizes, or `torch` of one model-parallel rank): the model's flags from the args the run saved,
 * Megatron's names being webtron's. A flag left out takes the checkpoint's value; a flag given must
 * agree with it, else one line names both. What webtron's GPT does not compute (experts,
 * multi-latent attention, erf GELU, a sliding window, …) is refused in one line naming the field.
 */
import { existsSync } from 'node:fs';
import { type MegatronCheckpoint, megatronCheckpointPath, openMegatronCheckpoint } from '../checkpoint/megatron.js';
import { TOKENIZER_TYPES } from '../data/tokenizer.js';
import { FlagError, type FlagValues } from './flags.js';
import { givenFlags, takeFlag } from './hf-init.js';

type Args = Record<string, unknown>;

/** A saved field's value in a message: JSON where it has one (a big int as digits), else missing. */
const show = (v: unknown): string => (typeof v === 'bigint' ? String(v) : (JSON.stringify(v) ?? 'missing'));

/** Megatron's fields that change the model's arithmetic, with the value webtron computes. */
const MUST_BE: [field: string, ok: (v: unknown) => boolean, what: string][] = [
  ['num_experts', (v) => v === undefined || v === null, 'mixture-of-experts layers'],
  ['multi_latent_attention', (v) => !v, 'multi-latent attention'],
  ['mtp_num_layers', (v) => !v, 'multi-token prediction layers'],
  ['window_size', (v) => v === undefined || v === null, 'sliding-window attention'],
  ['qk_l2_norm', (v) => !v, 'L2-normalized q and k'],
  ['heterogeneous_layers_config_path', (v) => !v, 'heterogeneous layers'],
  ['rotary_seq_len_interpolation_factor', (v) => v === undefined || v === null, 'interpolated rope positions'],
  ['apply_residual_connection_post_layernorm', (v) => !v, 'the residual taken after the norm'],
  ['softmax_type', (v) => v === undefined || v === null || v === 'vanilla', 'another softmax than the plain one'],
  ['quick_geglu', (v) => !v, 'a quick-GELU gated MLP'],
  ['glu_linear_offset', (v) => !v, "an offset on the gated MLP's value"],
  ['activation_func_clamp_value', (v) => v === undefined || v === null, 'a clamped activation'],
  ['hybrid_override_pattern', (v) => !v, 'hybrid (Mamba) layers'],
  ['hybrid_layer_pattern', (v) => !v, 'hybrid (Mamba) layers'],
  ['linear_attention_freq', (v) => v === undefined || v === null, 'linear attention layers'],
];

/** Megatron's flags and fields where the names are webtron's flags, dashes for underscores. */
const SAME = ['num-layers', 'hidden-size', 'num-attention-heads', 'ffn-hidden-size', 'max-position-embeddings', 'normalization'];

/**
 * Megatron's own ways to start from a checkpoint's params, for a Megatron-LM checkpoint: `--load DIR
 * --finetune`, and `--pretrained-checkpoint DIR` without --load, as `--init-from DIR`. A --load of
 * one without --finetune would resume its optimizer and counters, which webtron does not read: one
 * line says so.
 */
export function megatronLoadAsInit(values: FlagValues): FlagValues {
  if (values['init-from'] !== undefined) return values;
  const load = values.load as string | undefined;
  if (load !== undefined && megatronCheckpointPath(load) !== null) {
    if (!values.finetune || values['no-load-optim'])
      throw new FlagError(
        `--load ${load} is a Megatron-LM checkpoint: webtron takes its params, not its optimizer state or counters; add --finetune (iteration 0, a fresh optimizer), or give it as --init-from`,
      );
    const { load: _load, finetune: _finetune, ...rest } = values;
    return { ...rest, 'init-from': load };
  }
  const pretrained = values['pretrained-checkpoint'] as string | undefined;
  if (load === undefined && pretrained !== undefined && megatronCheckpointPath(pretrained) !== null) {
    const { 'pretrained-checkpoint': _pretrained, ...rest } = values;
    return { ...rest, 'init-from': pretrained };
  }
  return values;
}

/**
 * `values` with the model flags of the Megatron checkpoint `--init-from` names, and the model's exact
 * vocabulary (the saved padded_vocab_size); null when --init-from names no Megatron checkpoint.
 */
export function withMegatronInit(values: FlagValues, argv: readonly string[]): { values: FlagValues; vocabSize: number } | null {
  const path = values['init-from'] as string | undefined;
  const found = path === undefined ? null : megatronCheckpointPath(path);
  if (found === null) return null;
  const checkpoint = openMegatronCheckpoint(found);
  checkpoint.close();
  return withMegatronArgs(checkpoint, values, argv);
}

/** withMegatronInit for a checkpoint already open (its args only are read). */
export function withMegatronArgs(
  checkpoint: MegatronCheckpoint,
  values: FlagValues,
  argv: readonly string[],
): { values: FlagValues; vocabSize: number } {
  const args = checkpoint.args;
  const where = `${checkpoint.path}'s args`;
  // The torch format's file is one rank's shard; torch_dist's tensors are global.
  for (const field of ['tensor_model_parallel_size', 'pipeline_model_parallel_size'])
    if (checkpoint.format === 'torch' && args[field] !== undefined && args[field] !== 1)
      throw new FlagError(
        `${where}: ${field} is ${show(args[field])}, so the file holds one shard of the model; convert the checkpoint to tensor and pipeline parallel size 1 with Megatron's tools/checkpoint/convert.py, or have Megatron save --ckpt-format torch_dist, which webtron reads at any parallel sizes`,
      );
  for (const [field, ok, what] of MUST_BE)
    if (!ok(args[field])) throw new FlagError(`${where}: ${field} is ${show(args[field])}: ${what}, which webtron's GPT does not compute`);
  const given = givenFlags(argv);
  const out: FlagValues = { ...values };
  const take = (flag: string, field: string, value: unknown) => {
    if (typeof value !== 'number' && typeof value !== 'string' && typeof value !== 'boolean') {
      if (given.has(flag)) return;
      throw new FlagError(`${where}: ${field} is ${show(value)}, not a value webtron can read; give --${flag}`);
    }
    takeFlag(out, given, flag, value, `${where}: ${field} is ${String(value)}; leave the flag out to take the checkpoint's value`);
  };
  for (const flag of SAME) take(flag, flag.replaceAll('-', '_'), args[flag.replaceAll('-', '_')]);
  take('norm-epsilon', 'norm_epsilon', args.norm_epsilon ?? args.layernorm_epsilon);
  for (const flag of ['apply-layernorm-1p', 'swiglu', 'squared-relu', 'qk-layernorm', 'untie-embeddings-and-output-weights'])
    take(flag, flag.replaceAll('-', '_'), Boolean(args[flag.replaceAll('-', '_')]));
  take('disable-bias-linear', 'add_bias_linear', !args.add_bias_linear);
  // Megatron sets add_qkv_bias whenever add_bias_linear; webtron's flag is for q, k and v alone.
  take('add-qkv-bias', 'add_qkv_bias', Boolean(args.add_qkv_bias) && !args.add_bias_linear);
  if (args.group_query_attention) {
    take('group-query-attention', 'group_query_attention', true);
    take('num-query-groups', 'num_query_groups', args.num_query_groups);
  }
  const hidden = args.hidden_size as number;
  const heads = args.num_attention_heads as number;
  if (args.kv_channels !== undefined && args.kv_channels !== null && args.kv_channels !== hidden / heads)
    take('kv-channels', 'kv_channels', args.kv_channels);
  positionFlags(args, where, take);
  activation(args, where);
  takeLeftOut(out, given, args);
  if ((out['seq-length'] as number) > (args.max_position_embeddings as number))
    throw new FlagError(
      `--seq-length ${String(out['seq-length'])} is longer than ${where} allow: max_position_embeddings is ${String(args.max_position_embeddings)}`,
    );
  const vocab = args.padded_vocab_size;
  if (!Number.isInteger(vocab))
    throw new FlagError(`${where}: padded_vocab_size is ${show(vocab)}, where Megatron saves the model's vocabulary`);
  return { values: out, vocabSize: vocab as number };
}

/** The position embedding's flags: learned, none, or rope with its base, share, pairing and Llama 3 scaling. */
function positionFlags(args: Args, where: string, take: (flag: string, field: string, value: unknown) => void): void {
  const type = args.position_embedding_type ?? (args.use_rotary_position_embeddings ? 'rope' : 'learned_absolute');
  if (type !== 'learned_absolute' && type !== 'rope' && type !== 'none')
    throw new FlagError(`${where}: position_embedding_type is ${show(type)}; webtron computes learned_absolute, rope and none`);
  take('position-embedding-type', 'position_embedding_type', type);
  if (type !== 'rope') return;
  take('rotary-base', 'rotary_base', args.rotary_base ?? 10000);
  take('rotary-percent', 'rotary_percent', args.rotary_percent ?? 1);
  take('rotary-interleaved', 'rotary_interleaved', Boolean(args.rotary_interleaved));
  if (args.use_rope_scaling) {
    take('use-rope-scaling', 'use_rope_scaling', true);
    take('rope-scaling-factor', 'rope_scaling_factor', args.rope_scaling_factor ?? 8);
  }
}

/**
 * Megatron's MLP applies the tanh GELU where it fuses the activation with the bias
 * (bias_gelu_impl: linear biases and --bias-gelu-fusion, its defaults) or under --openai-gelu, and
 * torch's erf GELU otherwise. webtron's GELU is the tanh one.
 */
function activation(args: Args, where: string): void {
  if (args.swiglu || args.squared_relu) return;
  const tanh =
    Boolean(args.openai_gelu) || (Boolean(args.bias_gelu_fusion) && Boolean(args.add_bias_linear) && !args.use_te_activation_func);
  if (!tanh)
    throw new FlagError(
      `${where}: bias_gelu_fusion is ${String(args.bias_gelu_fusion)} with add_bias_linear ${String(args.add_bias_linear)}, so its MLP applied the erf GELU (torch's F.gelu); webtron's GELU is the tanh form Megatron fuses with the bias`,
    );
}

/** Dropout, sequence length and the tokenizer: the checkpoint's where the command line leaves them out. */
function takeLeftOut(out: FlagValues, given: Set<string>, args: Args): void {
  const leftOut = (flag: string, value: unknown, usable = true) => {
    if (!given.has(flag) && usable && value !== undefined && value !== null) out[flag] = value as string | number;
  };
  leftOut('seq-length', args.seq_length);
  leftOut('hidden-dropout', args.hidden_dropout);
  leftOut('attention-dropout', args.attention_dropout);
  const type = args.tokenizer_type as string | undefined;
  if (given.has('tokenizer-type') || !(TOKENIZER_TYPES as readonly (string | undefined)[]).includes(type)) return;
  out['tokenizer-type'] = type as string;
  // The files, where they are on this machine too; GPT-2's are built in.
  const here = (v: unknown) => typeof v === 'string' && existsSync(v);
  const bothFiles = here(args.vocab_file) && here(args.merge_file) && !given.has('vocab-file') && !given.has('merge-file');
  leftOut('vocab-file', args.vocab_file, bothFiles);
  leftOut('merge-file', args.merge_file, bothFiles);
  leftOut('tokenizer-model', args.tokenizer_model, here(args.tokenizer_model));
  leftOut('vocab-size', args.vocab_size, type === 'NullTokenizer');
}
