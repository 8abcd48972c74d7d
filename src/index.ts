/** webtron's public API. */
export { GpuContext, gpuContext, DeviceBuffer, type GpuOptions } from './gpu/context.js';
export { findAdapter, listAdapters, type AdapterOptions } from './gpu/adapter.js';
export { GpuError, GpuDeviceError, NoAdapterError } from './gpu/errors.js';
export { MEMORY_CATEGORIES, formatBytes, type MemoryCategory, type MemoryReport } from './gpu/memory.js';
export { AdamKernel, type AdamOperands } from './optimizer/adam.js';
export { ADAM_DEFAULTS, ADAMW_DEFAULTS, adamReferenceStep, type AdamHyperParams } from './optimizer/adam-math.js';
export { initProcessGroup, resolveInfo, type InitOptions, type Distributed } from './collectives/init.js';
export { ProcessGroup, type CollectiveData } from './collectives/process-group.js';
export { StoreClient, StoreServer } from './collectives/store.js';
export { hostFloat32 } from './collectives/simd.js';
export { CollectiveError, CollectiveOpError, JoinError, StoreError, TransportError } from './collectives/errors.js';
export { launch, type LaunchOptions } from './train/launcher.js';
export { Tensor, type Dtype } from './nn/tensor.js';
export { Graph, GraphError, type BackwardOptions } from './nn/graph.js';
export { LocalParams, paramTensors } from './nn/params.js';
export { Gpt, type GptConfig } from './nn/gpt.js';
export { Mlp } from './nn/mlp.js';
export { gptParams, gptParamCount, type GptShape } from './nn/gpt-spec.js';
export { initParams } from './nn/init.js';
export * as ops from './nn/ops.js';
export { computeLayout, type ModelLayout, type ParamSpec, type ParamDtype, type GradDtype } from './ddp/layout.js';
export { DistributedDataParallel, DdpError, type DdpOptions } from './ddp/ddp.js';
export {
  createOptimizer,
  DistributedOptimizer,
  NonDistributedOptimizer,
  type Optimizer,
  type OptimizerConfig,
} from './optimizer/optimizer.js';
