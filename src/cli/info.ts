/** `webtron info`: the adapter, backend, limits, features and kernels webtron will use. */
import { listAdapters } from '../gpu/adapter.js';
import { GpuContext, OPTIONAL_FEATURES } from '../gpu/context.js';
import { deepPlanFor, describeMma, describeTile, SHAPE_CLASSES, tuningLines } from '../gpu/matmul-tuner.js';
import { measuredFmaPeak } from '../gpu/peak.js';
import { gpuPollMs } from '../gpu/poll.js';
import { type GpuPeaks, knownPeaks } from '../train/throughput.js';
import type { Command } from './command.js';
import { GPU_FLAGS } from './flags.js';

const LIMITS_SHOWN: (keyof GPUSupportedLimits)[] = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupsPerDimension',
  'minStorageBufferOffsetAlignment',
];

/** `webtron info`'s line for the measured fp32 peak (null: not measured), beside the data sheet's where known. */
export function peakLine(gflops: number | null, sheet: GpuPeaks | null): string {
  if (gflops === null) return 'not measured (this backend runs no work)';
  const ofSheet = sheet ? `, ${(gflops / (sheet.fp32 * 1e3)).toFixed(2)} of the ${sheet.name}'s ${sheet.fp32} TFLOP/s` : '';
  return `${gflops.toFixed(1)} GFLOP/s (fma chains through WGSL, wall clock${ofSheet}; npm run bench -- peak has more)`;
}

/** The matmul kernel family and, for the tiled kernel, its tiles by shape class and where they came from. */
function matmulChoice(ctx: GpuContext): Record<string, unknown> {
  const kernel = ctx.matmulKernel;
  if (kernel !== 'tiled') return { kernel };
  const t = ctx.matmulTuning;
  return {
    kernel,
    tiles: t.tiles,
    gflops: t.gflops,
    deepPlan: deepPlanFor(ctx, 'tiled'),
    ...(t.mmaGrids ? { mmaGrids: t.mmaGrids, mmaGflops: t.mmaGflops ?? {}, mmaDeepPlan: deepPlanFor(ctx, 'mma') } : {}),
    ...(t.times ? { times: t.times } : {}),
    source: t.source,
    cachePath: t.cachePath,
    tunedAt: t.tunedAt ?? null,
  };
}

/** The f16 subgroup-matrix (tensor-core) kernel for 16-bit weights: offered, probed, in use. */
function tensorCoreLine(ctx: GpuContext): string {
  const shape = ctx.subgroupMatrixOffered;
  if (!shape) return 'none (no f16 subgroup matrices offered; 16-bit weights stage in f16 where shader-f16 is)';
  const fragment = `${shape.m}×${shape.n}×${shape.k} f16 subgroup matrices, f32 results`;
  const mma = ctx.matmulTuning.mma;
  if (mma === true) {
    const t = ctx.matmulTuning;
    const grids = t.mmaGrids
      ? `; ${SHAPE_CLASSES.map((c) => `${c} ${describeMma(t.mmaGrids![c])}${t.mmaGflops?.[c] ? ` (${t.mmaGflops[c]} GFLOP/s)` : ''}`).join('; ')}; deep products ${deepPlanFor(ctx, 'mma')}`
      : '';
    return `${fragment}: the probe's product was exact, --fp16 and --bf16 matmuls use them${grids}`;
  }
  if (mma === false) return `${fragment}: the probe's product was wrong here, so 16-bit matmuls use the tiled kernel`;
  return `${fragment}: not probed (the tiles are not tuned here), so 16-bit matmuls use the tiled kernel`;
}

function matmulLine(ctx: GpuContext): string {
  const kernel = ctx.matmulKernel;
  if (kernel === 'texture') return 'texture (operands copied into storage textures: a CPU driver)';
  if (kernel === 'buffer') return 'buffer (operands read in place)';
  const t = ctx.matmulTuning;
  const tiles = SHAPE_CLASSES.map((c) => `${c} ${describeTile(t.tiles[c])}${t.gflops[c] ? ` (${t.gflops[c]} GFLOP/s)` : ''}`).join('; ');
  const source =
    t.source === 'default' ? 'default tiles, not tuned' : `${t.source} ${t.cachePath ?? ''}${t.tunedAt ? `, tuned ${t.tunedAt}` : ''}`;
  return `tiled: ${tiles}; deep products ${deepPlanFor(ctx, 'tiled')}; ${source}`;
}

