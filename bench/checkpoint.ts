/**
 * `npm run bench -- checkpoint`: saving and loading a whole training state (fp32 params and Adam's
 * moments, distributed optimizer) with every rank writing at once, beside this disk's own
 * sequential write and read speed measured in the same run on the same number of bytes (write +
 * fsync; reads from a cold page cache when run as root, which empties it first). Reported: GB/s of
 * checkpoint bytes over the save's and the load's wall time, and the ratios to the disk. Then
 * --async-save: the time an iteration is blocked by it (the copy to host memory and the commit)
 * against the sync save's, and how much slower training steps run while the files are written.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { parseCount } from './adam.js';
import { dropCaches } from './page-cache.js';
import { startRanks } from './ranks.js';
import { progress, type Row } from './report.js';

const WORKER = fileURLToPath(new URL('./checkpoint-worker.js', import.meta.url));

/** Sequential write (16 MiB writes, then fsync) and read of `bytes` in one file: the disk's own GB/s. */
async function diskSpeed(dir: string, bytes: number): Promise<{ write: number; read: number; cold: boolean }> {
  const path = join(dir, 'disk-speed.bin');
  const block = Buffer.alloc(16 << 20, 0x5a);
  let t0 = performance.now();
  const w = await open(path, 'w');
  for (let at = 0; at < bytes; at += block.byteLength) await w.write(block, 0, Math.min(block.byteLength, bytes - at), at);
  await w.sync();
  await w.close();
  const write = bytes / 1e9 / ((performance.now() - t0) / 1000);
  const cold = dropCaches();
  t0 = performance.now();
  const r = await open(path, 'r');
  for (let at = 0; at < bytes; at += block.byteLength) await r.read(block, 0, Math.min(block.byteLength, bytes - at), at);
  await r.close();
  const read = bytes / 1e9 / ((performance.now() - t0) / 1000);
  rmSync(path, { force: true });
  return { write, read, cold };
}

export const checkpointBench: Bench = {
  name: 'checkpoint',
  summary: "checkpoint save and load (every rank at once) vs the disk's sequential write and read",
  columns: [
    'params',
    'world',
    'checkpoint_bytes',
    'save_gb_per_s',
    'load_gb_per_s',
    'disk_write_gb_per_s',
    'disk_read_gb_per_s',
    'save_vs_disk',
    'load_vs_disk',
    'cold_reads',
    'sync_blocked_ms',
    'async_blocked_ms',
    'async_vs_sync',
    'step_slowdown_during_write',
  ],
  flags: {
    params: { kind: 'string', default: '400M', help: 'fp32 params (K, M, G are powers of 1024; plain numbers exact)' },
    world: { kind: 'list', default: ['2'], help: 'ranks writing at once (worker processes), one or a list' },
    dir: { kind: 'string', help: 'where to write (default: a temporary folder; its disk is the one measured)' },
  },
  async run(_env, flags) {
    const text = flags.params as string;
    const params = /^\d+$/.test(text) ? Number(text) : parseCount(text);
    const rows: Row[] = [];
    for (const world of (flags.world as string[]).map(Number)) {
      if (!Number.isInteger(world) || world < 1) throw new FlagError(`--world: '${world}' is not a positive integer`);
      const base = mkdtempSync(join((flags.dir as string | undefined) ?? process.env.TMPDIR ?? '/tmp', 'webtron-bench-ckpt-'));
      try {
        const bytesGuess = params * 12;
        progress(`checkpoint: the disk's own speed on ${(bytesGuess / 1e9).toFixed(1)} GB`);
        const disk = await diskSpeed(base, bytesGuess);
        progress(`checkpoint: ${params} fp32 params, world ${world}: one step, save, load, then an async save during training steps`);
        const ranks = startRanks(WORKER, world, { params, dir: join(base, 'save'), tensors: 24 });
        await Promise.all(ranks.map((r) => r.done));
        const r = ranks[0]!.lines[0]!;
        const bytes = r.checkpoint_bytes as number;
        const save = bytes / 1e9 / ((r.save_ms as number) / 1000);
        const load = bytes / 1e9 / ((r.load_ms as number) / 1000);
        rows.push({
          bench: 'checkpoint',
          params,
          world,
          checkpoint_bytes: bytes,
          bytes_read_mib: r.bytes_read_mib,
          save_ms: r.save_ms,
          load_ms: r.load_ms,
          save_gb_per_s: save,
          load_gb_per_s: load,
          disk_write_gb_per_s: disk.write,
          disk_read_gb_per_s: disk.read,
          save_vs_disk: save / disk.write,
          load_vs_disk: load / disk.read,
          cold_reads: disk.cold && (r.cold_load as boolean),
          sync_blocked_ms: r.save_ms,
          async_blocked_ms: r.async_blocked_ms,
          async_reserve_ms: r.async_reserve_ms,
          async_copy_ms: r.async_copy_ms,
          async_commit_ms: r.async_commit_ms,
          async_write_ms: r.async_write_ms,
          async_vs_sync: (r.async_blocked_ms as number) / (r.save_ms as number),
          step_ms: r.step_ms,
          step_ms_during_write: r.step_ms_during_write,
          steps_during_write: r.steps_during_write,
          step_slowdown_during_write: r.step_ms_during_write === null ? null : (r.step_ms_during_write as number) / (r.step_ms as number),
        });
      } finally {
        if (!process.env.WEBTRON_BENCH_KEEP) rmSync(base, { recursive: true, force: true });
      }
    }
    return rows;
  },
};
