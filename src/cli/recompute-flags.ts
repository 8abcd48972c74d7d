/**
 * Megatron's activation recomputation flags, shared by `webtron train` and `webtron memory`:
 * --recompute-granularity full with --recompute-method uniform (every span of --recompute-num-layers
 * blocks) or block (the first --recompute-num-layers blocks, one by one) keeps only each recomputed
 * span's output stream and runs the span again in the backward; selective (--recompute-activations)
 * recomputes what --recompute-modules names (Megatron's default: core_attn): core_attn is the
 * attention's probabilities, which the fused attention kernel recomputes by design (it stores none,
 * and recomputes them block by block in its backward); mlp keeps each block's MLP output alone and
 * runs its fc and activation again in the backward.
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
  'recompute-modules': {
    kind: 'strings',
    help: "with --recompute-granularity selective: core_attn (the attention's probabilities, the default) and/or mlp (each block's MLP)",
  },
};

/** Megatron's --recompute-modules that webtron builds. */
const MODULES = ['core_attn', 'mlp'];

/** Megatron's other modules, and why each is not here. */
const NOT_HERE: Record<string, string> = {
  layernorm:
    'webtron fuses each norm with the residual add before it and keeps its output for the matmul after it, so there is nothing to recompute',
  moe: 'webtron builds dense GPTs, without mixture-of-experts layers',
  moe_act: 'webtron builds dense GPTs, without mixture-of-experts layers',
  shared_experts: 'webtron builds dense GPTs, without mixture-of-experts layers',
  mla_up_proj: 'webtron has no multi-latent attention',
  gdn_norm_out: 'webtron has no gated delta net layers',
  gdp_in_proj: 'webtron has no gated delta product layers',
  gdp_qkv: 'webtron has no gated delta product layers',
  mhc: 'webtron has no hyper-connections',
};

export interface RecomputeFlags {
  granularity: 'full' | 'selective' | null;
  /** What runs again in the backward: full recomputation's spans, or (selective, mlp) each block's MLP; null otherwise. */
  recompute: Recompute | null;
  /** Selective recomputation of the attention's probabilities (core_attn): the fused kernel's, which it makes the auto backend. */
  coreAttention: boolean;
}

/** The recomputation the flags ask for in a model of `numLayers` blocks; with `attention` unfused, selective of core_attn is refused. */
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
  const modules = v['recompute-modules'] as string[] | undefined;
  if (granularity === 'selective') {
    if (method !== undefined)
      throw new FlagError('--recompute-method is for --recompute-granularity full; selective recomputation takes none');
    const named = modulesOf(modules ?? ['core_attn']);
    const coreAttention = named.includes('core_attn');
    if (coreAttention && attention === 'unfused')
      throw new FlagError(
        "selective recomputation of core_attn recomputes the attention's probabilities, which the unfused attention stores; use --attention-backend flash (or auto, which it makes flash), or leave core_attn out of --recompute-modules",
      );
    return { granularity, recompute: named.includes('mlp') ? { method: 'mlp' } : null, coreAttention };
  }
  if (modules !== undefined)
    throw new FlagError(
      granularity === 'full'
        ? '--recompute-modules is for --recompute-granularity selective; full recomputation runs whole blocks again'
        : '--recompute-modules needs --recompute-granularity selective (or --recompute-activations)',
    );
  if (granularity === null) {
    if (method !== undefined) throw new FlagError('--recompute-method needs --recompute-granularity full');
    return { granularity, recompute: null, coreAttention: false };
  }
  if (method === undefined) throw new FlagError('--recompute-granularity full needs --recompute-method uniform or block');
  const layers = v['recompute-num-layers'];
  if (!Number.isInteger(layers) || (layers as number) < 1 || (layers as number) > numLayers)
    throw new FlagError(`--recompute-num-layers must be an integer from 1 to --num-layers ${numLayers}, got ${String(layers)}`);
  return { granularity, recompute: { method, numLayers: layers as number }, coreAttention: false };
}

/** The modules of --recompute-modules, each one webtron builds, or one line that says why not. */
function modulesOf(modules: string[]): string[] {
  if (modules.length === 0) throw new FlagError(`--recompute-modules needs one or more of ${MODULES.join(', ')}`);
  for (const m of modules) {
    if (NOT_HERE[m]) throw new FlagError(`--recompute-modules ${m}: ${NOT_HERE[m]}; give ${MODULES.join(' and/or ')}`);
    if (!MODULES.includes(m))
      throw new FlagError(`--recompute-modules: '${m}' is not one of Megatron's modules; give ${MODULES.join(' and/or ')}`);
  }
  return modules;
}
