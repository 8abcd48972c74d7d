"""An independent referee for webtron's reading of Megatron-LM checkpoints (`--ckpt-format torch`,
one tensor- and pipeline-parallel rank), written from Megatron-core's GPTModel with the standard
library, numpy and torch only:

- megatron/training/checkpointing.py: the folder (latest_checkpointed_iteration.txt,
  iter_NNNNNNN/mp_rank_00/model_optim_rng.pt) and the dict torch.save writes there (args,
  checkpoint_version 3.0, iteration, model, optimizer, opt_param_scheduler, rng_state);
- megatron/core/transformer/attention.py (SelfAttention.get_query_key_value_tensors): linear_qkv's
  rows are the query groups one after another, each its heads' q, then its k, then its v;
- megatron/core/transformer/mlp.py: linear_fc1's rows are the gate, then the value (SwiGLU), and
  GELU is the tanh form where Megatron fuses it with the bias (bias_gelu_impl), erf otherwise;
- megatron/core/models/common/embeddings/rotary_pos_embedding.py: rope on int(head · percent)
  channels, rotate-half or interleaved, Llama 3's scaling of the frequencies;
- the local spec's names (input_layernorm, pre_mlp_layernorm) and Transformer Engine's
  (linear_qkv.layer_norm_weight, linear_fc1.layer_norm_weight, `_extra_state` records).

    megatron_reference.py write-random DIR SEED KIND [FIELD=VALUE ...] [singleton] [common.pt]
        Write a random checkpoint of KIND to DIR as Megatron's save_checkpoint writes one at
        iteration 50: `gpt` (LayerNorm, biases, learned positions, GELU fused with its bias, a tied
        head, fp32 tensors, GPT2BPETokenizer, the local spec's names) or `llama` (RMSNorm, rope with
        Llama 3's scaling, SwiGLU, no biases, 8 heads in 2 query groups, q and k norms, an untied
        head, bf16 tensors, NullTokenizer, Transformer Engine's names with `_extra_state`). Each
        FIELD=VALUE (a Python literal) sets one of the args, for the checks of what is refused;
        args.FIELD=VALUE sets it in the saved args only, after the tensors are made. With
        ckpt_format='torch_dist' (and tensor_model_parallel_size=N), the torch_dist format in N
        chunks per split tensor (write_dist): `singleton` keeps each layer's own keys, `common.pt`
        writes the common state in that file instead of the common_state object.
    megatron_reference.py logits DIR IDS.bin BATCH SEQ OUT.bin
        Load DIR's checkpoint (torch.load, or read_dist for torch_dist), run Megatron's forward
        (fp32) on the int32 ids [BATCH, SEQ] and write the logits [BATCH, SEQ, padded vocab] as
        float32.
"""
import argparse
import ast
import collections
import enum
import io
import math
import os
import pickle
import random
import re
import sys

import numpy as np
import torch


class AttnBackend(enum.Enum):
    """Stands in for megatron.core.transformer.enums.AttnBackend, an enum the args hold."""

    auto = 5


