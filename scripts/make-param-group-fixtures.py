#!/usr/bin/python3
"""Make test/fixtures/param-groups-torch.json: torch.optim.AdamW with Megatron's param groups.

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-param-group-fixtures.py

A small model's params and each step's grads come from the hash of test/helpers/hash.ts (the same
function as scripts/make-adam-fixtures.py). Weight decay on 2-D params that are not biases, none on
biases and 1-D params (Megatron's default groups); the learning rate follows Megatron's
OptimizerParamScheduler (linear warmup, then cosine decay to min_lr), written here from its formula
and set on both groups before each step; grads clipped to a global norm with
torch.nn.utils.clip_grad_norm_. The fixture keeps the per-step rates and the final params.

A second run adds Megatron's --decoupled-lr group: DECOUPLED (a 2-D param, as the embedding is)
takes its own peak and minimum rate on the same warmup and decay, and decays with its own rate
(AdamW's p *= 1 - lr * wd is per group). Its rates and final params go under "decoupled".
"""
import base64
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from importlib import import_module

adam_fixtures = import_module('make-adam-fixtures')
hashed_uniform = adam_fixtures.hashed_uniform

PARAMS = [('w1', [8, 5]), ('b1', [5]), ('ln.weight', [5]), ('w2', [5, 3]), ('b2', [3])]
STEPS = 12
LR, MIN_LR, WARMUP, DECAY, WD, CLIP = 1e-2, 1e-3, 3, 10, 0.1, 0.05
DECOUPLED, DECOUPLED_LR, DECOUPLED_MIN_LR = ['w1'], 3e-2, 2e-3


def megatron_lr(steps, lr=LR, min_lr=MIN_LR):
    if WARMUP > 0 and steps <= WARMUP:
        return lr * steps / WARMUP
    if steps > DECAY:
        return min_lr
    ratio = (steps - WARMUP) / (DECAY - WARMUP)
    return min_lr + 0.5 * (math.cos(math.pi * ratio) + 1.0) * (lr - min_lr)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype='<f4').tobytes()).decode('ascii')


def train(decoupled):
    """STEPS steps of AdamW; the params named in `decoupled` take the decoupled rates. Returns (base rates, decoupled rates, final params)."""
    params = {}
    for k, (name, shape) in enumerate(PARAMS):
        n = int(np.prod(shape))
        params[name] = torch.tensor(hashed_uniform(7, k, n, 1.0).reshape(shape), requires_grad=True)
    # Megatron's default: no weight decay on biases and 1-D params (norms).
    decays = {name: p.dim() > 1 and not name.endswith('.bias') for name, p in params.items()}
    decay = [p for name, p in params.items() if decays[name] and name not in decoupled]
    no_decay = [p for name, p in params.items() if not decays[name] and name not in decoupled]
    groups = [{'params': decay, 'weight_decay': WD, 'decoupled': False}, {'params': no_decay, 'weight_decay': 0.0, 'decoupled': False}]
    if decoupled:
        groups.append({'params': [params[name] for name in decoupled], 'weight_decay': WD if all(decays[n] for n in decoupled) else 0.0, 'decoupled': True})
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    rates, decoupled_rates = [], []
    for t in range(1, STEPS + 1):
        for k, (name, shape) in enumerate(PARAMS):
            n = int(np.prod(shape))
            params[name].grad = torch.tensor(hashed_uniform(1000 + t, k, n, 0.5).reshape(shape))
        torch.nn.utils.clip_grad_norm_(list(params.values()), CLIP)
        lr, dlr = megatron_lr(t - 1), megatron_lr(t - 1, DECOUPLED_LR, DECOUPLED_MIN_LR)
        rates.append(lr)
        decoupled_rates.append(dlr)
        for group in opt.param_groups:
            group['lr'] = dlr if group['decoupled'] else lr
        opt.step()
    return rates, decoupled_rates, {name: b64(p.detach().numpy().ravel()) for name, p in params.items()}


def main():
    rates, _, final = train([])
    _, decoupled_rates, decoupled_final = train(DECOUPLED)
    out = {
        'torch_version': torch.__version__,
        'params': [{'name': name, 'shape': shape} for name, shape in PARAMS],
        'steps': STEPS,
        'schedule': {'lr': LR, 'min_lr': MIN_LR, 'warmup_iters': WARMUP, 'decay_iters': DECAY, 'style': 'cosine'},
        'weight_decay': WD, 'betas': [0.9, 0.95], 'eps': 1e-8, 'clip_grad': CLIP,
        'rates': rates,
        'final': final,
        'decoupled': {'params': DECOUPLED, 'lr': DECOUPLED_LR, 'min_lr': DECOUPLED_MIN_LR, 'rates': decoupled_rates, 'final': decoupled_final},
    }
    path = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'param-groups-torch.json')
    with open(path, 'w') as f:
        json.dump(out, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
