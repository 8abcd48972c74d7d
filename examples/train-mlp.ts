/**
 * Train your own model with webtron as a library: an MLP classifier, data parallel over the
 * workers `webtron launch` starts, with the distributed optimizer (ZeRO-1).
 *
 *   npm run setup
 *   npx webtron launch --nproc-per-node 2 -- dist/examples/train-mlp.js [--steps 60] [--batch 64]
 *
 * The task: points in 8 dimensions, labelled by which of 4 fixed directions they lean towards most.
 * Every sample is a function of its global index, so each rank draws its own slice of every global
 * batch and the result does not depend on how many ranks there are.
 */
import { parseArgs } from 'node:util';
import {
  computeLayout,
  createOptimizer,
  DistributedDataParallel,
  Graph,
  GpuContext,
  initProcessGroup,
  Mlp,
  paramTensors,
  WebtronError,
} from 'webtron';

const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '60' },
    batch: { type: 'string', default: '64' },
    lr: { type: 'string', default: '0.01' },
  },
});
const STEPS = Number(args.steps);
const GLOBAL_BATCH = Number(args.batch);
const SIZES = [8, 32, 4];
const SEED = 1234;

/** A deterministic hash of (seed, sample, k) to [-1, 1). */
function noise(sample: number, k: number): number {
  let h = Math.imul(sample + 1, 0x9e3779b1) ^ Math.imul(k + 1, 0x85ebca6b) ^ SEED;
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a2d39);
  return ((h ^ (h >>> 15)) >>> 0) / 2 ** 31 - 1;
}

/** Samples first … first+count-1: inputs [count, 8] and the class each leans towards most. */
function batch(first: number, count: number): { x: Float32Array; y: Uint32Array } {
  const [inputs, classes] = [SIZES[0]!, SIZES[SIZES.length - 1]!];
  const x = new Float32Array(count * inputs);
  const y = new Uint32Array(count);
  for (let s = 0; s < count; s++) {
    for (let k = 0; k < inputs; k++) x[s * inputs + k] = noise(first + s, k);
    let best = 0;
    let bestScore = -Infinity;
    for (let c = 0; c < classes; c++) {
      let score = 0;
      for (let k = 0; k < inputs; k++) score += x[s * inputs + k]! * noise(-1 - c, k); // class c's direction
      if (score > bestScore) [best, bestScore] = [c, score];
    }
    y[s] = best;
  }
  return { x, y };
}

async function main(): Promise<void> {
  const ctx = await GpuContext.create();
  const { info, group, close } = await initProcessGroup();
  const { rank, worldSize } = info;
  if (GLOBAL_BATCH % worldSize !== 0) throw new Error(`--batch ${GLOBAL_BATCH} must be a multiple of the ${worldSize} ranks`);
  const perRank = GLOBAL_BATCH / worldSize;

  // One contiguous param and grad buffer, split into one equal shard per rank.
  const layout = computeLayout(Mlp.specs(SIZES), { dataParallelSize: worldSize, distributedOptimizer: true });
  const ddp = new DistributedDataParallel(ctx, group, layout, { overlapGradReduce: true });
  const optimizer = createOptimizer(ctx, group, ddp, {
    hyper: { lr: Number(args.lr), beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: true, maximize: false },
  });
  ddp.importParams(Mlp.init(SIZES, SEED, 0.3)); // the same on every rank
  const mlp = new Mlp(SIZES, paramTensors(ddp.buffers));

  const log = (line: string) => rank === 0 && console.log(line);
  log(`training an MLP ${SIZES.join('-')} (${layout.paramCount} params) on ${worldSize} ranks with the distributed optimizer`);
  let firstLoss = Number.NaN;
  let loss = Number.NaN;
  for (let step = 0; step < STEPS; step++) {
    ddp.zeroGradBuffer();
    const first = step * GLOBAL_BATCH + rank * perRank; // this rank's slice of the global batch
    const { x, y } = batch(first, perRank);
    const g = new Graph(ctx, { seed: SEED, samples: { first, count: perRank } });
    const out = mlp.forward(g, g.input(x, [perRank, SIZES[0]!]), g.input(y, [perRank]));
    // Each param's grad bucket is reduce-scattered as soon as the backward has finished it.
    g.backward(out.loss!, { onParamGrad: (name) => ddp.registerGradReady(name) });
    const local = (await g.read(out.loss!))[0]!;
    g.release();
    await ddp.finishGradSync();
    await optimizer.step(); // Adam on this rank's shard, then an all-gather of the params
    const sum = new Float32Array([local]);
    await group.allReduce(sum, 'sum');
    loss = sum[0]! / worldSize;
    if (step === 0) firstLoss = loss;
    if (step % 10 === 0 || step === STEPS - 1) log(`step ${String(step + 1).padStart(4)}/${STEPS}  loss ${loss.toFixed(4)}`);
  }

  // Held-out accuracy, and a check that the all-gather left every rank the same params.
  await ddp.finishParamSync();
  const heldOut = batch(10_000_000 + rank * 256, 256);
  const g = new Graph(ctx, { training: false });
  const logits = await g.read(mlp.forward(g, g.input(heldOut.x, [256, SIZES[0]!])).logits);
  g.release();
  const classes = SIZES[SIZES.length - 1]!;
  let correct = 0;
  for (let s = 0; s < 256; s++) {
    const row = logits.subarray(s * classes, (s + 1) * classes);
    if (row.indexOf(Math.max(...row)) === heldOut.y[s]) correct++;
  }
  const params = await ddp.exportParams();
  let checksum = 0;
  for (const v of params.values()) for (const p of v) checksum += p;
  const mine = Math.fround(checksum);
  const correctAll = new Float32Array([correct]);
  const extremes = new Float32Array([mine, -mine]); // max and -min over the ranks
  await group.allReduce(correctAll, 'sum');
  await group.allReduce(extremes, 'max');
  const same = extremes[0] === mine && -extremes[1]! === mine;
  const accuracy = (100 * correctAll[0]!) / (256 * worldSize);
  log(
    `final loss ${loss.toFixed(4)} (first ${firstLoss.toFixed(4)}), held-out accuracy ${accuracy.toFixed(1)}%, params ${same ? 'identical' : 'DIFFERENT'} on ${worldSize} ranks`,
  );
  ddp.destroy();
  optimizer.destroy();
  await close();
  ctx.destroy();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(
      `rank ${process.env.RANK}: ${error instanceof WebtronError ? error.message : error instanceof Error ? error.stack : error}`,
    );
    process.exit(1);
  },
);
