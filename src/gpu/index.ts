/// <reference types="@webgpu/types" />
/**
 * `webtron/gpu`: the GPU runtime under the models, for programs that write their own kernels.
 *
 * @module webtron/gpu
 */
export { GpuContext, DeviceBuffer, gpuContext, OPTIONAL_FEATURES, type GpuOptions, type BufferRequest } from './context.js';
export { findAdapter, listAdapters, type AdapterOptions, type FoundAdapter } from './adapter.js';
export { GpuError, GpuDeviceError, NoAdapterError } from './errors.js';
export { Kernels, type Binding, type ShaderConstants } from './kernels.js';
export { reflectShader, packUniforms, type ShaderLayout, type EntryLayout, type UniformLayout, type UniformValues } from './bindings.js';
export { Transfers } from './transfers.js';
export { MEMORY_CATEGORIES, formatBytes, type MemoryCategory, type MemoryReport } from './memory.js';
export { AdamKernel, type AdamOperands } from '../optimizer/adam.js';
export { adamReferenceStep } from '../optimizer/adam-math.js';
export { MomentumKernel, type MomentumOperands } from '../optimizer/momentum.js';
export { momentumReferenceStep, type LionHyperParams, type SgdHyperParams } from '../optimizer/momentum-math.js';
