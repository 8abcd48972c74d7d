"""An independent referee for webtron's Hugging Face Llama and Qwen2 folders, written from
transformers' modeling_llama (LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb, LlamaMLP,
LlamaAttention with repeat_kv), modeling_qwen2 (the same with biases on q_proj, k_proj and
v_proj) and modeling_qwen3 (no biases; q_norm and k_norm, RMSNorms over each head of q and of k
before rope), with the standard library, numpy and torch only.

    llama_reference.py logits DIR IDS.bin BATCH SEQ OUT.bin
        Read DIR (config.json, model.safetensors), run LlamaForCausalLM's or Qwen2ForCausalLM's
        forward in torch (fp32) on the int32 token ids [BATCH, SEQ] and write the logits
        [BATCH, SEQ, vocab_size] as float32.
    llama_reference.py write-random DIR SEED LAYERS HIDDEN HEADS KV_HEADS INTERMEDIATE POSITIONS [qwen2|qwen3] [head_dim=D]
        Write a random Llama folder as LlamaForCausalLM.save_pretrained wrote it in transformers 4.3x
        (`model.`-prefixed names, rope's `inv_freq` buffers, an untied head; rms_norm_eps 1e-6, Llama 3's
        rope_theta and rope_scaling) with a byte-level BPE tokenizer of the 256 bytes and an
        end-of-text token (vocab.json, merges.txt); print the tensors' names as JSON. With `qwen2`,
        a Qwen2 folder as Qwen2ForCausalLM.save_pretrained writes one: q, k and v biases, a tied
        head (no lm_head.weight), rope_theta 1e6 without scaling, no sliding window. With `head_dim=D`,
        heads D wide whatever HIDDEN / HEADS is (Mistral-Nemo's shape): q_proj [HEADS·D, HIDDEN],
        o_proj [HIDDEN, HEADS·D], and head_dim in config.json. With `qwen3`, a Qwen3 folder as
        Qwen3ForCausalLM.save_pretrained writes one: Qwen2's with q_norm and k_norm and no biases.
"""
import json
import math
import sys

import numpy as np
import torch

from gpt2_reference import byte_to_unicode, read_safetensors, write_safetensors


def main(folder, ids_path, batch, seq, out_path):
    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    qwen2, qwen3 = config["model_type"] == "qwen2", config["model_type"] == "qwen3"
    assert config["architectures"] == ["Qwen2ForCausalLM" if qwen2 else "Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"]
    assert config["hidden_act"] == "silu"
    assert not config.get("use_sliding_window") if qwen2 or qwen3 else not config["attention_bias"] and not config["mlp_bias"]
    metadata, tensors = read_safetensors(f"{folder}/model.safetensors")
    assert metadata is not None and metadata.get("format") == "pt"
    w = {name: torch.from_numpy(arr) for name, arr in tensors.items()}
    h, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"]
    assert heads % kv_heads == 0
    hd = config.get("head_dim", h // heads)
    eps = config["rms_norm_eps"]

    def rms_norm(x, name):
        variance = x.pow(2).mean(-1, keepdim=True)
        return w[name] * (x * torch.rsqrt(variance + eps))

    def linear(x, name, bias=False):  # torch.nn.Linear: x @ W.T (+ b), W [out, in]
        y = x @ w[name].T
        return y + w[name.replace(".weight", ".bias")] if bias else y

    # LlamaRotaryEmbedding (default rope): inv_freq over the head, cos and sin of cat(freqs, freqs).
    inv_freq = 1.0 / (config["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    scaling = config.get("rope_scaling")
    if scaling is not None:
        # _compute_llama3_parameters
        assert scaling["rope_type"] == "llama3"
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context_len = scaling["original_max_position_embeddings"]
        low_freq_wavelen, high_freq_wavelen = old_context_len / low, old_context_len / high
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, inv_freq_llama)
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    ids = torch.from_numpy(np.fromfile(ids_path, dtype="<i4").astype(np.int64).reshape(batch, seq))
    x = w["model.embed_tokens.weight"][ids]
    causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        y = rms_norm(x, f"{p}.input_layernorm.weight")
        as_heads = lambda t, n: t.view(batch, seq, n, hd).transpose(1, 2)  # noqa: E731
        # Qwen2Attention: q_proj, k_proj and v_proj with biases, o_proj without.
        q = as_heads(linear(y, f"{p}.self_attn.q_proj.weight", qwen2), heads)
        k = as_heads(linear(y, f"{p}.self_attn.k_proj.weight", qwen2), kv_heads)
        v = as_heads(linear(y, f"{p}.self_attn.v_proj.weight", qwen2), kv_heads)
        if qwen3:  # Qwen3Attention: q_norm and k_norm over each head, before rope
            q = rms_norm(q, f"{p}.self_attn.q_norm.weight")
            k = rms_norm(k, f"{p}.self_attn.k_norm.weight")
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: each key and value head serves heads / kv_heads query heads, in order.
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min))
        y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, seq, heads * hd)
        x = x + linear(y, f"{p}.self_attn.o_proj.weight")
        y = rms_norm(x, f"{p}.post_attention_layernorm.weight")
        gate = torch.nn.functional.silu(linear(y, f"{p}.mlp.gate_proj.weight"))
        x = x + linear(gate * linear(y, f"{p}.mlp.up_proj.weight"), f"{p}.mlp.down_proj.weight")
    x = rms_norm(x, "model.norm.weight")
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings", False) else w["lm_head.weight"]
    out = (x @ head.T).contiguous()
    assert out.shape == (batch, seq, config["vocab_size"])
    out.numpy().astype("<f4").tofile(out_path)


