#!/usr/bin/python3
"""Make test/fixtures/adam-precision-torch.json: single AdamW steps of torch on 16-bit state.

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-adam-precision-fixtures.py

Megatron's precision-aware optimizer keeps the main params and Adam's moments in 16 bits. For each
case, torch.optim.AdamW runs STEPS steps on fp32 tensors whose state is rounded to the case's
storage dtypes after every step (torch's .to(dtype) rounds to nearest even), so every step starts
from the same rounded values the GPU kernel stores. The fixture holds, for the steps in CHECKPOINTS,
the state before the step (rounded) and after it: the param in fp32 before rounding, and the
rounded moments and param. Params and grads come from the hash in test/helpers/hash.ts.
"""
import base64
import os
import sys
from importlib import import_module

import numpy as np
import torch

LENGTH = 1030  # not a multiple of 4: the kernel's tail runs
STEPS = 60
CHECKPOINTS = [1, 2, 30, 60]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The hash of test/helpers/hash.ts, as scripts/make-adam-fixtures.py writes it.
sys.path.insert(0, os.path.dirname(__file__))
adam_fixtures = import_module("make-adam-fixtures")
hashed_uniform = adam_fixtures.hashed_uniform


CASES = [
    dict(name="bf16 moments", param="float32", exp_avg="bfloat16", exp_avg_sq="bfloat16", grad_scale=0.5),
    dict(name="fp16 moments", param="float32", exp_avg="float16", exp_avg_sq="float16", grad_scale=0.5),
    dict(name="bf16 exp_avg, fp32 exp_avg_sq", param="float32", exp_avg="bfloat16", exp_avg_sq="float32", grad_scale=2.0),
    dict(name="fp16 main params, bf16 moments", param="float16", exp_avg="bfloat16", exp_avg_sq="bfloat16", grad_scale=0.5),
]
HYPER = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def rounded(t, dtype):
    return t.to(DTYPES[dtype]).to(torch.float32)


def b64(t):
    return base64.b64encode(np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tobytes()).decode("ascii")


def run(case, seed):
    param = torch.tensor(hashed_uniform(seed, 1000, LENGTH, 1.0))
    param = torch.nn.Parameter(rounded(param, case["param"]))
    opt = torch.optim.AdamW([param], lr=HYPER["lr"], betas=HYPER["betas"], eps=HYPER["eps"],
                            weight_decay=HYPER["weight_decay"], foreach=False)
    steps = []
    for step in range(1, STEPS + 1):
        param.grad = torch.tensor(hashed_uniform(seed, step, LENGTH, case["grad_scale"]))
        before = None
        if step in CHECKPOINTS:
            st = opt.state.get(param, {})
            zeros = torch.zeros(LENGTH)
            before = dict(param=b64(param), exp_avg=b64(st.get("exp_avg", zeros)), exp_avg_sq=b64(st.get("exp_avg_sq", zeros)))
        opt.step()
        st = opt.state[param]
        unrounded = param.detach().clone()
        with torch.no_grad():
            st["exp_avg"].copy_(rounded(st["exp_avg"], case["exp_avg"]))
            st["exp_avg_sq"].copy_(rounded(st["exp_avg_sq"], case["exp_avg_sq"]))
            param.copy_(rounded(param, case["param"]))
        if before is not None:
            steps.append(dict(step=step, before=before, after=dict(
                param_fp32=b64(unrounded), param=b64(param), exp_avg=b64(st["exp_avg"]), exp_avg_sq=b64(st["exp_avg_sq"]))))
    return steps


def main():
    out = dict(torch_version=torch.__version__, length=LENGTH, hyper=dict(HYPER, betas=list(HYPER["betas"])), cases=[])
    for seed, case in enumerate(CASES, start=31):
        out["cases"].append(dict(case, seed=seed, steps=run(case, seed)))
    adam_fixtures.write_fixture("adam-precision-torch.json", out)


if __name__ == "__main__":
    main()
