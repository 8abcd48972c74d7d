/**
 * Megatron's activation recomputation flags, shared by `webtron train` and `webtron memory`:
 * --recompute-granularity full with --recompute-method uniform (every span of --recompute-num-layers
 * blocks) or block (the first --recompute-num-layers blocks, one by one) keeps only each recomputed
 * span's output stream and runs the span again in the backward; selective (--recompute-activations)
 * recomputes the attention's probabilities, which the fused attention kernel does by design: it
 * stores none, and recomputes them block by block in its backward.
 */
import type { Recompute } from '../nn/gpt-spec.js';
import { FlagError, type FlagSpec, type FlagValues } from './flags.js';

export const RECOMPUTE_FLAG_SPECS: Record<string, FlagSpec> = {
  'recompute-activations': { kind: 'boolean', help: 'selective recomputation: --recompute-granularity selective' },
  'recompute-granularity': {
    kind: 'string',
    help: "full (recompute whole blocks in the backward, with --recompute-method) or selective (the attention's probabilities: the fused kernel)",
  },
  'recompute-method': {
    kind: 'string',
    help: 'with --recompute-granularity full: uniform (every span of --recompute-num-layers blocks) or block (the first --recompute-num-layers blocks)',
  },
  'recompute-num-layers': { kind: 'int', default: 1, help: 'blocks per recomputed span (uniform) or blocks recomputed (block)' },
};

export interface RecomputeFlags {
  granularity: 'full' | 'selective' | null;
  /** The spans full recomputation runs again; null otherwise. */
  recompute: Recompute | null;
}

/** The recomputation the flags ask for in a model of `numLayers` blocks; with `attention` unfused, selective is refused. */
export function recomputeFlags(v: FlagValues, numLayers: number, attention: 'fused' | 'unfused' | 'auto'): RecomputeFlags {
  const given = v['recompute-granularity'] as string | undefined;
  if (given !== undefined && given !== 'full' && given !== 'selective')
    throw new FlagError(`--recompute-granularity must be full or selective, got '${given}'`);
  if (v['recompute-activations'] && given === 'full')
    throw new FlagError(
      '--recompute-activations is --recompute-granularity selective; it contradicts --recompute-granularity full: give one',
    );
  const granularity = (given ?? (v['recompute-activations'] ? 'selective' : null)) as RecomputeFlags['granularity'];
  const method = v['recompute-method'] as string | undefined;
  if (method !== undefined && method !== 'uniform' && method !== 'block')
    throw new FlagError(`--recompute-method must be uniform or block, got '${method}'`);
  if (granularity === 'selective') {
    if (method !== undefined)
      throw new FlagError('--recompute-method is for --recompute-granularity full; selective recomputation takes none');
    if (attention === 'unfused')
      throw new FlagError(
        "selective recomputation recomputes the attention's probabilities, which the unfused attention stores; use --attention-backend flash (or auto, which selective makes flash)",
      );
    return { granularity, recompute: null };
  }
  if (granularity === null) {
    if (method !== undefined) throw new FlagError('--recompute-method needs --recompute-granularity full');
    return { granularity, recompute: null };
  }
  if (method === undefined) throw new FlagError('--recompute-granularity full needs --recompute-method uniform or block');
  const layers = v['recompute-num-layers'];
  if (!Number.isInteger(layers) || (layers as number) < 1 || (layers as number) > numLayers)
    throw new FlagError(`--recompute-num-layers must be an integer from 1 to --num-layers ${numLayers}, got ${String(layers)}`);
  return { granularity, recompute: { method, numLayers: layers as number } };
}
