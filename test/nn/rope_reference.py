"""An independent referee for webtron's rotary position embedding, written from Megatron-LM's
RotaryEmbedding and _apply_rotary_pos_emb_bshd (megatron/core/models/common/embeddings), in torch.

    rope_reference.py IN.bin OUT.bin BATCH SEQ HIDDEN HEADS BASE PERCENT INTERLEAVED [SCALING [GROUPS]]

IN.bin holds float32 qkv [BATCH, SEQ, HIDDEN + 2·GROUPS·HIDDEN/HEADS] (q of HEADS heads, then k and
v of GROUPS heads; GROUPS = HEADS when absent) then float32 dy of the same shape. OUT.bin gets the
rotated qkv (q and k rotated, v as it was) then the grad of qkv under dy, both float32. SCALING:
Llama 3's frequency scaling by that factor (Megatron's --use-rope-scaling), none when absent or 0.
"""
import math
import sys

import numpy as np
import torch


def rotate_half(x, interleaved):
    if not interleaved:
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(start_dim=-2)


def llama3_scaling(freqs, factor, low_freq_factor=1, high_freq_factor=4, old_context_len=8192):
    # RotaryEmbedding._apply_scaling
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / freqs
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, freqs / factor, freqs)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def main():
    src, dst, batch, seq, hidden, heads, base, percent, interleaved = sys.argv[1:10]
    scaling = float(sys.argv[10]) if len(sys.argv) > 10 else 0.0
    batch, seq, hidden, heads = int(batch), int(seq), int(hidden), int(heads)
    groups = int(sys.argv[11]) if len(sys.argv) > 11 else heads
    base, percent, interleaved = float(base), float(percent), interleaved == "1"
    hd = hidden // heads
    width = hidden + 2 * groups * hd
    data = np.fromfile(src, dtype="<f4")
    n = batch * seq * width
    qkv = torch.tensor(data[:n].reshape(batch, seq, width), requires_grad=True)
    dy = torch.tensor(data[n : 2 * n].reshape(batch, seq, width))

    # RotaryEmbedding: dim = int(kv_channels * percent) when percent < 1.
    dim = int(hd * percent) if percent < 1.0 else hd
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if scaling:
        inv_freq = llama3_scaling(inv_freq, scaling)
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    if not interleaved:
        emb = torch.cat((freqs, freqs), dim=-1)
    else:
        emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
    emb = emb[:, None, None, :]  # [seq, 1, 1, rot]

    def apply(t):  # t: [seq, batch, heads, hd]
        rot = emb.shape[-1]
        t_rot, t_pass = t[..., :rot], t[..., rot:]
        t_rot = t_rot * torch.cos(emb) + rotate_half(t_rot, interleaved) * torch.sin(emb)
        return torch.cat((t_rot, t_pass), dim=-1)

    q, k, v = qkv.split([hidden, groups * hd, groups * hd], dim=-1)
    as_heads = lambda t: t.reshape(batch, seq, -1, hd).transpose(0, 1)
    back = lambda t: t.transpose(0, 1).reshape(batch, seq, -1)
    out = torch.cat((back(apply(as_heads(q))), back(apply(as_heads(k))), v), dim=-1)
    out.backward(dy)
    np.concatenate([out.detach().numpy().ravel(), qkv.grad.numpy().ravel()]).astype("<f4").tofile(dst)


if __name__ == "__main__":
    main()