def kind_args(kind):
    common = dict(
        num_layers=2, tensor_model_parallel_size=1, pipeline_model_parallel_size=1, num_experts=None,
        make_vocab_size_divisible_by=128, max_position_embeddings=32, seq_length=16, rotary_percent=1.0,
        rotary_interleaved=False, use_rope_scaling=False, rope_scaling_factor=8.0, rotary_base=10000,
        apply_layernorm_1p=False, openai_gelu=False, squared_relu=False, qk_layernorm=False,
        multi_latent_attention=False, hidden_dropout=0.1, attention_dropout=0.1, ckpt_format='torch',
        use_distributed_optimizer=True, attention_backend=AttnBackend.auto, data_path=['/data/my-gpt3_00_text_document'],
        micro_batch_size=4, global_batch_size=32, lr=1.5e-4, train_iters=500, consumed_train_samples=1600,
        iteration=50, init_method_std=0.02, use_te_activation_func=False,
    )
    if kind == 'gpt':
        return argparse.Namespace(
            **common, hidden_size=32, num_attention_heads=4, group_query_attention=False, num_query_groups=1,
            kv_channels=8, ffn_hidden_size=128, padded_vocab_size=50304, position_embedding_type='learned_absolute',
            normalization='LayerNorm', norm_epsilon=1e-5, swiglu=False, bias_gelu_fusion=True, add_bias_linear=True,
            add_qkv_bias=True, untie_embeddings_and_output_weights=False, transformer_impl='local',
            tokenizer_type='GPT2BPETokenizer', vocab_file='/data/gpt2-vocab.json', merge_file='/data/gpt2-merges.txt',
            tokenizer_model=None, vocab_size=None, fp16=False, bf16=False, params_dtype=torch.float32,
        )
    assert kind == 'llama'
    args = dict(common, rotary_base=500000, use_rope_scaling=True, rope_scaling_factor=8.0, qk_layernorm=True,
                hidden_dropout=0.0, attention_dropout=0.0, max_position_embeddings=64)
    return argparse.Namespace(
        **args, hidden_size=64, num_attention_heads=8, group_query_attention=True, num_query_groups=2,
        kv_channels=8, ffn_hidden_size=96, padded_vocab_size=1024, position_embedding_type='rope',
        normalization='RMSNorm', norm_epsilon=1e-6, swiglu=True, bias_gelu_fusion=False, add_bias_linear=False,
        add_qkv_bias=False, untie_embeddings_and_output_weights=True, transformer_impl='transformer_engine',
        tokenizer_type='NullTokenizer', vocab_file=None, merge_file=None, tokenizer_model=None, vocab_size=1000,
        fp16=False, bf16=True, params_dtype=torch.bfloat16,
    )


