/**
 * `webtron/collectives`: the TCP collectives and rendezvous store, usable without a GPU.
 *
 * @module webtron/collectives
 */
export { initProcessGroup, resolveInfo, type InitOptions, type Distributed, type DistributedInfo } from './init.js';
export { ProcessGroup, type Collectives, type CollectiveData, type ProcessGroupOptions } from './process-group.js';
export { StoreClient, StoreServer, type StoreClientOptions, type StoreServerOptions } from './store.js';
export { hostFloat32 } from './simd.js';
export { CollectiveError, CollectiveOpError, JoinError, StoreError, TransportError } from './errors.js';
