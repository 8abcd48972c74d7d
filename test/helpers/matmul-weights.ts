/** A matmul test's B and bias as params of a dtype, and their values as the kernels read them. */
import { bf16ToFloat, floatToBf16, floatToHalf, halfToFloat } from '../../src/collectives/reduce.js';
import type { ParamDtype } from '../../src/ddp/layout.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { LocalParams } from '../../src/nn/params.js';

/** `v` as params of `dtype` hold it: rounded to nearest even in the 16-bit dtypes. */
export function asParam(v: Float32Array, dtype: ParamDtype): Float32Array {
  if (dtype === 'bfloat16') return v.map((x) => bf16ToFloat(floatToBf16(x)));
  if (dtype === 'float16') return v.map((x) => halfToFloat(floatToHalf(x)));
  return v;
}

/** Params 'b' (first in its buffer) and 'bias' of `dtype`, set to `b` and `bias`. */
export function weightAndBias(ctx: GpuContext, b: Float32Array, bias: Float32Array, dtype: ParamDtype): LocalParams {
  const params = new LocalParams(ctx, [
    { name: 'b', shape: [b.length], dtype, gradDtype: 'float32' },
    { name: 'bias', shape: [bias.length], dtype, gradDtype: 'float32' },
  ]);
  params.set(
    new Map([
      ['b', b],
      ['bias', bias],
    ]),
  );
  return params;
}
