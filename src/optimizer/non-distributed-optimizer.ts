/** The non-distributed twin: grads all-reduced, the update on the whole buffer on every rank, full moments. */
import { ConfigError } from '../errors.js';
import type { Collectives } from '../collectives/process-group.js';
import type { DistributedDataParallel } from '../ddp/ddp.js';
import type { DeviceBuffer, GpuContext } from '../gpu/context.js';
import type { Float32Operand } from './adam.js';
import type { CastRange } from './cast.js';
import type { MomentKind } from './momentum-math.js';
import {
  emptyOptimizerState,
  type OptimizerConfig,
  OptimizerOverBuffers,
  type OptimizerState,
  STATE_FIELD,
  type StatePiece,
} from './optimizer-base.js';
import { SumOfSquares } from './sumsq.js';
import type { UnscaleRange } from './unscale.js';

export class NonDistributedOptimizer extends OptimizerOverBuffers {
  readonly distributed = false;
  /** Per DDP buffer: each moment's buffer, and the main params of 16-bit params. */
  private readonly state: { moments: [MomentKind, DeviceBuffer][]; main?: DeviceBuffer }[] = [];

  constructor(ctx: GpuContext, group: Collectives, ddp: DistributedDataParallel, config: OptimizerConfig) {
    super(ctx, group, ddp, config);
    const { moments: _, ...dtypes } = config.stateDtypes ?? {};
    const narrow = Object.entries(dtypes).find(([, dtype]) => dtype !== undefined && dtype !== 'float32');
    if (narrow) {
      throw new ConfigError(
        `${narrow[0]} stored as ${narrow[1]} needs the distributed optimizer (Megatron's precision-aware optimizer); this one keeps fp32 state`,
        'stateDtypes',
      );
    }
    const casts: Record<'bfloat16' | 'float16', CastRange[]> = { bfloat16: [], float16: [] };
    const unscaleRanges: UnscaleRange[] = [];
    const normRanges: { operand: Float32Operand; length: number }[] = [];
    for (const buffer of ddp.buffers) {
      const { numel: n, paramDtype, gradDtype } = buffer.layout;
      const state: { moments: [MomentKind, DeviceBuffer][]; main?: DeviceBuffer } = {
        moments: this.moments.map((kind) => [kind, this.fp32Buffer(`${kind} #${buffer.index}`, n)]),
      };
      this.state.push(state);
      let param = { buffer: buffer.params, offset: 0 };
      if (paramDtype !== 'float32') {
        const main = this.fp32Buffer(`main params #${buffer.index}`, n, 'main-params');
        state.main = main;
        param = { buffer: main, offset: 0 };
        casts[paramDtype].push({ wide: param, narrow: { buffer: buffer.params, offset: 0 }, length: n });
      }
      let grad = { buffer: buffer.grads, offset: 0 };
      if (gradDtype === 'float16') {
        grad = { buffer: this.fp32Buffer(`main grads #${buffer.index}`, n, 'grads'), offset: 0 };
        unscaleRanges.push({ narrow: { buffer: buffer.grads, offset: 0 }, wide: grad, length: n });
      }
      normRanges.push({ operand: grad, length: n });
      this.normPadding += n - buffer.layout.params.reduce((sum, p) => sum + p.numel, 0);
      const params = [...buffer.layout.params].sort((a, b) => a.start - b.start);
      this.addKernels({ param, grad, moments: Object.fromEntries(state.moments.map(([kind, b]) => [kind, { buffer: b }])) }, n, params);
    }
    this.setUpHalves(casts, unscaleRanges);
    this.norm = new SumOfSquares(ctx, normRanges, config.countZeros);
  }

  /** The grads were all-reduced: every rank holds the same ones and finds the same. */
  protected async anyRank(foundInf: boolean): Promise<boolean> {
    return foundInf;
  }

  /** Every param's state (every rank holds all of it), as pieces of the moment and main-param buffers. */
  statePieces(): StatePiece[] {
    this.refreshMainParams();
    const pieces: StatePiece[] = [];
    for (const [i, buffer] of this.ddp.buffers.entries()) {
      const { moments, main } = this.state[i]!;
      for (const p of buffer.layout.params) {
        const place = { name: p.name, range: { start: 0, end: p.numel }, offset: p.start, dtype: 'float32' as const };
        for (const [kind, b] of moments) pieces.push({ kind, buffer: b, ...place });
        if (main) pieces.push({ kind: 'main_params', buffer: main, ...place });
      }
    }
    return pieces;
  }

  async exportState(): Promise<OptimizerState> {
    this.refreshMainParams();
    const state: OptimizerState = emptyOptimizerState();
    for (const [i, buffer] of this.ddp.buffers.entries()) {
      const { moments, main } = this.state[i]!;
      // fp32 params are their own main params.
      const sources: ['expAvg' | 'expAvgSq' | 'momentumBuffer' | 'main', DeviceBuffer][] = moments.map(([kind, b]) => [
        STATE_FIELD[kind],
        b,
      ]);
      if (main) sources.push(['main', main]);
      for (const [which, source] of sources) {
        const all = await this.ctx.transfers.readFloat32(source, 0, buffer.layout.numel);
        state[which] ??= new Map();
        const into = state[which];
        for (const p of buffer.layout.params) into.set(p.name, all.slice(p.start, p.end));
      }
    }
    return state;
  }

  /** The grads were all-reduced: every rank already holds all of them. */
  protected async globalSums(local: number[]): Promise<number[]> {
    return local;
  }

  protected async afterUpdate(): Promise<void> {}
}
