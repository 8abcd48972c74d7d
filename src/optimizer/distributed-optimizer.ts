/**
 * ZeRO-1 (Megatron's --use-distributed-optimizer): after the grads are reduce-scattered, each rank
 * runs Adam on its own shard of every bucket only, then all-gathers the updated params bucket by
 * bucket (in the background with `overlapParamGather`).
 */
import type { ProcessGroup } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import type { Float32Operand } from './adam.js';
import { AdamKernel } from './adam.js';
import type { CastRange } from './cast.js';
import { AdamOverBuffers, stateTensor, type OptimizerConfig, type OptimizerState } from './optimizer-base.js';
import { shardRanges, type ShardRange } from './ranges.js';
import { SumOfSquares } from './sumsq.js';
import type { UnscaleRange } from './unscale.js';

export class DistributedOptimizer extends AdamOverBuffers {
  readonly distributed = true;
  private readonly ranges: ShardRange[];
  private readonly expAvg: DeviceBuffer;
  private readonly expAvgSq: DeviceBuffer;
  private readonly main: DeviceBuffer | null;

  constructor(ctx: GpuContext, group: ProcessGroup, ddp: DistributedDataParallel, config: OptimizerConfig) {
    super(ctx, group, ddp, config);
    if (!ddp.layout.distributedOptimizer) throw new Error('DistributedOptimizer needs a layout made for the distributed optimizer');
    this.ranges = shardRanges(ddp.layout, group.rank);
    const shardElements = this.ranges.reduce((n, r) => n + (r.gbufLocal.end - r.gbufLocal.start), 0);
    const expAvg = this.fp32Buffer('exp_avg (shard)', shardElements);
    const expAvgSq = this.fp32Buffer('exp_avg_sq (shard)', shardElements);
    this.expAvg = expAvg;
    this.expAvgSq = expAvgSq;
    const layoutOf = (r: ShardRange) => ddp.buffers[r.buffer]!.layout;
    // fp32 params: the main params are the param buffer's shard itself; 16-bit: an fp32 copy.
    const main = this.ranges.some((r) => layoutOf(r).paramDtype !== 'float32') ? this.fp32Buffer('main params (shard)', shardElements, 'main-params') : null;
    // fp16 grads: Adam reads fp32 main grads, unscaled from the shard (counted as grads).
    const mainGrads = this.ranges.some((r) => layoutOf(r).gradDtype === 'float16') ? this.fp32Buffer('main grads (shard)', shardElements, 'grads') : null;
    this.main = main;
    const casts: Record<'bfloat16' | 'float16', CastRange[]> = { bfloat16: [], float16: [] };
    const unscaleRanges: UnscaleRange[] = [];
    const normRanges: { operand: Float32Operand; length: number }[] = [];
    let at = 0;
    for (const r of this.ranges) {
      const buffer = ddp.buffers[r.buffer]!;
      const { paramDtype, gradDtype } = buffer.layout;
      const length = r.gbufLocal.end - r.gbufLocal.start;
      const shardOf = (b: DeviceBuffer) => ({ buffer: b, offset: r.gbufWorld.start });
      const param = paramDtype === 'float32' ? shardOf(buffer.params) : { buffer: main!, offset: at };
      if (paramDtype !== 'float32') casts[paramDtype].push({ wide: param, narrow: shardOf(buffer.params), length });
      const grad = gradDtype === 'float16' ? { buffer: mainGrads!, offset: at } : shardOf(buffer.grads);
      if (gradDtype === 'float16') unscaleRanges.push({ narrow: shardOf(buffer.grads), wide: grad, length });
      normRanges.push({ operand: grad, length });
      this.kernels.push(new AdamKernel(ctx, { param, grad, expAvg: { buffer: expAvg, offset: at }, expAvgSq: { buffer: expAvgSq, offset: at }, length }));
      at += length;
    }
    this.setUpHalves(casts, unscaleRanges);
    this.norm = new SumOfSquares(ctx, normRanges);
  }

  protected async anyRank(foundInf: boolean): Promise<boolean> {
    const flag = new Float32Array([foundInf ? 1 : 0]);
    await this.group.allReduce(flag, 'max');
    return flag[0]! > 0;
  }

