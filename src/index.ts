/// <reference types="@webgpu/types" />
/**
 * webtron's public API: what a program needs to train its own model with data parallelism and the
 * distributed optimizer. docs/api/ lists every name; the lower layers have their own
 * entry points (`webtron/gpu`, `webtron/collectives`, `webtron/checkpoint`, `webtron/data`).
 *
 * @module webtron
 */

// Errors
export { WebtronError, ConfigError } from './errors.js';
export { GpuError, GpuDeviceError, NoAdapterError } from './gpu/errors.js';
export { CollectiveError, CollectiveOpError, JoinError, StoreError, TransportError } from './collectives/errors.js';
export { LayoutError } from './ddp/layout.js';
export { DdpError } from './ddp/ddp.js';
export { GraphError } from './nn/graph.js';
export { ShapeMismatch } from './nn/tensor.js';
export { ShapeError } from './nn/gpt-spec.js';
export { CheckpointError } from './checkpoint/errors.js';
export { TrainingError } from './train/trainer.js';
export { DataError } from './data/indexed.js';

// GPU
export { GpuContext, DeviceBuffer, type GpuOptions } from './gpu/context.js';
export { listAdapters, type AdapterOptions } from './gpu/adapter.js';
export { formatBytes, type MemoryCategory, type MemoryReport } from './gpu/memory.js';

// Processes and collectives
export { initProcessGroup, type InitOptions, type Distributed } from './collectives/init.js';
export type { Collectives } from './collectives/process-group.js';
export { launch, type LaunchOptions } from './train/launcher.js';

// Models and autograd
export { Tensor, type Dtype } from './nn/tensor.js';
export { Graph, type BackwardOptions } from './nn/graph.js';
export { documentInputs, documentPositions, documentStarts, type Documents } from './nn/documents.js';
export * as ops from './nn/ops.js';
export { LocalParams, paramTensors } from './nn/params.js';
export { initParams } from './nn/init.js';
export { Mlp } from './nn/mlp.js';
export { Gpt, type GptConfig } from './nn/gpt.js';
export { gptParamCount, type GptShape } from './nn/gpt-spec.js';

// Data parallelism and optimizers
export { computeLayout, type ModelLayout, type ParamSpec, type ParamDtype, type GradDtype } from './ddp/layout.js';
export { DistributedDataParallel, type DdpOptions } from './ddp/ddp.js';
export {
  createOptimizer,
  DistributedOptimizer,
  NonDistributedOptimizer,
  type Optimizer,
  type OptimizerConfig,
  type PreparedStep,
  type StepResult,
} from './optimizer/optimizer.js';
export { ADAM_DEFAULTS, ADAMW_DEFAULTS, type AdamHyperParams } from './optimizer/adam-math.js';
export { momentKinds, type MomentKind, type OptimizerName } from './optimizer/momentum-math.js';

// Training
export { runTraining, type TrainOptions, type TrainSummary } from './train/trainer.js';
export { saveCheckpoint, loadCheckpoint } from './checkpoint/checkpoint.js';
