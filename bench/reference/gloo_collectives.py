#!/usr/bin/python3
"""torch.distributed's gloo on the same machine, for comparison with `npm run bench -- collectives`.

Run with Debian's python3-torch (not a webtron dependency):
    /usr/bin/python3 bench/reference/gloo_collectives.py [--world 2] [--bytes 67108864]
Prints one JSON line per op with nccl-tests' algbw/busbw, like webtron's benchmark.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, nbytes, port, runs, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = nbytes // 4 // world * world
    data = torch.ones(n, dtype=torch.float32)
    shard = torch.empty(n // world, dtype=torch.float32)
    results = {}
    for op in ["all_reduce", "reduce_scatter", "all_gather"]:
        samples = []
        for i in range(runs + 2):
            dist.barrier()
            t0 = time.perf_counter()
            if op == "all_reduce":
                dist.all_reduce(data)
            elif op == "reduce_scatter":
                # gloo in torch 1.13 does not implement reduce_scatter: report it as missing.
                try:
                    dist.reduce_scatter(shard, list(data.chunk(world)))
                except RuntimeError:
                    samples = None
                    break
            else:
                dist.all_gather(list(data.chunk(world)), data.chunk(world)[rank].clone())
            if i >= 2:
                samples.append((time.perf_counter() - t0) * 1000)
        results[op] = statistics.median(samples) if samples else None
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--bytes", type=int, default=64 << 20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    queue = mp.get_context("spawn").SimpleQueue()
    port = 29000 + os.getpid() % 1000
    mp.spawn(worker, args=(args.world, args.bytes, port, args.runs, queue), nprocs=args.world, join=True)
    results = queue.get()
    n = args.world
    for op, ms in results.items():
        if ms is None:
            print(json.dumps({"bench": "gloo", "op": op, "world": n, "bytes": args.bytes, "unsupported": True, "torch": torch.__version__}))
            continue
        algbw = args.bytes / ms / 1e6
        factor = 2 * (n - 1) / n if op == "all_reduce" else (n - 1) / n
        print(json.dumps({"bench": "gloo", "op": op, "world": n, "bytes": args.bytes, "ms": ms,
                          "algbw_gbps": algbw, "busbw_gbps": algbw * factor, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
