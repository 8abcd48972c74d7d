/**
 * The contiguous param and grad buffers of one (param dtype, grad dtype) pair, on the GPU, laid out
 * by `computeLayout`. Every model param is a view (buffer + element offset) into them; grads are
 * written or accumulated straight into the grad buffer, never into per-param copies.
 */
import { DdpError } from './ddp.js';
import { storageUsage, type DeviceBuffer, type GpuContext } from '../gpu/context.js';
import { BYTES, type BufferLayout, type IndexRange, type ParamPlacement } from './layout.js';

/** A param's (or its grad's) place: a buffer and an element range in it. */
export interface BufferView {
  buffer: DeviceBuffer;
  /** First element. */
  offset: number;
  numel: number;
  shape: readonly number[];
}

export class ParamAndGradBuffer {
  readonly params: DeviceBuffer;
  readonly grads: DeviceBuffer;
  private readonly placements: Map<string, ParamPlacement>;

  constructor(
    readonly ctx: GpuContext,
    readonly layout: BufferLayout,
    readonly index: number,
  ) {
    const label = `${layout.paramDtype}/${layout.gradDtype}#${index}`;
    this.params = ctx.createBuffer({
      label: `params ${label}`,
      size: layout.numel * BYTES[layout.paramDtype],
      usage: storageUsage(),
      category: 'params',
    });
    this.grads = ctx.createBuffer({
      label: `grads ${label}`,
      size: layout.numel * BYTES[layout.gradDtype],
      usage: storageUsage(),
      category: 'grads',
    });
    this.placements = new Map(layout.params.map((p) => [p.name, p]));
  }

  private placement(name: string): ParamPlacement {
    const p = this.placements.get(name);
    if (!p) throw new DdpError(`param '${name}' is not in buffer ${this.index} (${this.layout.paramDtype}/${this.layout.gradDtype})`);
    return p;
  }

  paramView(name: string): BufferView {
    const p = this.placement(name);
    return { buffer: this.params, offset: p.start, numel: p.numel, shape: p.shape };
  }

  gradView(name: string): BufferView {
    const p = this.placement(name);
    return { buffer: this.grads, offset: p.start, numel: p.numel, shape: p.shape };
  }

  /** Bytes of an element range of the grad buffer. */
  gradBytes(range: IndexRange): { offset: number; size: number } {
    const b = BYTES[this.layout.gradDtype];
    return { offset: range.start * b, size: (range.end - range.start) * b };
  }

  paramBytes(range: IndexRange): { offset: number; size: number } {
    const b = BYTES[this.layout.paramDtype];
    return { offset: range.start * b, size: (range.end - range.start) * b };
  }

  /** Queue a zeroing of the whole grad buffer (padding included). */
  zeroGrads(encoder: GPUCommandEncoder): void {
    encoder.clearBuffer(this.grads.gpu);
  }

  destroy(): void {
    this.params.destroy();
    this.grads.destroy();
  }
}
