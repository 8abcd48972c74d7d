import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CheckpointError, readCheckpointIndex, readIndex } from '../../src/checkpoint/checkpoint.js';
import { resolveCheckpoint, TRACKER } from '../../src/checkpoint/dir.js';
import { computeLayout, type ParamSpec } from '../../src/ddp/layout.js';
import { relativeError } from '../helpers/hash.js';
import { runWorkers, startJob } from '../helpers/job.js';

const WORKER = fileURLToPath(new URL('../../dist/test/workers/optimizer-worker.js', import.meta.url));
const job = (world: number, config: Record<string, unknown>) => runWorkers(WORKER, world, config);
const paramsOf = (ranks: Record<string, unknown>[][]) => {
  const line = ranks[0]!.find((l) => 'params' in l);
  if (!line) throw new Error(`no params line: ${JSON.stringify(ranks)}`);
  return line.params as Record<string, number[]>;
};
const flat = (p: Record<string, number[]>) =>
  Object.keys(p)
    .sort()
    .flatMap((k) => p[k]!);
const saveDir = () => join(mkdtempSync(join(tmpdir(), 'webtron-ckpt-')), 'save');
const f32 = (name: string, ...shape: number[]): ParamSpec => ({ name, shape, dtype: 'float32', gradDtype: 'float32' });
const MODEL = [f32('embed', 33, 8), f32('w1', 8, 16), f32('b1', 16), f32('w2', 16, 5), f32('b2', 5), f32('odd', 101)];