export const info: Command = {
  summary: 'print the WebGPU adapter, backend, limits and features webtron will use',
  flags: {
    ...GPU_FLAGS,
    list: { kind: 'boolean', help: 'list every adapter Dawn offers on this platform' },
    json: { kind: 'boolean', help: 'print one JSON object instead of text' },
    tuning: {
      kind: 'boolean',
      help: 'also print every candidate the matmul tuner timed on this adapter, per shape class, fastest first (--json has them under matmul.times)',
    },
  },
  async run(values) {
    if (values.list) {
      for (const a of await listAdapters()) console.log(a.description);
      return;
    }
    // Tuning (the first run on an adapter) takes seconds: say what it finds as it goes.
    const ctx = await GpuContext.create({
      backend: values.backend as string | undefined,
      adapter: values.adapter as string | undefined,
      tuneProgress: (line) => process.stderr.write(`webtron info: tuning the matmul: ${line}\n`),
    });
    const i = ctx.found.info;
    const limits = Object.fromEntries(LIMITS_SHOWN.map((k) => [k, ctx.limits[k]]));
    const adapterFeatures = [...ctx.found.adapter.features].sort();
    const enabled = [...ctx.device.features].sort();
    // Dawn's null backend runs no work, so it has no arithmetic to measure.
    const fp32Peak = ctx.backend === 'null' ? null : await measuredFmaPeak(ctx);
    if (values.json) {
      console.log(
        JSON.stringify({
          adapter: ctx.adapterName,
          backend: ctx.backend,
          vendor: i.vendor,
          architecture: i.architecture,
          device: i.device,
          fallback: i.isFallbackAdapter,
          limits,
          features: enabled,
          adapterFeatures,
          dawnToggles: ctx.found.toggles,
          gpuPollMs: gpuPollMs(),
          fp32PeakGflops: fp32Peak,
          matmul: matmulChoice(ctx),
          subgroupMatrix: ctx.subgroupMatrixOffered,
          tensorCores: ctx.subgroupMatrix !== null,
          attention: ctx.attentionKernel,
          reductions: ctx.reductionKernel,
        }),
      );
      return;
    }
    const rows: [string, string][] = [
      ['adapter', ctx.adapterName],
      ['backend', ctx.backend],
      ['vendor / architecture', `${i.vendor || '?'} / ${i.architecture || '?'}`],
      ['device', i.device || '?'],
      ['software renderer', i.isFallbackAdapter ? 'yes' : 'no'],
      ...LIMITS_SHOWN.map((k): [string, string] => [k, String(ctx.limits[k])]),
      ['features used', enabled.filter((f) => (OPTIONAL_FEATURES as readonly string[]).includes(f)).join(', ') || 'none'],
      ['subgroup lanes', i.subgroupMinSize ? `${i.subgroupMinSize}–${i.subgroupMaxSize}` : '?'],
      ['dawn toggles', ctx.found.toggles.join(', ') || 'none (a software adapter runs without them; WEBTRON_DAWN_TOGGLES adds to them)'],
      [
        'waits for the GPU',
        gpuPollMs() > 0 ? `polling every ${gpuPollMs()} ms (WEBTRON_GPU_POLL_MS)` : "Dawn's busy loop (WEBTRON_GPU_POLL_MS)",
      ],
      ['fp32 peak', peakLine(fp32Peak, knownPeaks(ctx.adapterModel))],
      ['matmul kernel', matmulLine(ctx)],
      ['tensor cores', tensorCoreLine(ctx)],
      [
        'attention kernel',
        ctx.attentionKernel === 'fused'
          ? 'fused (flash-style: no T × T scores in memory; WEBTRON_ATTENTION)'
          : 'unfused (matmuls and a softmax over T × T scores: a CPU driver; WEBTRON_ATTENTION)',
      ],
      [
        'reductions',
        ctx.reductionKernel === 'split'
          ? 'split (each row or column sum spread over many invocations; WEBTRON_REDUCTIONS)'
          : 'lane (one invocation walks each row or column: a CPU driver; WEBTRON_REDUCTIONS)',
      ],
      ['adapter features', adapterFeatures.join(', ')],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
    if (values.tuning) {
      console.log('');
      for (const line of ctx.matmulKernel === 'tiled'
        ? tuningLines(ctx.matmulTuning)
        : [`the ${ctx.matmulKernel} matmul kernel is not tuned`])
        console.log(line);
    }
  },
};
