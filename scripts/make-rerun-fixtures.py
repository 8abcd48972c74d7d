#!/usr/bin/python3
"""Make test/fixtures/rerun-megatron.json: Megatron-LM's own rerun state machine on scripted results.

Run with Debian's python3-torch, given Megatron-LM's megatron/core/rerun_state_machine.py:
  /usr/bin/python3 scripts/make-rerun-fixtures.py PATH/TO/rerun_state_machine.py

Megatron's module runs unchanged; only what it reaches outside itself is stood in for: one rank
(its any-rank all-reduce returns the flags as they are), the node name (os.uname) and device 0, and
the three small megatron.core helpers it imports. Each scenario drives the machine the way
Megatron's train_step does (validate_result on each check of each pass while
should_run_forward_backward says so, then should_checkpoint_and_exit), restarting a process from the
state dict of the checkpoint it asked for. The fixture keeps every scenario's script and what the
machine did: passes per iteration, state, checkpoint and exit code, the tracker file's statuses, and
report_stats' counts. test/train/rerun.test.ts replays the scripts through webtron's machine.
"""
import importlib.util
import json
import os
import sys
import tempfile
import types
from functools import partial

import torch

if len(sys.argv) != 2:
    sys.exit('usage: make-rerun-fixtures.py PATH/TO/megatron/core/rerun_state_machine.py')

# The helpers rerun_state_machine.py imports from megatron.core, for one rank.
for name in ['megatron', 'megatron.core', 'megatron.core.dist_checkpointing']:
    sys.modules[name] = types.ModuleType(name)
rank_utils = types.ModuleType('megatron.core._rank_utils')
rank_utils.safe_get_rank = lambda: 0
rank_utils.log_single_rank = lambda logger, level, message: None
sys.modules['megatron.core._rank_utils'] = rank_utils
mapping = types.ModuleType('megatron.core.dist_checkpointing.mapping')


class ShardedObject:
    def __init__(self, key, data, global_shape, global_offset):
        self.data = data


mapping.ShardedObject = ShardedObject
sys.modules['megatron.core.dist_checkpointing.mapping'] = mapping
typed = types.ModuleType('megatron.core.typed_torch')
typed.copy_signature = lambda *a, **k: (lambda f: f)
sys.modules['megatron.core.typed_torch'] = typed

spec = importlib.util.spec_from_file_location('rerun_state_machine', sys.argv[1])
rsm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rsm)

# One rank on a CPU: the any-rank reduction is the flags themselves; device 0; RNG states left alone.
rsm.RerunStateMachine._reduce_any = lambda self, value: tuple(value) if isinstance(value, list) else value
torch.cuda.current_device = lambda: 0
torch.cuda.get_rng_state = lambda: None
torch.cuda.set_rng_state = lambda state: None
torch.distributed.get_world_size = lambda: 1
torch.distributed.get_rank = lambda: 0
NODE = {'name': 'node-a'}
real_uname = os.uname
os.uname = lambda: (real_uname()[0], NODE['name'], *real_uname()[2:])

NAN = float('nan')
INF = float('inf')
LOSS_NAN = {'kind': 'nan', 'message': 'found NaN in local forward loss calculation', 'tolerance': 0.0, 'fatal': True}
LOSS_INF = {'kind': 'inf', 'message': 'found Inf in local forward loss calculation', 'tolerance': 0.0, 'fatal': True}
SPIKY = {'kind': 'large', 'context': 'loss', 'message': 'Spiky loss', 'tolerance': 0.0, 'fatal': False}
GRAD_NAN = {'kind': 'nan', 'message': 'found NaN in the grad norm', 'tolerance': 0.001, 'fatal': True}
LARGE_GRADS = {'kind': 'large', 'context': 'grads', 'message': 'large grads', 'tolerance': 0.001, 'fatal': False}


def steady(n, value=2.0):
    """n iterations whose every check sees `value` in every pass."""
    return [{'passes': [[value]]} for _ in range(n)]