  /** Gathers every bucket's moments through its host staging: every rank must call it. */
  async exportState(): Promise<OptimizerState> {
    await this.ddp.finishParamSync(); // the gathers use the same host staging
    const state: OptimizerState = { expAvg: new Map(), expAvgSq: new Map(), ...(this.main ? { main: new Map() } : {}) };
    for (const [which, moments] of this.stateBuffers()) {
      let at = 0;
      for (const r of this.ranges) {
        const bucket = this.ddp.buffers[r.buffer]!.layout.buckets[r.bucket]!;
        const host = this.ddp.hostBucket(r.buffer, r.bucket);
        const s = r.gbufLocal.end;
        const mine = host.subarray(this.group.rank * s, (this.group.rank + 1) * s);
        await this.ctx.transfers.readback(moments, at * 4, s * 4, new Uint8Array(mine.buffer, mine.byteOffset, s * 4));
        await this.group.allGather(host);
        for (const p of this.ddp.buffers[r.buffer]!.layout.params) {
          if (p.bucket === r.bucket) state[which]!.set(p.name, host.slice(p.start - bucket.start, p.end - bucket.start));
        }
        at += s;
      }
    }
    return state;
  }

  /** Each rank takes its own slices of every param's moments: works whatever d the state was saved at. */
  private stateBuffers(): ['expAvg' | 'expAvgSq' | 'main', DeviceBuffer][] {
    const buffers: ['expAvg' | 'expAvgSq' | 'main', DeviceBuffer][] = [['expAvg', this.expAvg], ['expAvgSq', this.expAvgSq]];
    if (this.main) buffers.push(['main', this.main]);
    return buffers;
  }

  importState(state: OptimizerState, step: number): void {
    for (const [which, moments] of this.stateBuffers()) {
      // A checkpoint without main params (saved from fp32 params): start them from the model params.
      if (which === 'main' && !state.main) {
        for (const cast of this.casts) cast.toMain();
        continue;
      }
      let at = 0;
      for (const r of this.ranges) {
        const shard = new Float32Array(r.gbufLocal.end);
        for (const p of r.params) {
          const numel = this.ddp.buffers[r.buffer]!.layout.params.find((x) => x.name === p.name)!.numel;
          shard.set(stateTensor(state[which]!, p.name, numel, which).subarray(p.param.start, p.param.end), p.paramLocal.start);
        }
        this.ctx.transfers.upload(moments, shard, at * 4);
        at += shard.length;
      }
    }
    this.setStep(step);
  }

  protected async globalSumOfSquares(local: number): Promise<number> {
    const total = new Float32Array([local]);
    await this.group.allReduce(total, 'sum');
    return total[0]!;
  }

  protected async afterUpdate(): Promise<void> {
    if (!this.config.overlapParamGather) {
      for (const r of this.ranges) await this.gatherBucket(r);
      return;
    }
    // The next forward reads the last bucket first (bucket 0 holds the model's end): gather in that order.
    let chain: Promise<void> = Promise.resolve();
    for (const r of [...this.ranges].reverse()) {
      chain = chain.then(() => this.gatherBucket(r));
      this.ddp.setParamGather(r.buffer, r.bucket, chain);
    }
  }

  private async gatherBucket(r: ShardRange): Promise<void> {
    const buffer = this.ddp.buffers[r.buffer]!;
    const bucket = buffer.layout.buckets[r.bucket]!;
    const params = this.ddp.hostParams(r.buffer, r.bucket).subarray(0, bucket.end - bucket.start);
    const bytes = params.BYTES_PER_ELEMENT;
    const s = r.gbufLocal.end;
    const mine = params.subarray(this.group.rank * s, (this.group.rank + 1) * s);
    const phases = this.ddp.phases;
    await phases.time('param readback', () => this.ctx.transfers.readback(buffer.params, r.gbufWorld.start * bytes, s * bytes, new Uint8Array(mine.buffer, mine.byteOffset, s * bytes)));
    await phases.time('all-gather', () => this.group.allGather(params));
    await phases.time('param upload', async () => {
      this.ctx.transfers.upload(buffer.params, params, bucket.start * bytes);
      await this.ctx.sync();
    });
  }
}