def write_random(folder, seed, kind, overrides=()):
    args = kind_args(kind)
    overrides = list(overrides)
    for item in overrides:
        if '=' not in item:
            continue
        field, value = item.split('=', 1)
        if not field.startswith('args.'):
            setattr(args, field, ast.literal_eval(value))
    g = torch.Generator().manual_seed(seed)
    dtype = args.params_dtype
    te = args.transformer_impl == 'transformer_engine'
    h, heads, groups, hd = args.hidden_size, args.num_attention_heads, args.num_query_groups, args.kv_channels
    if not args.group_query_attention:
        groups = heads
    qkv_rows = (heads + 2 * groups) * hd
    fc_rows = args.ffn_hidden_size * (2 if args.swiglu else 1)
    sd = collections.OrderedDict()

    def put(name, *shape, scale=0.5, centre=0.0):
        sd[name] = (centre + scale * torch.randn(*shape, generator=g)).to(dtype)

    def norm(prefix, width):
        put(f'{prefix}weight', width, scale=0.2, centre=0.0 if args.apply_layernorm_1p else 1.0)
        if args.normalization == 'LayerNorm':
            put(f'{prefix}bias', width, scale=0.2)

    put('embedding.word_embeddings.weight', args.padded_vocab_size, h)
    if args.position_embedding_type == 'learned_absolute':
        put('embedding.position_embeddings.weight', args.max_position_embeddings, h, scale=0.1)
    for l in range(args.num_layers):
        p = f'decoder.layers.{l}.'
        norm(p + ('self_attention.linear_qkv.layer_norm_' if te else 'input_layernorm.'), h)
        put(p + 'self_attention.linear_qkv.weight', qkv_rows, h, scale=1 / math.sqrt(h))
        if args.add_qkv_bias:
            put(p + 'self_attention.linear_qkv.bias', qkv_rows, scale=0.1)
        if te:
            sd[p + 'self_attention.linear_qkv._extra_state'] = io.BytesIO(b'')
            sd[p + 'self_attention.core_attention._extra_state'] = io.BytesIO(b'')
        if args.qk_layernorm:
            norm(p + 'self_attention.q_layernorm.', hd)
            norm(p + 'self_attention.k_layernorm.', hd)
        put(p + 'self_attention.linear_proj.weight', h, heads * hd, scale=1 / math.sqrt(heads * hd))
        if args.add_bias_linear:
            put(p + 'self_attention.linear_proj.bias', h, scale=0.1)
        if te:
            sd[p + 'self_attention.linear_proj._extra_state'] = io.BytesIO(b'')
        norm(p + ('mlp.linear_fc1.layer_norm_' if te else 'pre_mlp_layernorm.'), h)
        put(p + 'mlp.linear_fc1.weight', fc_rows, h, scale=1 / math.sqrt(h))
        if args.add_bias_linear:
            put(p + 'mlp.linear_fc1.bias', fc_rows, scale=0.1)
        put(p + 'mlp.linear_fc2.weight', h, args.ffn_hidden_size, scale=1 / math.sqrt(args.ffn_hidden_size))
        if args.add_bias_linear:
            put(p + 'mlp.linear_fc2.bias', h, scale=0.1)
        if te:
            sd[p + 'mlp.linear_fc1._extra_state'] = io.BytesIO(b'')
            sd[p + 'mlp.linear_fc2._extra_state'] = io.BytesIO(b'')
    norm('decoder.final_layernorm.', h)
    if args.untie_embeddings_and_output_weights:
        put('output_layer.weight', args.padded_vocab_size, h)

    # The rest of what save_checkpoint writes: an optimizer's state, the scheduler, the RNGs.
    params = [t for t in sd.values() if isinstance(t, torch.Tensor)]
    optimizer = {
        'optimizer': {
            'state': {i: {'step': torch.tensor(50.0), 'exp_avg': torch.zeros_like(t, dtype=torch.float32),
                          'exp_avg_sq': torch.zeros_like(t, dtype=torch.float32)} for i, t in enumerate(params[:3])},
            'param_groups': [{'lr': 1.5e-4, 'betas': (0.9, 0.95), 'eps': 1e-8, 'weight_decay': 0.1, 'params': [0, 1, 2]}],
        },
        'grad_scaler': None,
        'param_groups': [],
    }
    random.seed(seed)
    np.random.seed(seed % 2**32)
    state = {
        'args': args,
        'checkpoint_version': 3.0,
        'iteration': 50,
        'model': sd,
        'optimizer': optimizer,
        'opt_param_scheduler': {'max_lr': 1.5e-4, 'min_lr': 1e-5, 'num_steps': 1600, 'lr_warmup_steps': 5},
        'rng_state': [{
            'random_rng_state': random.getstate(),
            'np_rng_state': np.random.get_state(),
            'torch_rng_state': torch.get_rng_state(),
            'cuda_rng_state': None,
            'rng_tracker_states': {},
        }],
        'num_floating_point_operations_so_far': 12345678901234567890,
    }
    # `args.FIELD=VALUE` changes only what the args say, after the tensors are made.
    for item in overrides:
        field, value = item.split('=', 1) if '=' in item else (item, None)
        if field.startswith('args.'):
            setattr(args, field[len('args.'):], ast.literal_eval(value))
    if args.ckpt_format == 'torch_dist':
        write_dist(os.path.join(folder, 'iter_0000050'), state, args, 'singleton' in overrides, 'common.pt' in overrides)
    else:
        rank_dir = os.path.join(folder, 'iter_0000050', 'mp_rank_00')
        os.makedirs(rank_dir, exist_ok=True)
        torch.save(state, os.path.join(rank_dir, 'model_optim_rng.pt'))
    with open(os.path.join(folder, 'latest_checkpointed_iteration.txt'), 'w') as f:
        f.write('50')


# Megatron-core's tensor-parallel split of each tensor (make_sharded_tensors_for_checkpoint): the
# column-parallel layers' rows (dim 0), the row-parallel layers' columns (dim 1); the rest replicated.
COLUMN = ('embedding.word_embeddings.weight', 'output_layer.weight', 'linear_qkv.weight', 'linear_qkv.bias',
          'linear_fc1.weight', 'linear_fc1.bias')
ROW = ('linear_proj.weight', 'linear_fc2.weight')