# Each scenario: the mode, the error injector, the checks (in call order, each pass), and processes:
# each runs its iterations (results per pass, the last repeated) on a node until the machine exits;
# the next process loads the state dict of the checkpoint the last one asked for, if any.
SCENARIOS = [
    {'name': 'nothing rejected', 'mode': 'validate_results', 'checks': [LOSS_NAN, LOSS_INF, GRAD_NAN],
     'processes': [{'node': 'node-a', 'iterations': [{'passes': [[2.0, 2.0, 1.0]]}] * 4}]},
    {'name': 'a NaN in the first iteration is not validated', 'mode': 'validate_results', 'checks': [LOSS_NAN],
     'processes': [{'node': 'node-a', 'iterations': [{'passes': [[NAN]]}, {'passes': [[2.0]]}]}]},
    {'name': 'a NaN that a rerun reproduces', 'mode': 'validate_results', 'checks': [LOSS_NAN, LOSS_INF],
     'processes': [
         {'node': 'node-a', 'iterations': steady(2) + [{'passes': [[NAN, NAN]]}]},
         {'node': 'node-a', 'iterations': [{'passes': [[NAN, NAN]]}]},
         {'node': 'node-b', 'iterations': [{'passes': [[NAN, NAN]]}]},
     ]},
    {'name': 'a NaN that a rerun does not reproduce', 'mode': 'validate_results', 'checks': [LOSS_NAN],
     'processes': [{'node': 'node-a', 'iterations': steady(1) + [{'passes': [[NAN], [2.5]]}]}]},
    {'name': 'an infinity found on the second check', 'mode': 'validate_results', 'checks': [LOSS_NAN, LOSS_INF, GRAD_NAN],
     'processes': [
         {'node': 'node-a', 'iterations': steady(1, 3.0) + [{'passes': [[INF, INF, 4.0]]}]},
         {'node': 'node-b', 'iterations': [{'passes': [[3.0, 3.0, 4.0]]}]},
     ]},
    {'name': 'a grad NaN within the tolerance', 'mode': 'validate_results', 'checks': [LOSS_NAN, GRAD_NAN],
     'processes': [{'node': 'node-a', 'iterations': steady(1) + [{'passes': [[2.0, NAN], [2.0, NAN]]}]}]},
    {'name': 'injected transient error', 'mode': 'validate_results', 'rate': 1, 'type': 'transient_error',
     'checks': [LOSS_NAN, LOSS_INF], 'processes': [{'node': 'node-a', 'iterations': steady(4)}]},
    {'name': 'injected persistent error', 'mode': 'validate_results', 'rate': 1, 'type': 'persistent_error',
     'checks': [LOSS_NAN, LOSS_INF], 'processes': [
         {'node': 'node-a', 'iterations': steady(4)},
         {'node': 'node-a', 'iterations': steady(2)},
         {'node': 'node-b', 'iterations': steady(2)},
     ]},
    {'name': 'injected correct result', 'mode': 'validate_results', 'rate': 1, 'type': 'correct_result',
     'checks': [LOSS_NAN], 'processes': [
         {'node': 'node-a', 'iterations': steady(3)},
         {'node': 'node-b', 'iterations': steady(2)},
     ]},
    {'name': 'spiky loss, reproduced and not', 'mode': 'validate_results', 'checks': [LOSS_NAN, SPIKY],
     'processes': [{'node': 'node-a', 'iterations':
                    [{'passes': [[1.0 + i / 100, 1.0 + i / 100]]} for i in range(101)]
                    + [{'passes': [[30.0, 30.0]]}, {'passes': [[5.0, 5.0]]}, {'passes': [[40.0, 40.0], [3.0, 3.0]]},
                       {'passes': [[1.0, 1.0]]}]}]},
    {'name': 'large grads after a few samples', 'mode': 'validate_results', 'checks': [GRAD_NAN, LARGE_GRADS],
     'large_samples': 3, 'processes': [{'node': 'node-a', 'iterations':
                                        [{'passes': [[v, v]]} for v in [1.0, 2.0, 1.5, 1.0, 19.0, 25.0, 3.0]]}]},
    {'name': 'report_stats', 'mode': 'report_stats', 'checks': [LOSS_NAN, GRAD_NAN],
     'processes': [{'node': 'node-a', 'iterations': [
         {'passes': [[2.0, 1.0], [2.0, 1.0]]},
         {'passes': [[2.0, 1.0], [2.0 + 1e-6, 1.0]]},
         {'passes': [[3.0, 1.0], [3.0, 1.1]]},
         {'passes': [[NAN, 1.0], [2.0, INF]]},
     ]}]},
]


def rejection(m, check, samples):
    if check['kind'] == 'nan':
        return torch.isnan
    if check['kind'] == 'inf':
        return torch.isinf
    return partial(m.is_unexpectedly_large, threshold=10, context=check['context'], num_samples=samples)