def write_random(folder, seed, layers, hidden, heads, kv_heads, intermediate, positions, family="llama", head_dim=None):
    import os

    qwen2, qwen3 = family == "qwen2", family == "qwen3"
    rng = np.random.default_rng(seed)
    chars = byte_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    vocab["<|endoftext|>"] = 256
    n_vocab = len(vocab)
    hd = head_dim or hidden // heads
    os.makedirs(folder, exist_ok=True)
    r = lambda *shape: (rng.standard_normal(shape) * 0.2).astype("<f4")  # noqa: E731
    tensors = {"model.embed_tokens.weight": r(n_vocab, hidden)}
    theta = 1000000.0 if qwen2 or qwen3 else 500000.0
    inv_freq = (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))).astype("<f4")
    for l in range(layers):
        p = f"model.layers.{l}"
        tensors[f"{p}.input_layernorm.weight"] = 1 + r(hidden)
        tensors[f"{p}.self_attn.q_proj.weight"] = r(heads * hd, hidden)
        tensors[f"{p}.self_attn.k_proj.weight"] = r(kv_heads * hd, hidden)
        tensors[f"{p}.self_attn.v_proj.weight"] = r(kv_heads * hd, hidden)
        tensors[f"{p}.self_attn.o_proj.weight"] = r(hidden, heads * hd)
        if qwen2:
            tensors[f"{p}.self_attn.q_proj.bias"] = r(heads * hd)
            tensors[f"{p}.self_attn.k_proj.bias"] = r(kv_heads * hd)
            tensors[f"{p}.self_attn.v_proj.bias"] = r(kv_heads * hd)
        elif qwen3:
            tensors[f"{p}.self_attn.q_norm.weight"] = 1 + r(hd)
            tensors[f"{p}.self_attn.k_norm.weight"] = 1 + r(hd)
        else:
            tensors[f"{p}.self_attn.rotary_emb.inv_freq"] = inv_freq
        tensors[f"{p}.post_attention_layernorm.weight"] = 1 + r(hidden)
        tensors[f"{p}.mlp.gate_proj.weight"] = r(intermediate, hidden)
        tensors[f"{p}.mlp.up_proj.weight"] = r(intermediate, hidden)
        tensors[f"{p}.mlp.down_proj.weight"] = r(hidden, intermediate)
    tensors["model.norm.weight"] = 1 + r(hidden)
    if not qwen2 and not qwen3:
        tensors["lm_head.weight"] = r(n_vocab, hidden)
    write_safetensors(f"{folder}/model.safetensors", tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 256,
        "eos_token_id": 256,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": positions,
        "mlp_bias": False,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "vocab_size": n_vocab,
    }
    if head_dim:
        config["head_dim"] = head_dim
    if qwen2 or qwen3:
        # Qwen2Config's fields: no attention_bias, mlp_bias or pretraining_tp; a sliding window off.
        # Qwen3Config's: the same with attention_bias false and head_dim.
        for key in ("attention_bias", "mlp_bias", "pretraining_tp"):
            del config[key]
        if qwen3:
            config.update(attention_bias=False, head_dim=hd)
        config.update(
            architectures=["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"],
            model_type=family,
            rope_scaling=None,
            rope_theta=theta,
            tie_word_embeddings=True,
            use_sliding_window=False,
            sliding_window=positions,
            max_window_layers=layers,
        )
    with open(f"{folder}/config.json", "w") as f:
        json.dump(config, f, indent=2)
    with open(f"{folder}/vocab.json", "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(f"{folder}/merges.txt", "w") as f:
        f.write("#version: 0.2\n")
    print(json.dumps(sorted(tensors)))


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        folder, ids_path, batch, seq, out_path = sys.argv[2:]
        main(folder, ids_path, int(batch), int(seq), out_path)
    elif sys.argv[1] == "write-random":
        rest = sys.argv[10:]
        dims = [int(a.split("=")[1]) for a in rest if a.startswith("head_dim=")]
        family = "qwen2" if "qwen2" in rest else "qwen3" if "qwen3" in rest else "llama"
        write_random(sys.argv[2], *(int(a) for a in sys.argv[3:10]), family=family, head_dim=dims[0] if dims else None)
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
