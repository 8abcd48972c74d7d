#!/usr/bin/python3
"""Make test/fixtures/momentum-torch.json: torch.optim.SGD's states after many steps, and Lion's
from a float64 numpy implementation written from the paper (Chen et al. 2023, "Symbolic Discovery
of Optimization Algorithms", Algorithm 2: decoupled weight decay), since torch has no Lion.

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-momentum-fixtures.py

Initial params and every step's grads come from the hash of scripts/make-adam-fixtures.py (and
test/helpers/hash.ts), so the fixture stores only the hyper-parameters and the resulting states.
"""
import os
import sys
from importlib import import_module

import numpy as np
import torch

# The hash of test/helpers/hash.ts, and the fixture writer, of scripts/make-adam-fixtures.py.
sys.path.insert(0, os.path.dirname(__file__))
adam_fixtures = import_module("make-adam-fixtures")
hashed_uniform, b64 = adam_fixtures.hashed_uniform, adam_fixtures.b64

LENGTH = 1031  # odd, not a multiple of 4, more than one 1024-element block
STEPS = 120
CHECKPOINTS = [1, 10, 100, 120]

CASES = [
    dict(name="sgd-megatron-defaults", optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-2, grad_scale=1.0),
    dict(name="sgd-plain", optimizer="sgd", lr=3e-2, momentum=0.0, weight_decay=0.0, grad_scale=0.5),
    dict(name="sgd-l2-no-momentum", optimizer="sgd", lr=1e-2, momentum=0.0, weight_decay=0.1, grad_scale=2.0),
    dict(name="sgd-light-momentum", optimizer="sgd", lr=5e-3, momentum=0.5, weight_decay=0.05, grad_scale=1e-3),
    dict(name="lion-megatron-defaults", optimizer="lion", lr=1e-4, betas=(0.95, 0.98), weight_decay=1e-2, grad_scale=1.0),
    dict(name="lion-paper", optimizer="lion", lr=3e-4, betas=(0.9, 0.99), weight_decay=1.0, grad_scale=0.25),
]


def run_sgd(case, seed):
    param = torch.tensor(hashed_uniform(seed, 0, LENGTH, 1.0), requires_grad=True)
    opt = torch.optim.SGD([param], lr=case["lr"], momentum=case["momentum"], weight_decay=case["weight_decay"], foreach=False)
    states = []
    for step in range(1, STEPS + 1):
        param.grad = torch.tensor(hashed_uniform(seed, step, LENGTH, case["grad_scale"]))
        opt.step()
        if step in CHECKPOINTS:
            buf = opt.state[param].get("momentum_buffer")
            state = dict(step=step, param=b64(param.detach().numpy()))
            if buf is not None:
                state["momentum_buffer"] = b64(buf.numpy())
            states.append(state)
    return states


def run_lion(case, seed):
    lr, (beta1, beta2), wd = case["lr"], case["betas"], case["weight_decay"]
    param = hashed_uniform(seed, 0, LENGTH, 1.0).astype(np.float64)
    m = np.zeros(LENGTH)
    states = []
    for step in range(1, STEPS + 1):
        g = hashed_uniform(seed, step, LENGTH, case["grad_scale"]).astype(np.float64)
        update = np.sign(beta1 * m + (1 - beta1) * g)
        param = param - lr * (update + wd * param)
        m = beta2 * m + (1 - beta2) * g
        if step in CHECKPOINTS:
            states.append(dict(step=step, param=b64(param), exp_avg=b64(m)))
    return states


def main():
    out = dict(torch_version=torch.__version__, length=LENGTH, steps=STEPS, cases=[])
    for seed, case in enumerate(CASES, start=11):
        states = run_sgd(case, seed) if case["optimizer"] == "sgd" else run_lion(case, seed)
        out["cases"].append(dict(case, **({"betas": list(case["betas"])} if "betas" in case else {}), seed=seed, states=states))
    adam_fixtures.write_fixture("momentum-torch.json", out)


if __name__ == "__main__":
    main()