def run(scenario):
    tracker = tempfile.NamedTemporaryFile(suffix='.txt', delete=False).name
    saved = None
    processes = []
    for process in scenario['processes']:
        NODE['name'] = process['node']
        injector = rsm.RerunErrorInjector(scenario.get('rate', 0), rsm.RerunDiagnostic(scenario.get('type', 'transient_error')))
        # Megatron's --rerun-mode report_stats (its argument's choice) stands for this mode.
        mode = rsm.RerunMode.REPORT_DETERMINISM_STATS if scenario['mode'] == 'report_stats' else rsm.RerunMode(scenario['mode'])
        m = rsm.RerunStateMachine(mode=mode, error_injector=injector,
                                  result_rejected_tracker_filename=tracker)
        # The newest checkpoint a rerun asked for stays the one to resume from.
        if saved is not None and m.validate_state_dict(saved):
            m.load_state_dict(saved)
        out = []
        for it in process['iterations']:
            passes = 0
            while m.should_run_forward_backward(None):
                values = it['passes'][min(passes, len(it['passes']) - 1)]
                for check, value in zip(scenario['checks'], values):
                    m.validate_result(torch.tensor(value, dtype=torch.float64), rejection(m, check, scenario.get('large_samples', 100)),
                                      check['message'], tolerance=check['tolerance'], fatal=check['fatal'])
                passes += 1
            checkpoint, leave, code = m.should_checkpoint_and_exit()
            out.append({'passes': passes, 'state': m.state.name.lower(), 'checkpoint': checkpoint, 'exit': code if leave else None})
            if checkpoint:
                state = m.state_dict(None, 'torch_dist')
                saved = {**state, 'sharded': state['sharded'].data}
            if leave:
                break
        processes.append(out)
    statuses = []
    with open(tracker) as f:
        for line in f:
            fields = dict(part.split('=', 1) for part in line.split(' message=')[0].split(' ') if '=' in part)
            statuses.append({'node': fields['node'], 'iteration': int(fields['iteration']),
                             'status': fields['status'].split('.')[-1].lower(), 'message': line.split(" message='")[1].rstrip("'\n")})
    os.unlink(tracker)
    stats = {}
    if scenario['mode'] == 'report_stats':
        for caller, s in m.stats.items():
            total = s.zero_cnt + len(s.samples)
            stats[caller.message] = {'total': total, 'identical': s.zero_cnt, 'sum': sum(s.samples), 'max': s.max}
    return {'processes': processes, 'tracker': statuses, 'stats': stats}


def encode(x):
    """JSON without NaN or infinities: those as strings."""
    if isinstance(x, float) and (x != x or x in (INF, -INF)):
        return str(x)
    if isinstance(x, dict):
        return {k: encode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [encode(v) for v in x]
    return x


def line(job, rank, iteration, status):
    return (f'ts=2026-12-07 00:00:00.000000 node=n device=0 jobID={job} rank={rank} iteration={iteration} '
            f"status={status} result=nan message='found NaN'")


# A tracker file of several jobs, and the iterations Megatron's reader says to skip.
TRACKER = [
    line('1', 0, 7, 'rerun_disabled'), line('2', 0, 7, 'RerunValidationStatus.RERUN_DISABLED'),
    line('1', 1, 9, 'first_rerun_reproducible'), line('2', 1, 9, 'second_rerun_reproducible'),
    line('1', 0, 11, 'rerun_disabled'), line('1', 1, 11, 'rerun_disabled'), line('2', 0, 11, 'rerun_disabled'),
    line('1', 0, 13, 'initial_run'), line('2', 0, 13, 'initial_run'),
    line('1', 0, 15, 'first_rerun_not_reproducible'), line('2', 0, 15, 'first_rerun_not_reproducible'),
    line('3', 2, 17, 'rerun_disabled'), line('3', 2, 17, 'rerun_disabled'),
    'not a tracker line',
]
with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False) as f:
    f.write('\n'.join(TRACKER) + '\n')
skip = rsm.RerunStateMachine.get_skipped_iterations_from_tracker_file(f.name)
os.unlink(f.name)

fixture = {'scenarios': [{**scenario, 'megatron': run(scenario)} for scenario in SCENARIOS],
           'tracker': {'lines': TRACKER, 'skip': skip}}
path = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'rerun-megatron.json')
with open(path + '.tmp', 'w') as f:
    json.dump(encode(fixture), f, indent=1)
    f.flush()
    os.fsync(f.fileno())
os.replace(path + '.tmp', path)
print(f"wrote {path}: {len(fixture['scenarios'])} scenarios, skip {skip}")