def dcp_classes():
    """torch.distributed.checkpoint's metadata classes as PyTorch 2.x defines them (metadata.py,
    filesystem.py), under their module names, for pickle. Debian's torch 1.13 has no
    torch.distributed.checkpoint (its predecessor, _shard.checkpoint, does not import on Python 3.11)."""
    import dataclasses
    import types

    if 'torch.distributed.checkpoint.metadata' in sys.modules:
        return sys.modules['torch.distributed.checkpoint.metadata']
    meta = types.ModuleType('torch.distributed.checkpoint.metadata')
    fs = types.ModuleType('torch.distributed.checkpoint.filesystem')

    class _MEM_FORMAT_ENCODING(enum.Enum):
        TORCH_CONTIGUOUS_FORMAT = 0
        TORCH_CHANNELS_LAST = 1
        TORCH_PRESERVE_FORMAT = 2

    @dataclasses.dataclass
    class TensorProperties:
        dtype: torch.dtype = torch.float32
        layout: torch.layout = torch.strided
        requires_grad: bool = False
        memory_format: torch.memory_format = torch.contiguous_format
        pin_memory: bool = False

        def __getstate__(self):  # torch.memory_format does not pickle
            return (self.dtype, self.layout, self.requires_grad, _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT, self.pin_memory)

        def __setstate__(self, state):
            self.dtype, self.layout, self.requires_grad, _, self.pin_memory = state
            self.memory_format = torch.contiguous_format

    @dataclasses.dataclass
    class ChunkStorageMetadata:
        offsets: torch.Size
        sizes: torch.Size

    @dataclasses.dataclass
    class TensorStorageMetadata:
        properties: TensorProperties
        size: torch.Size
        chunks: list

    @dataclasses.dataclass
    class BytesStorageMetadata:
        pass

    @dataclasses.dataclass
    class StorageMeta:
        checkpoint_id: object = None
        save_id: object = None
        load_id: object = None
        modules: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass
    class Metadata:
        state_dict_metadata: dict
        planner_data: object = None
        storage_data: object = None
        storage_meta: object = None
        version: object = None

    @dataclasses.dataclass(frozen=True)
    class MetadataIndex:
        fqn: str
        offset: object = None
        index: object = dataclasses.field(hash=False, compare=False, default=None)

        def __init__(self, fqn, offset=None, index=None):
            object.__setattr__(self, 'fqn', fqn)
            object.__setattr__(self, 'index', index)
            if offset is not None:
                object.__setattr__(self, 'offset', torch.Size(offset))

    @dataclasses.dataclass
    class _StorageInfo:
        relative_path: str
        offset: int
        length: int
        transform_descriptors: object = None

    for module, classes in ((meta, (_MEM_FORMAT_ENCODING, TensorProperties, ChunkStorageMetadata, TensorStorageMetadata,
                                    BytesStorageMetadata, StorageMeta, Metadata, MetadataIndex)), (fs, (_StorageInfo,))):
        for cls in classes:
            cls.__module__ = module.__name__
            cls.__qualname__ = cls.__name__
            setattr(module, cls.__name__, cls)
        sys.modules[module.__name__] = module
    return meta


