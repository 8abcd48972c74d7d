/**
 * Parameter tensors over the contiguous param and grad buffers: from a DistributedDataParallel's
 * buffers in training, or from `LocalParams` (one process, no process group) in tests, benchmarks
 * and inference. Either way a param is a view and its grad is a view: nothing is copied.
 */
import { ConfigError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { ParamAndGradBuffer } from '../ddp/buffers.js';
import { computeLayout, type ModelLayout, type ParamSpec } from '../ddp/layout.js';
import { float32ToWords, wordsToFloat32 } from '../collectives/reduce.js';
import { Tensor } from './tensor.js';

/** Name → param tensor for every param of `buffers`. */
export function paramTensors(buffers: readonly ParamAndGradBuffer[]): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const b of buffers) {
    for (const p of b.layout.params) {
      out.set(p.name, Tensor.param(p.name, b.paramView(p.name), b.layout.paramDtype, b.gradView(p.name), b.layout.gradDtype));
    }
  }
  return out;
}

/** A model's params and grads in one process: the layout of d = 1 without the distributed optimizer. */
export class LocalParams {
  readonly layout: ModelLayout;
  readonly buffers: ParamAndGradBuffer[];
  readonly tensors: Map<string, Tensor>;

  constructor(
    private readonly ctx: GpuContext,
    specs: ParamSpec[],
  ) {
    this.layout = computeLayout(specs, { dataParallelSize: 1, distributedOptimizer: false });
    this.buffers = this.layout.buffers.map((b, i) => new ParamAndGradBuffer(ctx, b, i));
    this.tensors = paramTensors(this.buffers);
  }

  get(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new ConfigError(`no param named '${name}'; the model has ${[...this.tensors.keys()].join(', ')}`);
    return t;
  }

  /** Set params from fp32 values (16-bit params round to nearest even). */
  set(values: Map<string, Float32Array>): void {
    for (const [name, v] of values) {
      const t = this.get(name);
      if (v.length !== t.numel) throw new ConfigError(`param '${name}' needs ${t.numel} values, got ${v.length}`);
      if (t.dtype === 'float32') {
        this.ctx.transfers.upload(t.buffer, v, t.offset * 4);
      } else {
        // Params start at even elements, so whole words can be written (an odd tail pads one zero).
        const words = new Uint16Array(v.length + (v.length % 2));
        float32ToWords(v, t.dtype as 'float16' | 'bfloat16', words.subarray(0, v.length));
        this.ctx.transfers.upload(t.buffer, words, t.offset * 2);
      }
    }
  }

  /** fp32 values of a param (`grad` false) or its grad. */
  async read(name: string, grad = false): Promise<Float32Array> {
    const p = this.get(name);
    const t = grad ? p.param!.grad : p;
    if (t.dtype === 'float32') return this.ctx.transfers.readFloat32(t.buffer, t.offset, t.numel);
    const bytes = await this.ctx.transfers.readback(t.buffer, t.offset * 2, Math.ceil(t.numel / 2) * 4);
    return wordsToFloat32(new Uint16Array(bytes.buffer, bytes.byteOffset, t.numel), t.dtype as 'float16' | 'bfloat16');
  }

  zeroGrads(): void {
    const encoder = this.ctx.device.createCommandEncoder({ label: 'zero grads' });
    for (const b of this.buffers) b.zeroGrads(encoder);
    this.ctx.submit([encoder.finish()]);
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
