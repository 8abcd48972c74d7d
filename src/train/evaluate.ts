/**
 * Megatron's evaluate: the mean loss over --eval-iters validation batches, every rank taking its
 * share of each; with loss masks (--eod-mask-loss), over their unmasked tokens.
 */
import type { GptSampleSource } from '../data/gpt-dataset.js';
import { Graph } from '../nn/graph.js';
import { batchDocuments, countedTargets } from './data.js';
import type { TrainRun } from './setup.js';
import { LossTally, reportedLoss } from './step.js';

/** The mean validation loss over all ranks, or null without validation samples or with --eval-iters 0. */
export async function evaluate(run: TrainRun, samples: GptSampleSource | null): Promise<number | null> {
  const { cfg, ctx, ddp, gpt, rank, d } = run;
  if (!samples || cfg.evalIters === 0) return null;
  await ddp.finishParamSync();
  const local = new LossTally();
  for (let b = 0; b < cfg.evalIters; b++) {
    for (let m = 0; m < cfg.gradAccumulation; m++) {
      const first = b * cfg.globalBatchSize + (rank * cfg.globalBatchSize) / d + m * cfg.microBatchSize;
      const { ids, targets, starts } = samples.batch(first, cfg.microBatchSize);
      const g = new Graph(ctx, { training: false, samples: { first, count: cfg.microBatchSize }, pinParamCopies: !ddp.shardedParams });
      g.documents = batchDocuments(g, cfg, run.model, starts);
      const idsT = g.input(ids, [cfg.microBatchSize, cfg.seqLength], 'ids');
      const targetsT = g.input(targets, [targets.length], 'targets');
      // Sharded params (optim_grads_params) are gathered section by section and released after.
      const { loss } = ddp.shardedParams
        ? await gpt.forwardAwaiting(g, idsT, targetsT, (names) => ddp.useParams(names, 'forward', gpt.sections().at(-1)!))
        : gpt.forward(g, idsT, targetsT);
      local.add((await g.read(loss!))[0]!, countedTargets(targets));
      await ddp.releaseParams();
      g.release();
    }
  }
  return (await reportedLoss(run, local, cfg.evalIters * cfg.gradAccumulation)).loss;
}
