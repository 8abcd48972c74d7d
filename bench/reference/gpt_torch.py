#!/usr/bin/python3
"""torch forward+backward of the GPT `npm run bench -- nn` times, on the identical config.

The same nanoGPT shape as src/nn/gpt.ts (tied head, pre-LN blocks, fused qkv, 4h GELU-tanh MLP,
no dropout), GPT-2 init, random tokens. Prints one JSON object: tokens/s (median of the runs).
Run with Debian's python3-torch: /usr/bin/python3 bench/reference/gpt_torch.py --layers 4 ...
Its line records torch's threads and the BLAS it runs on, with a GEMM figure (torch_env.py). On a
2-vCPU machine torch's default of 1 intra-op thread measured 3-5x faster than 2.
`--device cuda` runs it on an NVIDIA GPU (fp32, TF32 off, as webtron computes), timed with a
device synchronize after each step. `--precision bf16|fp16` runs the forward under torch.autocast in
that dtype (fp32 weights, 16-bit matmuls: torch's own mixed precision), beside webtron's 16-bit
weights.
"""
import contextlib
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from torch_env import torch_env


class Block(torch.nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = torch.nn.LayerNorm(c)
        self.qkv = torch.nn.Linear(c, 3 * c)
        self.proj = torch.nn.Linear(c, c)
        self.ln_2 = torch.nn.LayerNorm(c)
        self.fc = torch.nn.Linear(c, 4 * c)
        self.mlp_proj = torch.nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float('-inf')).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.proj(y)
        return x + self.mlp_proj(F.gelu(self.fc(self.ln_2(x)), approximate='tanh'))


class Gpt(torch.nn.Module):
    def __init__(self, layers, heads, c, block, vocab):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, c)
        self.wpe = torch.nn.Embedding(block, c)
        self.blocks = torch.nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(c)
        for name, p in self.named_parameters():
            if name.endswith('bias'):
                torch.nn.init.zeros_(p)
            elif 'ln' in name:
                torch.nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith('proj.weight') else 0.02
                torch.nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets):
        t = ids.size(1)
        x = self.wte(ids) + self.wpe(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    for name, default in [('layers', 4), ('heads', 4), ('hidden', 128), ('block', 64), ('batch', 12), ('vocab', 81), ('runs', 10), ('warmup', 3)]:
        ap.add_argument(f'--{name}', type=int, default=default)
    ap.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    ap.add_argument('--precision', default='fp32', choices=['fp32', 'bf16', 'fp16'])
    ap.add_argument('--threads', type=int, default=0, help="intra-op threads (default: torch's own choice)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    if a.device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if a.device == 'cuda' else (lambda: None)
    model = Gpt(a.layers, a.heads, a.hidden, a.block, a.vocab).to(device)
    ids = torch.randint(0, a.vocab, (a.batch, a.block), device=device)
    targets = torch.randint(0, a.vocab, (a.batch, a.block), device=device)
    half = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(a.precision)
    autocast = (lambda: torch.autocast(device_type=a.device, dtype=half)) if half else contextlib.nullcontext
    times = []
    for i in range(a.warmup + a.runs):
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        with autocast():
            loss = model(ids, targets)
        loss.backward()
        sync()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
    times.sort()
    ms = 1000 * times[len(times) // 2]
    print(json.dumps({'ms': ms, 'precision': a.precision, 'tokens_per_s': a.batch * a.block / (ms / 1000), 'loss': float(loss),
                      'threads': torch.get_num_threads(), 'torch_version': torch.__version__,
                      'device': torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu',
                      'env': torch_env(a.device)}))


if __name__ == '__main__':
    main()
