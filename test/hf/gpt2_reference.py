"""An independent referee for webtron's Hugging Face GPT-2 folders, written from the formats and from
`transformers`' modeling_gpt2, with the standard library, numpy and torch only (no transformers, no
safetensors package: neither is installed here).

    gpt2_reference.py logits DIR IDS.bin BATCH SEQ OUT.bin
        Read DIR (config.json, model.safetensors: an 8-byte little-endian header length, the JSON
        header, raw little-endian data), run GPT-2's forward in torch (fp32) on the int32 token ids
        [BATCH, SEQ] and write the logits [BATCH, SEQ, vocab_size] as float32.
    gpt2_reference.py write-random DIR SEED LAYERS HIDDEN HEADS POSITIONS [VOCAB [DTYPE]]
        Write a random GPT-2 folder as transformers' GPT2LMHeadModel.save_pretrained wrote it
        (`transformer.`-prefixed names, the causal-mask buffers `attn.bias`, a tied head; F32, or
        DTYPE BF16) with a small byte-level BPE tokenizer (vocab.json, merges.txt), vocab_size VOCAB
        (default: the tokenizer's); print the tensors' names as JSON.
"""
import json
import math
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = data[8 + n :]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = body[begin:end]
        dtype = entry["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            # bfloat16 is the high half of a float32.
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {dtype}")
        out[name] = arr.reshape(entry["shape"]).copy()
    return header.get("__metadata__"), out


def write_safetensors(path, tensors, dtype="F32"):
    """Write float32 arrays as safetensors (F32, or BF16 rounded to nearest even), format pt."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, arr in tensors.items():
        if dtype == "BF16":  # torch's float32 -> bfloat16: round to nearest even
            import torch

            arr = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
        blob = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)


def gelu_new(x, torch):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def logits(folder, ids_path, batch, seq, out_path):
    import torch

    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    assert config.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh")
    assert not config.get("scale_attn_by_inverse_layer_idx", False)
    assert config.get("scale_attn_weights", True)
    metadata, tensors = read_safetensors(f"{folder}/model.safetensors")
    assert metadata is not None and metadata.get("format") == "pt", "transformers needs __metadata__.format 'pt'"
    # from_pretrained takes the base model's names with or without the `transformer.` prefix.
    w = {}
    for name, arr in tensors.items():
        w[name[len("transformer.") :] if name.startswith("transformer.") else name] = torch.from_numpy(arr)
    n_layer, n_head, n_embd = config["n_layer"], config["n_head"], config["n_embd"]
    eps = config["layer_norm_epsilon"]
    hd = n_embd // n_head

    def ln(x, prefix):
        return torch.nn.functional.layer_norm(x, (n_embd,), w[f"{prefix}.weight"], w[f"{prefix}.bias"], eps)

    def conv1d(x, prefix):  # transformers' Conv1D: x @ W + b, W [in, out]
        return x @ w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    ids = torch.from_numpy(np.fromfile(ids_path, dtype="<i4").astype(np.int64).reshape(batch, seq))
    x = w["wte.weight"][ids] + w["wpe.weight"][torch.arange(seq)]
    causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
    for layer in range(n_layer):
        p = f"h.{layer}"
        q, k, v = conv1d(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(n_embd, dim=2)
        heads = lambda t: t.view(batch, seq, n_head, hd).permute(0, 2, 1, 3)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = torch.where(causal, scores, torch.tensor(torch.finfo(scores.dtype).min))
        y = torch.softmax(scores, dim=-1) @ v
        y = y.permute(0, 2, 1, 3).reshape(batch, seq, n_embd)
        x = x + conv1d(y, f"{p}.attn.c_proj")
        x = x + conv1d(gelu_new(conv1d(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc"), torch), f"{p}.mlp.c_proj")
    x = ln(x, "ln_f")
    head = w["wte.weight"] if config.get("tie_word_embeddings", True) else w["lm_head.weight"]
    out = (x @ head.T).contiguous()
    assert out.shape == (batch, seq, config["vocab_size"])
    out.numpy().astype("<f4").tofile(out_path)


def byte_to_unicode():
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, shifted = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + shifted)
            shifted += 1
    return out


def write_random(folder, seed, layers, hidden, heads, positions, n_vocab=None, dtype="F32"):
    import os

    rng = np.random.default_rng(seed)
    chars = byte_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("Ġ", "s"), ("o", "n")]:
        merges.append(f"{a} {b}")
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    eot = len(vocab) - 1
    n_vocab = n_vocab or len(vocab)
    os.makedirs(folder, exist_ok=True)
    tensors = {}
    r = lambda *shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.2)  # noqa: E731
    tensors["transformer.wte.weight"] = r(n_vocab, hidden)
    tensors["transformer.wpe.weight"] = r(positions, hidden)
    for l in range(layers):
        p = f"transformer.h.{l}"
        tensors[f"{p}.ln_1.weight"] = 1 + r(hidden)
        tensors[f"{p}.ln_1.bias"] = r(hidden)
        tensors[f"{p}.attn.bias"] = np.tril(np.ones((positions, positions), dtype="<f4")).reshape(1, 1, positions, positions)
        tensors[f"{p}.attn.c_attn.weight"] = r(hidden, 3 * hidden)
        tensors[f"{p}.attn.c_attn.bias"] = r(3 * hidden)
        tensors[f"{p}.attn.c_proj.weight"] = r(hidden, hidden)
        tensors[f"{p}.attn.c_proj.bias"] = r(hidden)
        tensors[f"{p}.ln_2.weight"] = 1 + r(hidden)
        tensors[f"{p}.ln_2.bias"] = r(hidden)
        tensors[f"{p}.mlp.c_fc.weight"] = r(hidden, 4 * hidden)
        tensors[f"{p}.mlp.c_fc.bias"] = r(4 * hidden)
        tensors[f"{p}.mlp.c_proj.weight"] = r(4 * hidden, hidden)
        tensors[f"{p}.mlp.c_proj.bias"] = r(hidden)
    tensors["transformer.ln_f.weight"] = 1 + r(hidden)
    tensors["transformer.ln_f.bias"] = r(hidden)
    write_safetensors(f"{folder}/model.safetensors", tensors, dtype)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "layer_norm_epsilon": 1e-05,
        "n_ctx": positions,
        "n_embd": hidden,
        "n_head": heads,
        "n_layer": layers,
        "n_positions": positions,
        "vocab_size": n_vocab,
    }
    with open(f"{folder}/config.json", "w") as f:
        json.dump(config, f, indent=2)
    with open(f"{folder}/vocab.json", "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(f"{folder}/merges.txt", "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(json.dumps(sorted(tensors)))


if __name__ == "__main__":
    if sys.argv[1] == "logits":
        logits(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "write-random":
        sizes = [int(a) for a in sys.argv[4:9]]
        write_random(sys.argv[2], int(sys.argv[3]), *sizes, *sys.argv[9:10])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
