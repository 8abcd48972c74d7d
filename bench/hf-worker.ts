/**
 * One process of `npm run bench -- hf` (spawned by bench/hf.ts): a GPT-2-shaped fp32 model's DDP
 * buffers (distributed optimizer, world 1) filled either from a Hugging Face folder, one tensor at
 * a time (what `webtron train --init-from DIR` does), or from random init (Gpt.init, every param
 * in host memory at once). Prints one JSON line: the seconds the import took, the process's peak
 * resident bytes and the GPU bytes allocated.
 */
import { DistributedDataParallel } from '../src/ddp/ddp.js';
import { computeLayout } from '../src/ddp/layout.js';
import { GpuContext } from '../src/gpu/context.js';
import { openHfWeights } from '../src/hf/weights.js';
import { Gpt, type GptConfig } from '../src/nn/gpt.js';
import { runRank } from './rank-main.js';

const config = JSON.parse(process.argv[2] ?? '{}') as { folder: string; mode: 'init-from' | 'random'; model: GptConfig };

runRank(600_000, async (dist) => {
  const ctx = await GpuContext.create();
  const specs = Gpt.specs(config.model);
  const layout = computeLayout(specs, { dataParallelSize: 1, distributedOptimizer: true });
  const ddp = new DistributedDataParallel(ctx, dist.group, layout);
  const t0 = performance.now();
  if (config.mode === 'init-from') {
    const weights = openHfWeights(config.folder, specs, config.model.tiedHead !== false);
    try {
      ddp.importParams((name) => weights.read(name));
    } finally {
      weights.close();
    }
  } else {
    ddp.importParams(Gpt.init(config.model, 1234));
  }
  await ctx.sync();
  const seconds = (performance.now() - t0) / 1000;
  const report = ctx.memoryReport();
  process.stdout.write(`${JSON.stringify({ seconds, peak_rss: process.resourceUsage().maxRSS * 1024, gpu_bytes: report.peakTotal })}\n`);
  ctx.destroy();
});
