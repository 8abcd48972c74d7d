import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { findAdapter, isSoftwareAdapter } from '../../src/gpu/adapter.js';

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));

describe('webtron info', () => {
  it('prints the adapter Dawn chooses, its backend and limits', async () => {
    const found = await findAdapter({});
    const out = execFileSync('node', [bin, 'info', '--json'], { encoding: 'utf8' });
    const info = JSON.parse(out.trim().split('\n').pop()!) as {
      adapter: string;
      backend: string;
      limits: Record<string, number>;
      gpuPollMs: number;
    };
    expect(info.adapter).toBe(found!.info.description);
    expect(info.backend).toBe(found!.backend);
    expect(info.limits.maxStorageBufferBindingSize).toBe(found!.adapter.limits.maxStorageBufferBindingSize);
    // How it waits for the GPU: a 1 ms poll on a software adapter, Dawn's busy loop on hardware.
    expect(info.gpuPollMs).toBe(isSoftwareAdapter(found!.info) ? 1 : 0);
  });
  it('a bad flag is a one-line error and exit code 2', () => {
    const run = spawnSync('node', [bin, 'info', '--backend', 'glide'], { encoding: 'utf8' });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^webtron info: --backend 'glide' is not a backend Dawn knows; use one of vulkan/m);
    const unknown = spawnSync('node', [bin, 'nope'], { encoding: 'utf8' });
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'nope'; commands: train, preprocess-data, sample, export, memory, launch, info/);
  });
});
