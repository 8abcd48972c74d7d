#!/usr/bin/python3
"""Make test/fixtures/adam-torch.json: torch.optim.Adam / AdamW states after many steps.

Run with Debian's python3-torch (apt-get install python3-torch): /usr/bin/python3 scripts/make-adam-fixtures.py

Initial params and every step's grads come from a 32-bit integer hash that test/optimizer/hash.ts
implements identically, so the fixture stores only the hyper-parameters and the resulting states.
The single-tensor (foreach=False) path is used: it is what PyTorch runs for one CPU tensor.
"""
import base64
import json
import os

import numpy as np
import torch

LENGTH = 1031  # odd, not a multiple of 4, more than one 1024-element block
STEPS = 120
CHECKPOINTS = [1, 10, 100, 120]
MASK = 0xFFFFFFFF


def lowbias32(x):
    x &= MASK
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    x ^= x >> 16
    return x


def hashed_uniform(seed, stream, length, scale):
    """length float32 values in [-scale, scale): exact in float32 (24-bit mantissa draws)."""
    out = np.empty(length, dtype=np.float32)
    base = lowbias32(seed * 0x9E3779B9 + stream)
    for i in range(length):
        h = lowbias32(base ^ lowbias32(i + 0x632BE5AB))
        out[i] = np.float32(((h >> 8) / 16777216.0 - 0.5) * 2.0 * scale)
    return out


CASES = [
    dict(name="adamw-defaults", optimizer="AdamW", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, maximize=False, grad_scale=1.0),
    dict(name="adam-no-decay", optimizer="Adam", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False, grad_scale=1.0),
    dict(name="adam-l2", optimizer="Adam", lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, maximize=False, grad_scale=0.5),
    dict(name="adamw-strong", optimizer="AdamW", lr=1e-2, betas=(0.85, 0.95), eps=1e-5, weight_decay=0.3, maximize=False, grad_scale=3.0),
    dict(name="adamw-tiny-grads-maximize", optimizer="AdamW", lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05, maximize=True, grad_scale=1e-6),
]


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def write_fixture(name, out):
    """Write `out` as test/fixtures/NAME: to a temporary name, fsynced, then renamed."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", name)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)
    print(f"wrote {path} with torch {torch.__version__}")


def run(case, seed):
    param = torch.tensor(hashed_uniform(seed, 0, LENGTH, 1.0), requires_grad=True)
    cls = torch.optim.AdamW if case["optimizer"] == "AdamW" else torch.optim.Adam
    opt = cls([param], lr=case["lr"], betas=case["betas"], eps=case["eps"], weight_decay=case["weight_decay"],
              maximize=case["maximize"], foreach=False)
    states = []
    for step in range(1, STEPS + 1):
        param.grad = torch.tensor(hashed_uniform(seed, step, LENGTH, case["grad_scale"]))
        opt.step()
        if step in CHECKPOINTS:
            st = opt.state[param]
            states.append(dict(step=step, param=b64(param.detach().numpy()), exp_avg=b64(st["exp_avg"].numpy()),
                               exp_avg_sq=b64(st["exp_avg_sq"].numpy())))
    return states


def main():
    out = dict(torch_version=torch.__version__, length=LENGTH, steps=STEPS, cases=[])
    for seed, case in enumerate(CASES, start=1):
        out["cases"].append(dict(case, betas=list(case["betas"]), seed=seed, states=run(case, seed)))
    write_fixture("adam-torch.json", out)


if __name__ == "__main__":
    main()