def write_dist(folder, state, args, singleton, common_pt):
    """Write `state` as Megatron's torch_dist format does (megatron/core/dist_checkpointing on torch's
    distributed checkpoint, FileSystemWriter): each tensor's chunks, as tensor-parallel ranks hold
    them, torch.save'd one after another into __R_N.distcp files; each object (ShardedObject) as the
    bytes of torch.save([value]); .metadata, the pickled Metadata saying where each lies; the common
    state (args, iteration, ...) as the object 'common_state' (or, with `common_pt`, in common.pt as
    before Megatron-core 0.19), and metadata.json.

    Layers stack on a leading axis under one key (decoder.layers.self_attention.linear_qkv.weight
    [num_layers, ...]) as TransformerBlock.sharded_state_dict keeps them, or with `singleton` keep
    their own keys (decoder.layers.0....) and SwiGLU's linear_fc1 is two tensors, weight_w and weight_v.
    SwiGLU's linear_fc1 otherwise splits in 2 · tp chunks, every rank's gate rows before every
    rank's value rows (apply_swiglu_sharded_factory), which is the one-rank layout.
    """
    import uuid

    meta = dcp_classes()
    fs = sys.modules['torch.distributed.checkpoint.filesystem']
    os.makedirs(folder, exist_ok=True)
    tp = args.tensor_model_parallel_size
    layers = 1 + max(int(re.match(r'decoder\.layers\.(\d+)\.', n).group(1)) for n in state['model'] if n.startswith('decoder.layers.'))
    tensors = collections.OrderedDict()  # key -> (global shape, dtype, [(offsets, chunk)])
    objects = collections.OrderedDict()  # key -> bytes

    def chunks(key, tensor, axis, parts, layer=None):
        shape = ([layers] if layer is not None else []) + list(tensor.shape)
        held = tensors.setdefault(key, (shape, tensor.dtype, []))[2]
        at = 0
        for chunk in torch.chunk(tensor, parts, dim=axis) if axis is not None else (tensor,):
            offsets = [0] * tensor.dim()
            if axis is not None:
                offsets[axis] = at
                at += chunk.shape[axis]
            data = chunk.clone()
            if layer is not None:
                data, offsets = data.unsqueeze(0), [layer] + offsets
            held.append((offsets, data))

    def put(name, tensor):
        m = re.match(r'decoder\.layers\.(\d+)\.(.*)$', name)
        axis = 0 if name.endswith(COLUMN) else 1 if name.endswith(ROW) else None
        parts = tp if axis is not None else 1
        fc1 = name.endswith(('.mlp.linear_fc1.weight', '.mlp.linear_fc1.bias')) and args.swiglu
        if fc1 and singleton:
            for half, suffix in zip(torch.chunk(tensor, 2, dim=0), ('_w', '_v')):
                chunks(name + suffix, half, axis, parts)
        elif m and not singleton:
            chunks(f'decoder.layers.{m.group(2)}', tensor, axis, parts * (2 if fc1 else 1), int(m.group(1)))
        else:
            chunks(name, tensor, axis, parts * (2 if fc1 else 1))

    def obj(key, value):
        data = io.BytesIO()
        torch.save([value], data)
        objects[key] = data.getvalue()

    for name, value in state['model'].items():
        if isinstance(value, torch.Tensor):
            put(name, value)
        else:  # Transformer Engine's _extra_state: a ShardedObject per layer and rank
            m = re.match(r'decoder\.layers\.(\d+)\.(.*)$', name)
            if m and not singleton:
                key, offset, shape = f'decoder.layers.{m.group(2)}', m.group(1), layers
            else:
                key, offset, shape = name, 0, 1
            for r in range(tp):
                obj(f'{key}/shard_{offset}.{r}_{shape}.{tp}', b'')
    # The distributed optimizer's state in model space (optimizer.state.<moment>.<param key>), for a
    # resume: a reader of the model passes it by.
    for moment in ('exp_avg', 'exp_avg_sq', 'fp32_param'):
        chunks(f'optimizer.state.{moment}.decoder.final_layernorm.weight', torch.zeros(args.hidden_size), None, 1)
    obj('rng_state/shard_0.0_1.1', state['rng_state'][0])
    common = {k: v for k, v in state.items() if k not in ('model', 'rng_state')}
    common['optimizer'] = {'param_groups': state['optimizer']['optimizer']['param_groups']}
    if common_pt:
        torch.save(common, os.path.join(folder, 'common.pt'))
    else:
        obj('common_state/shard_0_1', common)

    # As two ranks write: their objects first, then their tensors' chunks, alternating ranks.
    sd_meta, storage = {}, {}
    files = {}

    def write(name, data):
        if name not in files:
            files[name] = open(os.path.join(folder, name), 'wb')
        f = files[name]
        offset = f.tell()
        f.write(data)
        return fs._StorageInfo(name, offset, f.tell() - offset)

    for key, data in objects.items():
        sd_meta[key] = meta.BytesStorageMetadata()
        storage[meta.MetadataIndex(key)] = write('__0_1.distcp', data)
    n = 0
    for key, (shape, dtype, held) in tensors.items():
        listed = []
        for offsets, data in held:
            listed.append(meta.ChunkStorageMetadata(torch.Size(offsets), torch.Size(data.shape)))
            saved = io.BytesIO()
            torch.save(data, saved)
            storage[meta.MetadataIndex(key, offsets, len(listed) - 1)] = write(f'__{n % 2}_0.distcp', saved.getvalue())
            n += 1
        sd_meta[key] = meta.TensorStorageMetadata(meta.TensorProperties(dtype=dtype), torch.Size(shape), listed)
    for f in files.values():
        f.close()
    metadata = meta.Metadata(sd_meta, None, storage, meta.StorageMeta(folder, str(uuid.uuid4())), '1.0.0')
    with open(os.path.join(folder, '.metadata'), 'wb') as f:
        pickle.dump(metadata, f)
    with open(os.path.join(folder, 'metadata.json'), 'w') as f:
        f.write('{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1}')