describe("checkpoints in Megatron's layout", () => {
  it('saved at d = 4, it loads at d = 2 and d = 1, with either optimizer, and the next steps are the same', async () => {
    const dir = saveDir();
    const base = { distributed: true, clip: 1.0, steps: 5 };
    const saved = await job(4, { ...base, checkpoint: { save: dir, saveAfter: 3 } });
    // SAVE/iter_0000003 and the tracker; nothing temporary left behind.
    expect(readFileSync(join(dir, TRACKER), 'utf8')).toBe('3\n');
    expect(readdirSync(dir).sort()).toEqual(['iter_0000003', TRACKER]);
    const files = readdirSync(join(dir, 'iter_0000003')).sort();
    expect(files).toEqual(
      expect.arrayContaining([
        'index.json',
        'model.safetensors.index.json',
        'rank-00000.json',
        'rank-00003.json',
        'optim-r00000-000.safetensors',
        'optim-r00003-000.safetensors',
      ]),
    );
    // Every rank wrote its own shards (and its share of the params).
    expect(files.filter((f) => f.startsWith('model-r')).length).toBeGreaterThanOrEqual(2);
    const index = JSON.parse(readFileSync(join(dir, 'iter_0000003', 'index.json'), 'utf8')) as {
      iteration: number;
      step: number;
      savedAtDataParallelSize: number;
    };
    expect(index).toMatchObject({ iteration: 3, step: 3, savedAtDataParallelSize: 4 });
    const reference = flat(paramsOf(saved));
    for (const [world, distributed] of [
      [2, true],
      [1, true],
      [2, false],
      [3, true],
    ] as const) {
      const resumed = await job(world, { ...base, distributed, checkpoint: { load: dir } });
      const got = flat(paramsOf(resumed));
      expect(relativeError(got, reference), `d = ${world}, distributed ${distributed}`).toBeLessThanOrEqual(1e-6);
      expect(resumed[0]!.find((l) => 'step' in l)!.step).toBe(5);
    }
  });

  it('saved by the non-distributed optimizer at d = 2 (each rank writes its share), it loads distributed at d = 3', async () => {
    const dir = saveDir();
    const base = { distributed: false, clip: 0, steps: 4 };
    const saved = await job(2, { ...base, checkpoint: { save: dir, saveAfter: 2 } });
    const index = JSON.parse(readFileSync(join(dir, 'iter_0000002', 'index.json'), 'utf8')) as { files: Record<string, unknown> };
    expect(Object.keys(index.files).filter((f) => f.startsWith('optim-r00001'))).not.toEqual([]);
    const resumed = await job(3, { ...base, distributed: true, checkpoint: { load: dir } });
    expect(relativeError(flat(paramsOf(resumed)), flat(paramsOf(saved)))).toBeLessThanOrEqual(1e-6);
  });

  it("fp16: the loss scaler's state and the fp32 main params survive a change of d", async () => {
    const dir = saveDir();
    const base = { distributed: true, clip: 1.0, steps: 5, dtype: 'float16' };
    const saved = await job(2, { ...base, checkpoint: { save: dir, saveAfter: 3 } });
    const index = JSON.parse(readFileSync(join(dir, 'iter_0000003', 'index.json'), 'utf8')) as {
      scaler: Record<string, number>;
      state: Record<string, unknown>;
    };
    expect(index.scaler).toEqual({ scale: 1024, growthTracker: 3, hysteresisTracker: 2, skippedSteps: 0 });
    expect(Object.keys(index.state).sort()).toEqual(['exp_avg', 'exp_avg_sq', 'main_params']);
    const resumed = await job(1, { ...base, checkpoint: { load: dir } });
    expect(relativeError(flat(paramsOf(resumed)), flat(paramsOf(saved)))).toBeLessThanOrEqual(1e-6);
    expect(resumed[0]!.find((l) => 'scaler' in l)!.scaler).toEqual(saved[0]!.find((l) => 'scaler' in l)!.scaler);
  });

  it('precision-aware optimizer: 16-bit moments are BF16/F16 tensors; they load at another d as they are, or widened, or rounded', async () => {
    const dir = saveDir();
    // Step 4 after a load at step 3 uses the loaded moments as they are, whatever this run stores
    // them as; the new moments are rounded after the update, so the params of step 4 match.
    const base = { distributed: true, clip: 1.0, steps: 4 };
    const moments = { expAvg: 'bfloat16', expAvgSq: 'float16' };
    const saved = await job(2, { ...base, stateDtypes: moments, checkpoint: { save: dir, saveAfter: 3, maxFileBytes: 300 } });
    const step = join(dir, 'iter_0000003');
    // The tensors' dtypes, read from the safetensors headers (8-byte length, then JSON).
    const dtypes = new Map<string, string>();
    for (const file of readdirSync(step).filter((f) => f.startsWith('optim-'))) {
      const bytes = readFileSync(join(step, file));
      const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<
        string,
        { dtype: string }
      >;
      for (const [name, t] of Object.entries(header)) if (name !== '__metadata__') dtypes.set(name.split('/')[0]!, t.dtype);
    }
    expect(Object.fromEntries(dtypes)).toEqual({ exp_avg: 'BF16', exp_avg_sq: 'F16' });
    for (const [world, stateDtypes] of [
      [3, moments],
      [1, { expAvg: 'float32', expAvgSq: 'float32' }],
    ] as const) {
      const resumed = await job(world, { ...base, stateDtypes, checkpoint: { load: dir } });
      expect(
        relativeError(flat(paramsOf(resumed)), flat(paramsOf(saved))),
        `d = ${world}, ${JSON.stringify(stateDtypes)}`,
      ).toBeLessThanOrEqual(1e-6);
    }
    // fp32 moments saved, loaded into 16-bit ones: rounded on the way, so close to the fp32 run, not equal.
    const wide = saveDir();
    const fp32 = await job(2, { ...base, checkpoint: { save: wide, saveAfter: 3 } });
    const rounded = await job(2, { ...base, stateDtypes: moments, checkpoint: { load: wide } });
    const error = relativeError(flat(paramsOf(rounded)), flat(paramsOf(fp32)));
    expect(error).toBeGreaterThan(0);
    expect(error).toBeLessThanOrEqual(1e-3);
  });

  it.each([
    ['bfloat16', { mainParams: 'float16', mainGrads: 'bfloat16' }],
    ['float16', { mainParams: 'float16' }],
  ] as const)(
    '%s params with %j: main params are an F16 tensor; they resume as they are at d = 3, widened into fp32 main params at d = 1',
    async (dtype, state) => {
      const dir = saveDir();
      const base = { distributed: true, clip: 1.0, steps: 4, dtype };
      const saved = await job(2, { ...base, stateDtypes: state, checkpoint: { save: dir, saveAfter: 3 } });
      const step = join(dir, 'iter_0000003');
      const dtypes = new Set<string>();
      for (const file of readdirSync(step).filter((f) => f.startsWith('optim-'))) {
        const bytes = readFileSync(join(step, file));
        const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<
          string,
          { dtype: string }
        >;
        for (const [name, t] of Object.entries(header)) if (name.startsWith('main_params/')) dtypes.add(t.dtype);
      }
      expect([...dtypes]).toEqual(['F16']);
      const same = await job(3, { ...base, stateDtypes: state, checkpoint: { load: dir } });
      expect(relativeError(flat(paramsOf(same)), flat(paramsOf(saved)))).toBeLessThanOrEqual(1e-6);
      // Step 4 from the same main params, kept in fp32 instead of rounded to fp16 after it.
      const wide = await job(1, { ...base, checkpoint: { load: dir } });
      const error = relativeError(flat(paramsOf(wide)), flat(paramsOf(saved)));
      expect(error).toBeGreaterThan(0);
      expect(error).toBeLessThanOrEqual(1e-3);
    },
  );

  it.each([true, false])('fp32 biases beside bf16 weights save and load exactly (distributed %s)', async (distributed) => {
    // Before: the non-distributed optimizer's save crashed with a TypeError, and the distributed one
    // stored zeros as the fp32 params' main params.
    const dir = saveDir();
    const base = { distributed, clip: 1.0, steps: 4, dtype: 'bfloat16' };
    const straight = await job(2, { ...base, checkpoint: { mixed: true } });
    await job(2, { ...base, steps: 2, checkpoint: { mixed: true, save: dir, saveAfter: 2 } });
    const index = JSON.parse(readFileSync(join(dir, 'iter_0000002', 'index.json'), 'utf8')) as {
      params: { name: string; dtype: string }[];
      state: Record<string, Record<string, unknown>>;
    };
    expect(
      index.params
        .filter((p) => p.dtype === 'float32')
        .map((p) => p.name)
        .sort(),
    ).toEqual(['b1', 'b2']);
    expect(Object.keys(index.state.main_params!).sort()).toEqual(['embed', 'odd', 'w1', 'w2']);
    const resumed = await job(2, { ...base, checkpoint: { mixed: true, load: dir } });
    expect(flat(paramsOf(resumed))).toEqual(flat(paramsOf(straight)));
  });

  it('loading SAVE reads the tracker; SAVE/iter_N loads that one; --save-retain keeps the newest; files stay under their bound', async () => {
    const dir = saveDir();
    const base = { distributed: true, clip: 0, steps: 4 };
    const ran = await job(2, { ...base, checkpoint: { save: dir, saveAfter: [1, 2, 3, 4], retain: 2, maxFileBytes: 1024 } });
    expect(readdirSync(dir).sort()).toEqual(['iter_0000003', 'iter_0000004', TRACKER]);
    expect(resolveCheckpoint(dir)).toEqual({ dir: join(dir, 'iter_0000004'), iteration: 4 });
    const index = JSON.parse(readFileSync(join(dir, 'iter_0000004', 'index.json'), 'utf8')) as { files: Record<string, { bytes: number }> };
    // 1 KiB per file: many files, each at most the bound plus its header (embed, 1056 B, is one whole tensor).
    expect(Object.keys(index.files).length).toBeGreaterThan(6);
    for (const [name, meta] of Object.entries(index.files)) expect(meta.bytes, name).toBeLessThan(1024 + 1056 + 512);
    const fromTracker = await job(1, { ...base, steps: 4, checkpoint: { load: dir } });
    expect(flat(paramsOf(fromTracker))).toEqual(flat(paramsOf(ran)));
    const earlier = await job(1, { ...base, checkpoint: { load: join(dir, 'iter_0000003') } });
    expect(flat(paramsOf(earlier))).toEqual(flat(paramsOf(ran)));
    const lines = await job(2, { ...base, checkpoint: { load: join(dir, 'iter_0000001') } });
    expect(lines[0]!.find((l) => 'loadError' in l)!.loadError).toMatch(/neither a checkpoint folder \(no index\.json\) nor a save folder/);
  });

  it('model params are whole safetensors tensors another tool reads by name', async () => {
    const dir = saveDir();
    const ran = await job(2, { distributed: true, clip: 0, steps: 2, dtype: 'bfloat16', checkpoint: { save: dir, saveAfter: 2 } });
    const iter = join(dir, 'iter_0000002');
    // A reader written from the format's description, in Python's standard library only.
    const script = `
import json, struct, sys, os
folder = sys.argv[1]
weight_map = json.load(open(os.path.join(folder, 'model.safetensors.index.json')))['weight_map']
out = {}
for name, file in weight_map.items():
    with open(os.path.join(folder, file), 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        e = header[name]
        f.seek(8 + n + e['data_offsets'][0])
        raw = f.read(e['data_offsets'][1] - e['data_offsets'][0])
    assert e['dtype'] == 'BF16', e
    words = struct.unpack('<%dH' % (len(raw) // 2), raw)
    out[name] = [struct.unpack('<f', struct.pack('<I', w << 16))[0] for w in words]
print(json.dumps(out))
`;
    const python = spawnSync('python3', ['-c', script, iter], { encoding: 'utf8' });
    if (python.error) {
      console.log('skipped: python3 is not installed, so no independent reader can check the files');
      return;
    }
    expect(python.status, python.stderr).toBe(0);
    const read = JSON.parse(python.stdout) as Record<string, number[]>;
    // The bf16 model params are the main params rounded: compare after rounding to bf16.
    const roundBf16 = (x: number) => {
      const f = new Float32Array([x]);
      const u = new Uint32Array(f.buffer);
      u[0] = (u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) & 0xffff0000;
      return f[0]!;
    };
    const main = paramsOf(ran);
    expect(Object.keys(read).sort()).toEqual(Object.keys(main).sort());
    for (const [name, values] of Object.entries(main)) expect(read[name], name).toEqual(values.map(roundBf16));
  });

  it('a corrupt byte, a missing file or another model is an error naming the file and the field, on every rank', async () => {
    const dir = saveDir();
    await job(2, { distributed: true, clip: 0, steps: 1, checkpoint: { save: dir, saveAfter: 1 } });
    const layout = computeLayout(MODEL, { dataParallelSize: 3, distributedOptimizer: true });
    expect(readIndex(dir, layout).index.iteration).toBe(1);
    const other = computeLayout([...MODEL.slice(0, 5), f32('odd', 102)], { dataParallelSize: 1, distributedOptimizer: false });
    expect(() => readIndex(dir, other)).toThrow(/index\.json: field 'layoutHash' is [0-9a-f]+ but this model's is [0-9a-f]+/);
    const iter = join(dir, 'iter_0000001');
    const file = readdirSync(iter).find((f) => f.startsWith('optim-r00001'))!;
    const bytes = readFileSync(join(iter, file));
    bytes[bytes.byteLength - 3]! ^= 0xff;
    writeFileSync(join(iter, file), bytes);
    const loaded = await job(2, { distributed: true, clip: 0, steps: 2, checkpoint: { load: dir } });
    for (const lines of loaded) {
      expect(lines.find((l) => 'loadError' in l)!.loadError).toMatch(
        new RegExp(`^loading .+ failed on rank \\d: .*${file}: bytes 0\\.\\.\\d+ do not match their checksum in index\\.json`),
      );
    }
    const index = JSON.parse(readFileSync(join(iter, 'index.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(iter, 'index.json'), JSON.stringify({ ...index, step: -1 }));
    expect(() => readIndex(dir, layout)).toThrow(/index\.json: field 'step' is -1, expected a non-negative integer/);
  });

  it('a worker killed in the middle of a save leaves the previous checkpoint loadable; the next save cleans up', async () => {
    const dir = saveDir();
    const config = { distributed: true, clip: 0, steps: 3, checkpoint: { save: dir, saveAfter: [1, 2], extraElements: 16_000_000 } };
    let killed = false;
    const running = await startJob({
      world: 2,
      worker: WORKER,
      argv: [JSON.stringify(config)],
      env: { WEBTRON_TIMEOUT_MS: '30000' },
      onLine: (rank, line, child) => {
        // The second save has started: once rank 0 is writing its files, kill it (it would clean up otherwise).
        if (rank === 0 && line.saving === 2) {
          const poll = setInterval(() => {
            const tmp = join(dir, 'iter_0000002.tmp');
            if (existsSync(tmp) && readdirSync(tmp).some((f) => f.startsWith('model-r00000') || f.startsWith('optim-r00000'))) {
              clearInterval(poll);
              killed = child.kill('SIGKILL');
            }
          }, 2);
        }
      },
    });
    const results = await running.done;
    expect(killed).toBe(true);
    expect(results[0]!.signal).toBe('SIGKILL');
    expect(results[1]!.code).toBe(1);
    expect(readFileSync(join(dir, TRACKER), 'utf8')).toBe('1\n');
    expect(existsSync(join(dir, 'iter_0000002.tmp'))).toBe(true); // what the crash left
    expect(resolveCheckpoint(dir).iteration).toBe(1);
    const resumed = await job(2, { ...config, steps: 2, checkpoint: { load: dir, save: dir, saveAfter: [2], extraElements: 16_000_000 } });
    expect(resumed[0]!.find((l) => 'step' in l)!.step).toBe(2);
    expect(readdirSync(dir).sort()).toEqual(['iter_0000001', 'iter_0000002', TRACKER]);
  });

  it('a folder moved aside by a re-save that died between its renames is found by a load and moved back by the next save', async () => {
    const dir = saveDir();
    await job(1, { distributed: true, clip: 0, steps: 1, checkpoint: { save: dir, saveAfter: 1 } });
    // As if a save of iteration 1 again had moved the old folder aside and then died.
    const { renameSync } = await import('node:fs');
    renameSync(join(dir, 'iter_0000001'), join(dir, 'iter_0000001.old'));
    mkdirSync(join(dir, 'iter_0000001.tmp'));
    expect(resolveCheckpoint(dir)).toEqual({ dir: join(dir, 'iter_0000001.old'), iteration: 1 });
    await job(1, { distributed: true, clip: 0, steps: 2, checkpoint: { load: dir, save: dir, saveAfter: 2 } });
    expect(readdirSync(dir).sort()).toEqual(['iter_0000001', 'iter_0000002', TRACKER]);
    expect(resolveCheckpoint(join(dir, 'iter_0000001')).iteration).toBe(1);
  });
});

describe('a checkpoint path that is not one', () => {
  it('a broken index.json is one CheckpointError naming the file, whether the folder is named iter_NNNNNNN or not', () => {
    const save = saveDir();
    for (const name of ['iter_0000001', 'renamed']) {
      mkdirSync(join(save, name), { recursive: true });
      writeFileSync(join(save, name, 'index.json'), '{bad');
      expect(() => readCheckpointIndex(join(save, name))).toThrow(new CheckpointError(`${join(save, name, 'index.json')}: not valid JSON`));
    }
    writeFileSync(join(save, TRACKER), '1\n');
    expect(() => readCheckpointIndex(save)).toThrow(new CheckpointError(`${join(save, 'iter_0000001', 'index.json')}: not valid JSON`));
    writeFileSync(join(save, 'renamed', 'index.json'), '{"iteration": "seven"}');
    expect(() => resolveCheckpoint(join(save, 'renamed'))).toThrow(/field 'iteration' is "seven", expected a non-negative integer/);
  });
});

describe('saves under pressure', () => {
  it('a full disk on a save is an error on every rank with its message, and the previous checkpoint stays', async () => {
    if (process.getuid?.() !== 0) {
      console.log('skipped: a full disk is simulated with a small tmpfs, which needs root');
      return;
    }
    const root = mkdtempSync(join(tmpdir(), 'webtron-full-'));
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', root], { encoding: 'utf8' });
    if (mount.status !== 0) {
      console.log(`skipped: cannot mount a tmpfs here (${mount.stderr.trim()})`);
      return;
    }
    try {
      const dir = join(root, 'save');
      // A small model's iteration 1 fits; a bigger model's iteration 2 cannot: its 64 MB param does not.
      await runWorkers(WORKER, 2, { distributed: true, clip: 0, steps: 1, checkpoint: { save: dir, saveAfter: 1 } });
      const ranks = await runWorkers(WORKER, 2, {
        distributed: true,
        clip: 0,
        steps: 2,
        checkpoint: { save: dir, saveAfter: 2, extraElements: 16_000_000 },
      });
      for (const lines of ranks) {
        const error = lines.find((l) => 'error' in l)?.error as string | undefined;
        expect(error, JSON.stringify(lines)).toMatch(/saving iteration 2 to .+ failed on rank \d: .*ENOSPC/);
      }
      expect(resolveCheckpoint(dir).iteration).toBe(1);
      expect(readdirSync(dir).sort()).toEqual(['iter_0000001', TRACKER]);
    } finally {
      spawnSync('umount', [root]);
    }
  });
});
