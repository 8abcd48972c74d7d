/**
 * The optimizer's flags shared by `webtron train` and `webtron memory`: Megatron's `--optimizer`
 * (adam, sgd or lion) with `--sgd-momentum`, `--lion-beta1` and `--lion-beta2`, and its
 * precision-aware optimizer:
 * `--use-precision-aware-optimizer` with `--exp-avg-dtype` and `--exp-avg-sq-dtype` (fp32, fp16 or
 * bf16), `--main-params-dtype` (fp32 or fp16) and `--main-grads-dtype` (fp32 or bf16). As in
 * Megatron-LM, a dtype other than fp32 needs the flag, and the flag needs the distributed optimizer.
 */
import type { StateDtype } from '../optimizer/adam.js';
import { LION_BETAS, momentKinds, OPTIMIZER_NAMES, type OptimizerName, SGD_MOMENTUM } from '../optimizer/momentum-math.js';
import { STATE_DTYPE_NAMES, type StateDtypes } from '../optimizer/optimizer-base.js';
import type { Precision } from '../memory/calculator.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

export const OPTIMIZER_FLAGS: Record<string, FlagSpec> = {
  optimizer: {
    kind: 'string',
    default: 'adam',
    help: 'adam (AdamW: decoupled weight decay), sgd (momentum, L2 weight decay) or lion (one moment, the sign of the update, decoupled weight decay)',
  },
  'sgd-momentum': { kind: 'number', default: SGD_MOMENTUM, help: "SGD's momentum (0: plain SGD, no state)" },
  'lion-beta1': { kind: 'number', default: LION_BETAS[0], help: "Lion's beta1: the blend of momentum and grad whose sign is the update" },
  'lion-beta2': { kind: 'number', default: LION_BETAS[1], help: "Lion's beta2: the momentum's decay" },
};

/** Megatron's --optimizer choices that webtron does not run. */
const NOT_BUILT = ['muon', 'dist_muon', 'soap', 'adaptive_muon'];

/** The optimizer the flags choose, with its settings; one-line errors. */
export function optimizerOf(v: FlagValues): { optimizer: OptimizerName; sgdMomentum: number; lionBetas: [number, number] } {
  const name = String(v.optimizer ?? 'adam');
  if (NOT_BUILT.includes(name))
    throw new FlagError(
      `--optimizer ${name}: webtron runs adam, sgd and lion, whose updates are elementwise on each rank's shard; Megatron's ${name} is not built`,
    );
  if (!(OPTIMIZER_NAMES as readonly string[]).includes(name))
    throw new FlagError(`--optimizer: '${name}' is not an optimizer; use adam, sgd or lion`);
  const number = (flag: string, ok: (x: number) => boolean, range: string) => {
    const x = (v[flag] as number | undefined) ?? (OPTIMIZER_FLAGS[flag]!.default as number);
    if (!ok(x)) throw new FlagError(`--${flag} ${x} is not in ${range}`);
    return x;
  };
  return {
    optimizer: name as OptimizerName,
    sgdMomentum: number('sgd-momentum', (x) => x >= 0 && x < 1, '[0, 1)'),
    lionBetas: [number('lion-beta1', (x) => x >= 0 && x <= 1, '[0, 1]'), number('lion-beta2', (x) => x >= 0 && x <= 1, '[0, 1]')],
  };
}

export const PRECISION_AWARE_FLAGS: Record<string, FlagSpec> = {
  'use-precision-aware-optimizer': {
    kind: 'boolean',
    help: "keep Adam's moments, main params or main grads in 16 bits where the dtype flags say (needs --use-distributed-optimizer)",
  },
  'exp-avg-dtype': {
    kind: 'string',
    default: 'fp32',
    help: "how Adam's first moment is stored: fp32, bf16 or fp16 (rounded to nearest even after each step)",
  },
  'exp-avg-sq-dtype': {
    kind: 'string',
    default: 'fp32',
    help: "how Adam's second moment is stored: fp32, bf16 or fp16 (fp16 flushes values below 6e-8 to zero: prefer bf16)",
  },
  'main-grads-dtype': {
    kind: 'string',
    default: 'fp32',
    help: 'the grads backward accumulates and the grad sync reduces: fp32, or bf16 with --bf16 (half the grad buffer)',
  },
  'main-params-dtype': {
    kind: 'string',
    default: 'fp32',
    help: 'the main params of 16-bit params: fp32, or fp16 with --bf16 or --fp16 (fp16 params are then their own)',
  },
};

/**
 * The optimizer state's dtypes the flags ask for, and the moments of the optimizer they choose;
 * one-line errors as Megatron's checks. `precision`:
 * the run's (main grads in bf16 need bf16 params, main params in fp16 need 16-bit ones), named in
 * errors as `precisionFlag` says.
 */
export function stateDtypesOf(
  v: FlagValues,
  distributedOptimizer: boolean,
  precision: Precision,
  precisionFlag: (p: Precision) => string = (p) => `--${p}`,
): StateDtypes {
  const aware = Boolean(v['use-precision-aware-optimizer']);
  const dtypeOf = <T extends StateDtype>(name: string, allowed: readonly T[]): T => {
    const text = String(v[name] ?? 'fp32');
    const dtype = (STATE_DTYPE_NAMES as Record<string, StateDtype | undefined>)[text];
    if (!dtype || !(allowed as readonly StateDtype[]).includes(dtype)) {
      const names = allowed.map((t) => Object.entries(STATE_DTYPE_NAMES).find(([, x]) => x === t)![0]);
      const choices = `${names.slice(0, -1).join(', ')} or ${names.at(-1)}`;
      throw new FlagError(`--${name}: '${text}' is not a dtype webtron stores there; use ${choices}`);
    }
    if (dtype !== 'float32' && !aware) {
      throw new FlagError(`--${name} ${text} needs --use-precision-aware-optimizer (without it the optimizer keeps fp32 state)`);
    }
    return dtype as T;
  };
  const state: StateDtypes = {
    expAvg: dtypeOf('exp-avg-dtype', ['float32', 'bfloat16', 'float16']),
    expAvgSq: dtypeOf('exp-avg-sq-dtype', ['float32', 'bfloat16', 'float16']),
    mainParams: dtypeOf('main-params-dtype', ['float32', 'float16']),
    mainGrads: dtypeOf('main-grads-dtype', ['float32', 'bfloat16']),
  };
  if (aware && !distributedOptimizer) {
    throw new FlagError('--use-precision-aware-optimizer needs --use-distributed-optimizer (as in Megatron-LM)');
  }
  const { optimizer, sgdMomentum } = optimizerOf(v);
  if (aware && optimizer !== 'adam') {
    throw new FlagError(
      `--use-precision-aware-optimizer keeps Adam's state in 16 bits; --optimizer ${optimizer} keeps fp32 state and main params: leave one of them out`,
    );
  }
  if (optimizer !== 'adam') state.moments = momentKinds(optimizer, sgdMomentum);
  if (state.mainGrads === 'bfloat16' && precision !== 'bf16') {
    throw new FlagError(
      `--main-grads-dtype bf16 needs bf16 params (${precisionFlag('bf16')}): ${precision === 'fp16' ? 'fp16 params keep fp16 grads' : 'fp32 params keep fp32 grads'}`,
    );
  }
  if (state.mainParams === 'float16' && precision === 'fp32') {
    throw new FlagError(
      `--main-params-dtype fp16 needs 16-bit params (${precisionFlag('bf16')} or ${precisionFlag('fp16')}): fp32 params are their own main params`,
    );
  }
  return state;
}