def read_dist(folder):
    """A torch_dist folder's common state and model tensors, each chunk torch.load'ed from where
    .metadata says; the layers' stacks unstacked and SwiGLU's weight_w and weight_v joined: the
    one-rank state dict."""
    meta = dcp_classes()
    with open(os.path.join(folder, '.metadata'), 'rb') as f:
        metadata = pickle.load(f)

    def load(index):
        info = metadata.storage_data[index]
        with open(os.path.join(folder, info.relative_path), 'rb') as f:
            f.seek(info.offset)
            return torch.load(io.BytesIO(f.read(info.length)))

    sd = {}
    for key, m in metadata.state_dict_metadata.items():
        if isinstance(m, meta.TensorStorageMetadata) and not key.startswith('optimizer.'):
            t = torch.empty(m.size, dtype=m.properties.dtype)
            for i, chunk in enumerate(m.chunks):
                box = tuple(slice(o, o + n) for o, n in zip(chunk.offsets, chunk.sizes))
                t[box] = load(meta.MetadataIndex(key, chunk.offsets, i))
            sd[key] = t
    if 'common_state/shard_0_1' in metadata.state_dict_metadata:
        common = load(meta.MetadataIndex('common_state/shard_0_1'))[0]
    else:
        common = torch.load(os.path.join(folder, 'common.pt'))
    model = {}
    for key, tensor in sd.items():
        if key.endswith(('_w', '_v')):
            if key.endswith('_w'):
                model[key[:-2]] = torch.cat((tensor, sd[key[:-2] + '_v']), dim=0)
        elif re.match(r'decoder\.layers\.[a-z]', key):
            for l in range(common['args'].num_layers):
                model[key.replace('decoder.layers.', f'decoder.layers.{l}.')] = tensor[l]
        else:
            model[key] = tensor
    return common, model


def checkpoint_file(folder):
    with open(os.path.join(folder, 'latest_checkpointed_iteration.txt')) as f:
        tracked = f.read().strip()
    iteration = 'release' if tracked == 'release' else f'iter_{int(tracked):07d}'
    return os.path.join(folder, iteration, 'mp_rank_00', 'model_optim_rng.pt')


