#!/usr/bin/python3
"""PyTorch's data-parallel training of the same GPT, for `npm run bench -- train`.

DistributedDataParallel with ZeroRedundancyOptimizer(AdamW) over gloo: the baseline a PyTorch user
would race `webtron train --use-distributed-optimizer` against. Same shape and init as
bench/reference/gpt_torch.py (webtron's GPT), the same micro-batch per rank, Megatron's Adam defaults
(betas 0.9/0.999, eps 1e-8, weight decay 0.01 off biases and norms, global grad norm clipped to 1.0).
Tokens are drawn from a seeded generator over the vocabulary: throughput does not depend on them.

Run with Debian's python3-torch (never a webtron dependency):
    /usr/bin/python3 bench/reference/train_torch_ddp.py --world 2 --iters 40 --window 20
Each process gets cores / world intra-op threads, as torchrun's OMP_NUM_THREADS=1 default intends
on a machine this small (--threads overrides). Prints one JSON line: global tokens/s over the last
--window iterations, step milliseconds, the final loss, and the BLAS torch ran on with a GEMM figure
(torch_env.py).
"""
import argparse
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

from gpt_torch import Gpt
from torch_env import torch_env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, a, port, queue):
    torch.set_num_threads(a.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=a.world)
    torch.manual_seed(a.seed)
    model = Gpt(a.layers, a.heads, a.hidden, a.block, a.vocab)
    ddp = DistributedDataParallel(model, bucket_cap_mb=a.bucket_mb)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = ZeroRedundancyOptimizer(
        [{"params": decay, "weight_decay": 0.01}],
        optimizer_class=torch.optim.AdamW,
        lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
    )
    opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    gen = torch.Generator().manual_seed(a.seed * 1000 + rank)
    times = []
    loss = None
    for i in range(a.iters):
        ids = torch.randint(0, a.vocab, (a.batch, a.block + 1), generator=gen)
        inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = ddp(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    dist.barrier()
    if rank == 0:
        window = times[-a.window:]
        step = sum(window) / len(window)
        queue.put({"step_ms": 1000 * step, "tokens_per_s": a.batch * a.block * a.world / step, "loss": float(loss)})
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("world", 2), ("layers", 4), ("heads", 4), ("hidden", 128), ("block", 64), ("batch", 12),
                          ("vocab", 96), ("iters", 40), ("window", 20), ("seed", 1234), ("threads", 0), ("bucket-mb", 25)]:
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    if not 1 <= a.window < a.iters:
        ap.error(f"--window must be at least 1 and below --iters ({a.iters})")
    if a.threads <= 0:
        a.threads = max(1, (os.cpu_count() or 1) // a.world)
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(a, free_port(), queue), nprocs=a.world, join=True)
    result = queue.get()
    # The BLAS and a GEMM at the ranks' thread count, measured after the ranks finished.
    env = torch_env("cpu", a.threads)
    print(json.dumps({**result, "world": a.world, "threads": a.threads, "torch_version": torch.__version__, "env": env}))


if __name__ == "__main__":
    main()
