/**
 * Adam over the DDP buffers, in two forms behind one interface so that the CLI flag only swaps them:
 *
 * - `DistributedOptimizer` (ZeRO-1, Megatron's --use-distributed-optimizer): after the grads are
 *   reduce-scattered, each rank runs Adam on its own shard of every bucket only (moments for 1/d of
 *   the model; with fp32 params the main params are the param buffer itself), then all-gathers the
 *   updated params bucket by bucket.
 * - `NonDistributedOptimizer`: grads all-reduced, Adam on the whole buffer on every rank, full moments.
 *
 * A step: global grad norm (sum of squares in WGSL over the grads this rank owns, one all-reduce of
 * a scalar) → clip (coeff = max_norm / (norm + 1e-6) when below 1, folded into Adam's grad scale) →
 * Adam → (distributed) param all-gather.
 */
import type { Collectives } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { GpuContext } from '../gpu/context.js';
import { DistributedOptimizer } from './distributed-optimizer.js';
import { NonDistributedOptimizer } from './non-distributed-optimizer.js';
import type { Optimizer, OptimizerConfig } from './optimizer-base.js';

export type { Optimizer, OptimizerConfig, OptimizerState, PreparedStep, StepResult } from './optimizer-base.js';
export { DistributedOptimizer, NonDistributedOptimizer };

/** The optimizer the CLI flag chooses. */
export function createOptimizer(ctx: GpuContext, group: Collectives, ddp: DistributedDataParallel, config: OptimizerConfig): Optimizer {
  return ddp.layout.distributedOptimizer
    ? new DistributedOptimizer(ctx, group, ddp, config)
    : new NonDistributedOptimizer(ctx, group, ddp, config);
}
