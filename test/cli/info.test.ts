import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { peakLine } from '../../src/cli/info.js';
import { findAdapter, isSoftwareAdapter } from '../../src/gpu/adapter.js';
import { GpuContext } from '../../src/gpu/context.js';
import { describeTile, TILE_CANDIDATES, tileProblem } from '../../src/gpu/matmul-tuner.js';

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));

describe('webtron info', () => {
  it("prints the measured fp32 peak, against the data sheet's where the adapter is in the table", () => {
    expect(peakLine(61234.5, { name: 'NVIDIA H200', fp32: 66.9, fp16: 133.8, half: 989.4 })).toBe(
      "61234.5 GFLOP/s (fma chains through WGSL, wall clock, 0.92 of the NVIDIA H200's 66.9 TFLOP/s; npm run bench -- peak has more)",
    );
    expect(peakLine(92.8, null)).toBe('92.8 GFLOP/s (fma chains through WGSL, wall clock; npm run bench -- peak has more)');
    expect(peakLine(null, null)).toBe('not measured (this backend runs no work)');
  });

  it('prints the adapter Dawn chooses, its backend and limits', async () => {
    const found = await findAdapter({});
    const out = execFileSync('node', [bin, 'info', '--json'], { encoding: 'utf8' });
    const info = JSON.parse(out.trim().split('\n').pop()!) as {
      adapter: string;
      backend: string;
      limits: Record<string, number>;
      gpuPollMs: number;
      matmul: { kernel: string };
      subgroupMatrix: { m: number; n: number; k: number } | null;
      tensorCores: boolean;
      attention: string;
      reductions: string;
      dawnToggles: string[];
      fp32PeakGflops: number | null;
    };
    expect(info.adapter).toBe(found!.info.description);
    // The fp32 arithmetic peak, measured (its kernel's result checked) on every backend that runs work.
    expect(info.fp32PeakGflops).toBeGreaterThan(0);
    expect(info.backend).toBe(found!.backend);
    expect(info.limits.maxStorageBufferBindingSize).toBe(found!.adapter.limits.maxStorageBufferBindingSize);
    // How it waits for the GPU: a 1 ms poll on a software adapter, Dawn's busy loop on hardware.
    expect(info.gpuPollMs).toBe(isSoftwareAdapter(found!.info) ? 1 : 0);
    // The matmul kernel the context chooses, and WEBTRON_MATMUL overriding it.
    const ctx = await GpuContext.create({ tuneMatmul: false });
    try {
      expect(info.matmul.kernel).toBe(ctx.matmulKernel);
      expect(info.attention).toBe(ctx.attentionKernel);
      expect(info.reductions).toBe(ctx.reductionKernel);
      // The tensor cores: the adapter's f16 subgroup-matrix offer, used only once the probe passed.
      expect(info.subgroupMatrix).toEqual(ctx.subgroupMatrixOffered);
      if (!ctx.subgroupMatrixOffered) expect(info.tensorCores).toBe(false);
    } finally {
      ctx.destroy();
    }
    const forced = execFileSync('node', [bin, 'info', '--json'], { encoding: 'utf8', env: { ...process.env, WEBTRON_MATMUL: 'buffer' } });
    expect(JSON.parse(forced.trim().split('\n').pop()!).matmul).toEqual({ kernel: 'buffer' });
    const fused = execFileSync('node', [bin, 'info', '--json'], { encoding: 'utf8', env: { ...process.env, WEBTRON_ATTENTION: 'fused' } });
    expect(JSON.parse(fused.trim().split('\n').pop()!).attention).toBe('fused');
    const split = execFileSync('node', [bin, 'info', '--json'], { encoding: 'utf8', env: { ...process.env, WEBTRON_REDUCTIONS: 'split' } });
    expect(JSON.parse(split.trim().split('\n').pop()!).reductions).toBe('split');
    // Dawn's toggles: none on a software adapter; on any other (Dawn's null backend here) the
    // hardware set, and WEBTRON_DAWN_TOGGLES's after it.
    expect(info.dawnToggles).toEqual(isSoftwareAdapter(found!.info) ? [] : expect.arrayContaining(['allow_unsafe_apis']));
    const cache = mkdtempSync(join(tmpdir(), 'wt-info-'));
    const nul = execFileSync('node', [bin, 'info', '--json', '--backend', 'null'], {
      encoding: 'utf8',
      env: { ...process.env, WEBTRON_DAWN_TOGGLES: 'disable_robustness,disable_workgroup_init', WEBTRON_CACHE_DIR: cache },
    });
    // --tuning: every tile candidate, by class (the null backend's timestamps do not advance), and
    // the ones beyond its limits with why.
    const tuning = execFileSync('node', [bin, 'info', '--tuning', '--backend', 'null'], {
      encoding: 'utf8',
      env: { ...process.env, WEBTRON_CACHE_DIR: cache },
    });
    rmSync(cache, { recursive: true, force: true });
    const nulCtx = await GpuContext.create({ backend: 'null', tuneMatmul: false });
    try {
      const fits = TILE_CANDIDATES.filter((t) => tileProblem(nulCtx, t) === null);
      expect(fits.length).toBeGreaterThan(0);
      const large = tuning.split('\n').slice(tuning.split('\n').indexOf('tiled, large:') + 1);
      expect(large.slice(0, fits.length).map((l) => l.trim().split(/ {2,}/))).toEqual(
        fits.map((t) => [describeTile(t), 'not measured (the timestamps did not advance)']),
      );
      for (const t of TILE_CANDIDATES.filter((c) => tileProblem(nulCtx, c) !== null))
        expect(tuning).toContain(`tiled, not timed: ${describeTile(t)}: cannot run here (${tileProblem(nulCtx, t)})`);
      expect(JSON.parse(nul.trim().split('\n').pop()!).matmul.times.tiles.large).toEqual(
        Object.fromEntries(fits.map((t) => [describeTile(t), 0])),
      );
    } finally {
      nulCtx.destroy();
    }
    expect(JSON.parse(nul.trim().split('\n').pop()!).fp32PeakGflops).toBeNull();
    expect(JSON.parse(nul.trim().split('\n').pop()!).dawnToggles).toEqual([
      'allow_unsafe_apis',
      'vulkan_enable_f16_on_nvidia',
      'use_vulkan_memory_model',
      'disable_robustness',
      'disable_workgroup_init',
    ]);
    const badToggle = spawnSync('node', [bin, 'info', '--backend', 'null'], {
      encoding: 'utf8',
      env: { ...process.env, WEBTRON_DAWN_TOGGLES: 'no such' },
    });
    expect(badToggle.status).toBe(2);
    expect(badToggle.stderr).toMatch(/^webtron info: WEBTRON_DAWN_TOGGLES has 'no such', not a Dawn toggle name/m);
    // Refused on a software adapter too, which would not use it: a typo is not silently ignored.
    const badOnSoftware = spawnSync('node', [bin, 'info'], { encoding: 'utf8', env: { ...process.env, WEBTRON_DAWN_TOGGLES: 'bad-name' } });
    expect(badOnSoftware.status).toBe(2);
    expect(badOnSoftware.stderr).toMatch(/^webtron info: WEBTRON_DAWN_TOGGLES has 'bad-name'/m);
    const bad = spawnSync('node', [bin, 'info'], { encoding: 'utf8', env: { ...process.env, WEBTRON_MATMUL: 'fast' } });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/WEBTRON_MATMUL must be one of buffer, texture, tiled, got 'fast'/);
    const badReductions = spawnSync('node', [bin, 'info'], { encoding: 'utf8', env: { ...process.env, WEBTRON_REDUCTIONS: 'tree' } });
    expect(badReductions.status).toBe(2);
    expect(badReductions.stderr).toMatch(/^webtron info: WEBTRON_REDUCTIONS must be one of lane, split, got 'tree'$/m);
  });
  it('a bad flag is a one-line error and exit code 2', () => {
    const run = spawnSync('node', [bin, 'info', '--backend', 'glide'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^webtron info: --backend 'glide' is not a backend Dawn knows; use one of vulkan/m);
    const unknown = spawnSync('node', [bin, 'nope'], { encoding: 'utf8' });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(
      /unknown command 'nope'; commands: train, preprocess-data, sample, serve, export, memory, launch, dashboard, info/,
    );
  });
});
