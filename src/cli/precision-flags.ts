/**
 * Megatron's precision-aware optimizer flags, shared by `webtron train` and `webtron memory`:
 * `--use-precision-aware-optimizer` with `--exp-avg-dtype` and `--exp-avg-sq-dtype` (fp32, fp16 or
 * bf16), and `--main-grads-dtype` / `--main-params-dtype`, whose only value here is fp32. As in
 * Megatron-LM, a dtype other than fp32 needs the flag, and the flag needs the distributed optimizer.
 */
import type { StateDtype } from '../optimizer/adam.js';
import { STATE_DTYPE_NAMES, type StateDtypes } from '../optimizer/optimizer-base.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

export const PRECISION_AWARE_FLAGS: Record<string, FlagSpec> = {
  'use-precision-aware-optimizer': {
    kind: 'boolean',
    help: "keep Adam's moments in 16 bits where --exp-avg-dtype / --exp-avg-sq-dtype say (needs --use-distributed-optimizer)",
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
  'main-grads-dtype': { kind: 'string', default: 'fp32', help: 'the grads the optimizer reads: fp32' },
  'main-params-dtype': { kind: 'string', default: 'fp32', help: 'the main params of 16-bit params: fp32' },
};

/** The optimizer state's dtypes the flags ask for; one-line errors as Megatron's checks. */
export function stateDtypesOf(v: FlagValues, distributedOptimizer: boolean): StateDtypes {
  const aware = Boolean(v['use-precision-aware-optimizer']);
  const dtypeOf = (name: string): StateDtype => {
    const text = String(v[name] ?? 'fp32');
    const dtype = (STATE_DTYPE_NAMES as Record<string, StateDtype | undefined>)[text];
    if (!dtype) throw new FlagError(`--${name}: '${text}' is not a dtype webtron stores; use fp32, bf16 or fp16`);
    if (dtype !== 'float32' && !aware) {
      throw new FlagError(`--${name} ${text} needs --use-precision-aware-optimizer (without it the optimizer keeps fp32 state)`);
    }
    return dtype;
  };
  for (const name of ['main-grads-dtype', 'main-params-dtype']) {
    const text = String(v[name] ?? 'fp32');
    if (text !== 'fp32') {
      throw new FlagError(
        `--${name}: '${text}' is not available; webtron's optimizer reads fp32 main grads and keeps fp32 main params (use fp32, and --exp-avg-dtype / --exp-avg-sq-dtype bf16 to save optimizer memory)`,
      );
    }
  }
  const state = { expAvg: dtypeOf('exp-avg-dtype'), expAvgSq: dtypeOf('exp-avg-sq-dtype') };
  if (aware && !distributedOptimizer) {
    throw new FlagError('--use-precision-aware-optimizer needs --use-distributed-optimizer (as in Megatron-LM)');
  }
  return state;
}
