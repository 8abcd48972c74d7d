/**
 * A small MLP classifier for quick tests: linear layers with GELU between them and a mean
 * cross-entropy over the classes. Params `layers.<i>.weight` [in, out] and `layers.<i>.bias`.
 */
import { ConfigError } from '../errors.js';
import type { GradDtype, ParamDtype, ParamSpec } from '../ddp/layout.js';
import type { Graph } from './graph.js';
import { initParams } from './init.js';
import { crossEntropy, gelu, linear } from './ops.js';
import type { Tensor } from './tensor.js';

export class Mlp {
  constructor(
    readonly sizes: readonly number[],
    private readonly params: Map<string, Tensor>,
  ) {}

  static specs(sizes: readonly number[], dtype: ParamDtype = 'float32', gradDtype: GradDtype = 'float32'): ParamSpec[] {
    if (sizes.length < 2 || sizes.some((s) => !Number.isInteger(s) || s < 1))
      throw new ConfigError(`sizes must be two or more positive integers, got [${sizes.join(', ')}]`, 'sizes');
    return sizes.slice(1).flatMap((out, i) => [
      { name: `layers.${i}.weight`, shape: [sizes[i]!, out], dtype, gradDtype },
      { name: `layers.${i}.bias`, shape: [out], dtype, gradDtype },
    ]);
  }

  static init(sizes: readonly number[], seed: number, std = 0.02): Map<string, Float32Array> {
    return initParams(Mlp.specs(sizes), { seed, std });
  }

  /** Logits [N, classes] for x [N, in]; the mean cross-entropy when uint32 targets [N] are given. */
  forward(g: Graph, x: Tensor, targets?: Tensor): { logits: Tensor; loss?: Tensor } {
    let h = x;
    const layers = this.sizes.length - 1;
    for (let i = 0; i < layers; i++) {
      h = linear(g, h, this.params.get(`layers.${i}.weight`)!, this.params.get(`layers.${i}.bias`)!);
      if (i < layers - 1) h = gelu(g, h);
    }
    return targets ? { logits: h, loss: crossEntropy(g, h, targets) } : { logits: h };
  }
}
