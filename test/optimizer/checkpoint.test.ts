import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { computeLayout } from '../../src/ddp/layout.js';
import { readCheckpoint } from '../../src/optimizer/checkpoint.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/optimizer/safetensors.js';
import { relativeError } from '../helpers/hash.js';
import { runWorkers } from '../helpers/job.js';

const WORKER = fileURLToPath(new URL('../../dist/test/workers/optimizer-worker.js', import.meta.url));
const job = (world: number, config: Record<string, unknown>) => runWorkers(WORKER, world, config);
const paramsOf = (ranks: Record<string, unknown>[][]) => ranks[0]!.find((l) => 'params' in l)!.params as Record<string, number[]>;
const flat = (p: Record<string, number[]>) => Object.keys(p).sort().flatMap((k) => p[k]!);

describe('optimizer checkpoint', () => {
  it('safetensors round-trip', () => {
    const data = Float32Array.from([1.5, -2, 3e-8]);
    const bytes = encodeSafetensors([{ name: 'w', shape: [3], data }], { kind: 'test' });
    expect(Number(bytes.readBigUInt64LE(0)) % 8).toBe(0);
    expect(Array.from(decodeSafetensors(bytes, 'x.safetensors').get('w')!.data)).toEqual(Array.from(data));
    expect(() => decodeSafetensors(bytes.subarray(0, 20), 'x.safetensors')).toThrow(/x\.safetensors: header length \d+ runs past the end/);
  });

  it('saved at d = 4, it loads at d = 2 and d = 1 and the next steps are the same', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'webtron-ckpt-')), 'ckpt');
    const base = { distributed: true, clip: 1.0, steps: 5 };
    const saved = await job(4, { ...base, checkpoint: { save: dir, saveAfter: 3 } });
    expect(existsSync(join(dir, 'index.json'))).toBe(true);
    expect(readdirSync(join(dir, '..')).filter((f) => f !== 'ckpt')).toEqual([]); // no temporary left behind
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { step: number; savedAtDataParallelSize: number };
    expect(index).toMatchObject({ step: 3, savedAtDataParallelSize: 4 });
    const reference = flat(paramsOf(saved));
    for (const [world, distributed] of [[2, true], [1, true], [2, false]] as const) {
      const resumed = await job(world, { ...base, distributed, checkpoint: { load: dir } });
      const got = flat(paramsOf(resumed));
      expect(relativeError(got, reference), `d = ${world}, distributed ${distributed}`).toBeLessThanOrEqual(1e-6);
      expect(resumed[0]!.find((l) => 'step' in l)!.step).toBe(5);
    }
  });

  it('fp16: the loss scaler\'s state and the fp32 main params survive a change of d', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'webtron-ckpt-')), 'ckpt');
    const base = { distributed: true, clip: 1.0, steps: 5, dtype: 'float16' };
    const saved = await job(2, { ...base, checkpoint: { save: dir, saveAfter: 3 } });
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { scaler: Record<string, number>; files: Record<string, unknown> };
    expect(index.scaler).toEqual({ scale: 1024, growthTracker: 3, hysteresisTracker: 2, skippedSteps: 0 });
    expect(Object.keys(index.files)).toContain('main_params.safetensors');
    const resumed = await job(1, { ...base, checkpoint: { load: dir } });
    expect(relativeError(flat(paramsOf(resumed)), flat(paramsOf(saved)))).toBeLessThanOrEqual(1e-6);
    expect(resumed[0]!.find((l) => 'scaler' in l)!.scaler).toEqual(saved[0]!.find((l) => 'scaler' in l)!.scaler);
  });

  it('a corrupt file or another model is an error naming the file and the field', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'webtron-ckpt-')), 'ckpt');
    await job(2, { distributed: true, clip: 0, steps: 1, checkpoint: { save: dir, saveAfter: 1 } });
    const f32 = (name: string, ...shape: number[]) => ({ name, shape, dtype: 'float32' as const, gradDtype: 'float32' as const });
    const model = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];
    const layout = computeLayout(model, { dataParallelSize: 3, distributedOptimizer: true });
    expect(readCheckpoint(dir, layout).index.step).toBe(1);
    const other = computeLayout([...model.slice(0, 5), f32('odd', 102)], { dataParallelSize: 1, distributedOptimizer: false });
    expect(() => readCheckpoint(dir, other)).toThrow(/index\.json: field 'layoutHash' is [0-9a-f]+ but this model's is [0-9a-f]+/);
    const path = join(dir, 'exp_avg.safetensors');
    const bytes = readFileSync(path);
    bytes[bytes.byteLength - 1] ^= 0xff;
    writeFileSync(path, bytes);
    expect(() => readCheckpoint(dir, layout)).toThrow(/exp_avg\.safetensors: does not match field 'files\.exp_avg\.safetensors\.sha256'/);
    const loaded = await job(2, { distributed: true, clip: 0, steps: 2, checkpoint: { load: dir } });
    expect(loaded[0]!.find((l) => 'loadError' in l)!.loadError).toMatch(/exp_avg\.safetensors: does not match/);
  });
});