def logits(folder, ids_path, batch, seq, out_path):
    path = checkpoint_file(folder)
    if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(path)), '.metadata')):
        state, model = read_dist(os.path.dirname(os.path.dirname(path)))
    else:
        state = torch.load(path, map_location='cpu')
        model = state['model']
    args = state['args']
    w = {k: v.float() for k, v in model.items() if isinstance(v, torch.Tensor)}
    ids = torch.from_numpy(np.fromfile(ids_path, dtype=np.int32).astype(np.int64)).reshape(batch, seq)
    h, heads, hd = args.hidden_size, args.num_attention_heads, args.kv_channels
    groups = args.num_query_groups if args.group_query_attention else heads
    per_group = heads // groups
    eps = args.norm_epsilon

    def first(*names):
        return next(n for n in names if n in w)

    def norm(x, weight, bias):
        gamma = w[weight] + 1 if args.apply_layernorm_1p else w[weight]
        if args.normalization == 'RMSNorm':
            return gamma * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, w[bias], eps)

    def linear(x, name):  # ColumnParallelLinear and RowParallelLinear: x @ W.T (+ b), W [out, in]
        y = x @ w[f'{name}.weight'].T
        return y + w[f'{name}.bias'] if f'{name}.bias' in w else y

    # RotaryEmbedding: frequencies over int(head · percent) channels, Llama 3's scaling.
    rot = int(hd * args.rotary_percent) if args.rotary_percent < 1 else hd
    inv_freq = 1.0 / (args.rotary_base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    if args.use_rope_scaling:
        factor, low, high, old = args.rope_scaling_factor, 1, 4, 8192
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) * ~(wavelen > old / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)  # [seq, rot/2]
    if args.rotary_interleaved:
        emb = torch.stack((freqs, freqs), dim=-1).reshape(seq, -1)
    else:
        emb = torch.cat((freqs, freqs), dim=-1)

    def rope(t):  # t [b, s, heads, hd]; _apply_rotary_pos_emb_bshd
        t_rot, t_pass = t[..., :rot], t[..., rot:]
        cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
        if args.rotary_interleaved:
            x1, x2 = t_rot[..., ::2], t_rot[..., 1::2]
            rotated = torch.stack((-x2, x1), dim=-1).reshape(t_rot.shape)
        else:
            x1, x2 = torch.chunk(t_rot, 2, dim=-1)
            rotated = torch.cat((-x2, x1), dim=-1)
        return torch.cat((t_rot * cos + rotated * sin, t_pass), dim=-1)

    def gelu(x):
        if args.openai_gelu or (args.bias_gelu_fusion and args.add_bias_linear):
            return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))
        return torch.nn.functional.gelu(x)

    x = w['embedding.word_embeddings.weight'][ids]
    if args.position_embedding_type == 'learned_absolute':
        x = x + w['embedding.position_embeddings.weight'][:seq][None]
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    for l in range(args.num_layers):
        p = f'decoder.layers.{l}.'
        ln = first(p + 'input_layernorm.weight', p + 'self_attention.linear_qkv.layer_norm_weight')
        y = norm(x, ln, ln.replace('weight', 'bias'))
        mixed = linear(y, p + 'self_attention.linear_qkv').view(batch, seq, groups, (per_group + 2) * hd)
        q, k, v = torch.split(mixed, [per_group * hd, hd, hd], dim=-1)
        q = q.reshape(batch, seq, heads, hd)
        if args.qk_layernorm:
            q = norm(q, p + 'self_attention.q_layernorm.weight', p + 'self_attention.q_layernorm.bias')
            k = norm(k, p + 'self_attention.k_layernorm.weight', p + 'self_attention.k_layernorm.bias')
        if args.position_embedding_type == 'rope':
            q, k = rope(q), rope(k)
        k = k.repeat_interleave(per_group, dim=2)
        v = v.repeat_interleave(per_group, dim=2)
        scores = torch.einsum('bshd,bthd->bhst', q, k) / math.sqrt(hd)
        probs = torch.softmax(scores.masked_fill(causal, float('-inf')), dim=-1)
        context = torch.einsum('bhst,bthd->bshd', probs, v).reshape(batch, seq, heads * hd)
        x = x + linear(context, p + 'self_attention.linear_proj')
        ln = first(p + 'pre_mlp_layernorm.weight', p + 'mlp.linear_fc1.layer_norm_weight')
        fc = linear(norm(x, ln, ln.replace('weight', 'bias')), p + 'mlp.linear_fc1')
        if args.swiglu:
            gate, value = torch.chunk(fc, 2, dim=-1)
            act = torch.nn.functional.silu(gate) * value
        elif args.squared_relu:
            act = torch.relu(fc).pow(2)
        else:
            act = gelu(fc)
        x = x + linear(act, p + 'mlp.linear_fc2')
    x = norm(x, 'decoder.final_layernorm.weight', 'decoder.final_layernorm.bias')
    head = w['output_layer.weight' if args.untie_embeddings_and_output_weights else 'embedding.word_embeddings.weight']
    (x @ head.T).numpy().astype(np.float32).tofile(out_path)


if __name__ == '__main__':
    if sys.argv[1] == 'write-random':
        write_random(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
    elif sys.argv[1] == 'logits':
        logits(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(f'unknown command {sys.argv[1]}')
