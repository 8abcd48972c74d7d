/**
 * Grad accumulation is safe by construction: micro-batches before the last run inside noSync (no
 * sync can start on a partial grad), and the grad buffer cannot be zeroed under a running sync.
 * Two ranks simulated in one process.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { DistributedDataParallel } from '../../src/ddp/ddp.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { GpuContext } from '../../src/gpu/context.js';
import { localGroups } from '../helpers/local-group.js';

const ctx = await GpuContext.create();
afterAll(() => ctx.destroy());
const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype: 'float32', gradDtype: 'float32' });
const MODEL = [f32('a', 40, 3), f32('b', 17), f32('c', 64)];

function ranks(distributed: boolean) {
  return localGroups(2).map((group) => {
    const layout = computeLayout(MODEL, { dataParallelSize: 2, distributedOptimizer: distributed, bucketSize: 100 });
    return { group, ddp: new DistributedDataParallel(ctx, group, layout, { overlapGradReduce: true }) };
  });
}

/** Add a micro-batch's grads (k-th micro-batch of `rank`) into the grad buffer, as a backward does. */
async function accumulate(ddp: DistributedDataParallel, rank: number, k: number): Promise<void> {
  const buffer = ddp.buffers[0]!;
  const now = await ctx.transfers.readFloat32(buffer.grads, 0, buffer.layout.numel);
  for (const p of buffer.layout.params) for (let e = 0; e < p.numel; e++) now[p.start + e]! += (rank + 1) * (k + 1) + e;
  ctx.transfers.upload(buffer.grads, now);
  for (const p of buffer.layout.params) ddp.registerGradReady(p.name);
}

describe('grad accumulation', () => {
  it.each([true, false])('three micro-batches, the first two inside noSync, sync the sum once (distributed %s)', async (distributed) => {
    const rs = ranks(distributed);
    await Promise.all(
      rs.map(async ({ ddp, group }) => {
        ddp.zeroGradBuffer();
        for (const k of [0, 1]) {
          await ddp.noSync(async () => {
            expect(ddp.isLastMicroBatch).toBe(false);
            await accumulate(ddp, group.rank, k);
          });
          // Every param was registered, yet no bucket started: a partial grad never syncs.
          expect(ddp.isLastMicroBatch).toBe(true);
        }
        await accumulate(ddp, group.rank, 2);
        await ddp.finishGradSync();
      }),
    );
    for (const { ddp, group } of rs) {
      const buffer = ddp.buffers[0]!;
      const grads = await ctx.transfers.readFloat32(buffer.grads, 0, buffer.layout.numel);
      for (const bucket of buffer.layout.buckets) {
        const s = (bucket.end - bucket.start) / 2;
        for (const p of buffer.layout.params.filter((x) => x.bucket === bucket.index)) {
          for (let e = 0; e < p.numel; e++) {
            const i = p.start + e;
            const own = !distributed || (i >= bucket.start + group.rank * s && i < bucket.start + (group.rank + 1) * s);
            if (!own) continue;
            // Mean over ranks of the sum over micro-batches: ((1 + 2) · 6 + 6e) / 2.
            expect(grads[i], `rank ${group.rank}, ${p.name}[${e}]`).toBe(((1 + 2) * 6 + 6 * e) / 2);
          }
        }
      }
      ddp.destroy();
    }
  });

  it('a world of one skips the round trip: no readback, no collective, the grads as the backward left them', async () => {
    for (const [bf16, trips] of [
      [false, 0],
      [true, 1],
    ] as const) {
      const [group] = localGroups(1);
      const layout = computeLayout(MODEL, { dataParallelSize: 1, distributedOptimizer: true, bucketSize: 100 });
      const ddp = new DistributedDataParallel(ctx, group!, layout, { overlapGradReduce: true, gradReduceInBf16: bf16 });
      let readbacks = 0;
      // The grad sync reads back through readbackPieces (one call per chunk; one chunk per bucket here).
      const readback = ctx.transfers.readbackPieces.bind(ctx.transfers);
      ctx.transfers.readbackPieces = (...args: Parameters<typeof readback>) => {
        readbacks++;
        return readback(...args);
      };
      try {
        ddp.zeroGradBuffer();
        await accumulate(ddp, 0, 0);
        await ddp.finishGradSync();
        // With --grad-reduce-in-bf16 every bucket still makes the trip (its grads are rounded at any d).
        expect(readbacks, `bf16 ${bf16}`).toBe(trips * layout.buffers[0]!.buckets.length);
        const buffer = ddp.buffers[0]!;
        const after = await ctx.transfers.readFloat32(buffer.grads, 0, buffer.layout.numel);
        // accumulate() added 1 + e to element e of every param.
        if (!bf16) for (const p of buffer.layout.params) for (let e = 0; e < p.numel; e++) expect(after[p.start + e]).toBe(1 + e);
      } finally {
        ctx.transfers.readbackPieces = readback;
        ddp.destroy();
      }
    }
  });

  it('finishGradSync inside noSync, and noSync inside noSync, are errors', async () => {
    const { ddp } = ranks(true)[0]!;
    await expect(ddp.noSync(() => ddp.finishGradSync())).rejects.toThrow(
      'finishGradSync inside noSync: the grads of this micro-batch are not final; call it after the last micro-batch',
    );
    expect(() => ddp.noSync(() => ddp.noSync(() => 1))).toThrow('noSync: already inside noSync');
    expect(ddp.isLastMicroBatch).toBe(true);
    ddp.destroy();
  });

  it("zeroGradBuffer refuses while a bucket's sync is still running", async () => {
    const rs = ranks(true);
    // Both ranks register every grad: with overlap the syncs start now and run in the background.
    for (const { ddp } of rs) {
      ddp.zeroGradBuffer();
      for (const p of MODEL) ddp.registerGradReady(p.name);
    }
    expect(() => rs[0]!.ddp.zeroGradBuffer()).toThrow(
      /^zeroGradBuffer while the grad sync of bucket \d+ of buffer 0 is still running: await finishGradSync\(\) first$/,
    );
    await Promise.all(rs.map((r) => r.ddp.finishGradSync()));
    for (const { ddp } of rs) {
      expect(() => ddp.zeroGradBuffer()).not.toThrow();
      ddp.destroy();
    }
  });
});
