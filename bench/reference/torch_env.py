"""What a torch baseline runs on, for every JSON line the references print.

Debian's python3-torch is built against the generic BLAS interface (BLAS_INFO=generic): which
library does the GEMMs is whatever libblas.so.3 resolves to. With only libblas3 installed that is
the netlib reference BLAS, about 60x slower than OpenBLAS (libopenblas0-pthread) on the same CPU, and
a comparison against it says nothing. So every reference line records the BLAS library actually
mapped into the process, torch's thread settings, and a measured fp32 GEMM at 1024^3 (the device
limit the benches divide by).

    /usr/bin/python3 bench/reference/torch_env.py [--threads N] [--device cpu|cuda]

prints the same record as one JSON line.
"""
import argparse
import json
import os
import re
import time

import torch

# Debian's netlib reference BLAS lives under blas/; optimized ones name themselves.
OPTIMIZED = ("openblas", "blis", "mkl", "atlas", "armpl", "flexiblas")


def mapped_blas():
    """Paths of the BLAS libraries mapped into this process (after a GEMM has loaded them)."""
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and ("blas" in parts[5] or "mkl" in parts[5] or "blis" in parts[5]):
                    paths.add(os.path.realpath(parts[5]))
    except OSError:
        pass
    return sorted(paths)


def blas_kind(paths, build_info):
    """Which library provides libblas.so.3, the GEMMs of a generic-BLAS build: 'openblas', 'blis', …
    by the directory Debian's alternatives install it in, 'reference' for netlib's (blas/); the
    build's own BLAS_INFO when no libblas.so is mapped (a build that links its BLAS statically)."""
    for path in paths:
        if not os.path.basename(path).startswith("libblas.so"):
            continue
        folder = os.path.basename(os.path.dirname(path)).lower()
        for name in OPTIMIZED:
            if folder.startswith(name):
                return name
        return "reference" if folder == "blas" else f"unknown ({path})"
    return build_info or "unknown"


def build_setting(name):
    found = re.search(rf"\b{name}=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else None


def gemm_gflops(device, m=1024, k=1024, n=1024, runs=10, dtype=torch.float32):
    """Median GEMM GFLOP/s of [m, k] @ [k, n] in `dtype` (fp32 by default) on `device` with the current
    thread settings, after half a second of warm-up (clocks and thread pools settle: two warm-up runs
    read half as much here)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        torch.mm(a, b)
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * m * k * n / times[len(times) // 2] / 1e9


def torch_env(device="cpu", threads=None):
    if threads:
        torch.set_num_threads(threads)
    record = {
        "torch_version": torch.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS") if k in os.environ},
    }
    if device == "cuda":
        size = 4096
        record.update(
            gpu=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        size = 1024
    record["gemm_size"] = size
    record["gemm_gflops"] = round(gemm_gflops(device, size, size, size), 1)
    build = build_setting("BLAS_INFO")
    paths = mapped_blas()
    record["blas"] = {"build": build, "kind": blas_kind(paths, build) if device == "cpu" else "cublas", "libraries": paths}
    return record


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gemm", default="", help="M,K,N: also time [M, K] @ [K, N] (as gemm_shape_gflops)")
    ap.add_argument("--gemm-dtype", default="float32", choices=["float32", "float16"], help="of the --gemm operands")
    a = ap.parse_args()
    record = torch_env(a.device, a.threads or None)
    if a.gemm:
        m, k, n = (int(v) for v in a.gemm.split(","))
        record["gemm_shape"] = [m, k, n]
        record["gemm_dtype"] = a.gemm_dtype
        record["gemm_shape_gflops"] = round(gemm_gflops(a.device, m, k, n, dtype=getattr(torch, a.gemm_dtype)), 1)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
