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
