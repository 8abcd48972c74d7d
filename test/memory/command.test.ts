import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cliInProcess } from '../helpers/cli.js';

const bin = fileURLToPath(new URL('../../bin/webtron.js', import.meta.url));
const small = ['--num-layers', '2', '--hidden-size', '64', '--num-attention-heads', '4', '--seq-length', '32', '--vocab-size', '81'];
/** `webtron memory ARGS` through bin/webtron.js, as a user runs it. */
const runBin = (...args: string[]) => spawnSync('node', [bin, 'memory', ...args], { encoding: 'utf8' });
/** The same through the CLI's main() in this process: what bin/webtron.js's child runs, without two Node start-ups. */
const run = (...args: string[]) => cliInProcess(['memory', ...args], process.cwd());

describe('webtron memory', () => {
  it.each([
    [[]],
    [['--bf16']],
    [['--precision', 'fp16']],
    [['--bf16', '--use-precision-aware-optimizer', '--exp-avg-dtype', 'bf16', '--exp-avg-sq-dtype', 'fp16']],
    [['--bf16', '--use-precision-aware-optimizer', '--main-grads-dtype', 'bf16', '--main-params-dtype', 'fp16']],
    [['--precision', 'fp16', '--use-precision-aware-optimizer', '--main-params-dtype', 'fp16']],
    // One moment a param (Lion's exp_avg), or none (plain SGD).
    [['--bf16', '--optimizer', 'lion']],
    [['--optimizer', 'sgd', '--sgd-momentum', '0']],
    // Llama's block: rope, RMSNorm, SwiGLU at Megatron's default width (128 at h 64), no linear biases, 2 key and value heads for 4.
    [
      [
        '--position-embedding-type',
        'rope',
        '--rotary-percent',
        '0.5',
        '--normalization',
        'RMSNorm',
        '--swiglu',
        '--disable-bias-linear',
        '--group-query-attention',
        '--num-query-groups',
        '2',
      ],
    ],
  ])('%j: measured on the GPU equals the prediction to the byte, d = 1..8, both optimizers', async (precision) => {
    const out = await run(
      ...small,
      ...precision,
      '--data-parallel-size',
      '1,2,3,4,5,6,7,8',
      '--ddp-bucket-size',
      '20000',
      '--measure',
      '--json',
    );
    expect(out.status, out.stderr).toBe(0);
    const rows = out.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toHaveLength(16);
    for (const r of rows) {
      expect(Object.keys(r)).toEqual(
        expect.arrayContaining([
          'data_parallel_size',
          'precision',
          'distributed',
          'bytes_per_param',
          'model_state_bytes_per_rank',
          'by_category',
        ]),
      );
      expect(r.measured, JSON.stringify(r)).toEqual(r.predicted);
      expect(r.measured_equals_predicted).toBe(true);
      // One real forward and backward: the allocator's activation bytes equal the table's.
      expect(r.measured_activations).toBe((r.by_category as { activations: number }).activations);
    }
  });

  it.each([
    ['fp32', [], (d: number) => [4 + 12 / d, 16 / d]],
    ['bf16', ['--bf16'], (d: number) => [2 + 16 / d, 18 / d]],
  ] as const)(
    "%s, --use-megatron-fsdp: optim_grads and optim_grads_params at Megatron-FSDP's bytes per param, measured equal to predicted, d = 1..8",
    async (_name, precision, table) => {
      const out = await run(...small, ...precision, '--data-parallel-size', '1,2,3,4,8', '--use-megatron-fsdp', '--measure', '--json');
      expect(out.status, out.stderr).toBe(0);
      const rows = out.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown> & { data_parallel_size: number; strategy: string; bytes_per_param: number });
      expect(rows.map((r) => r.strategy)).toEqual(Array(5).fill(['no_shard', 'optim', 'optim_grads', 'optim_grads_params']).flat());
      for (const r of rows) {
        expect(r.measured, JSON.stringify(r)).toEqual(r.predicted);
        const [zero2, zero3] = table(r.data_parallel_size) as [number, number];
        if (r.strategy === 'optim_grads') expect(r.bytes_per_param).toBeCloseTo(zero2, 12);
        if (r.strategy === 'optim_grads_params') expect(r.bytes_per_param).toBeCloseTo(zero3, 12);
        // Only the sharded strategies hold buckets whole in passing.
        expect((r.by_category as { buckets: number }).buckets > 0).toBe(r.strategy.startsWith('optim_grads'));
      }
    },
  );

  it('--optimizer sgd and lion keep one fp32 moment a param, 4 bytes fewer than Adam; sgd at momentum 0 none', async () => {
    const rows = async (...flags: string[]) =>
      (await run(...small, ...flags, '--data-parallel-size', '1', '--json')).stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { bytes_per_param: number; optimizer: string; moments: string[] });
    const [adam] = await rows();
    const [sgd] = await rows('--optimizer', 'sgd');
    const [lion] = await rows('--optimizer', 'lion');
    const [plain] = await rows('--optimizer', 'sgd', '--sgd-momentum', '0');
    expect([adam!.optimizer, sgd!.optimizer, lion!.optimizer]).toEqual(['adam', 'sgd', 'lion']);
    expect([adam!.moments, sgd!.moments, lion!.moments, plain!.moments]).toEqual([
      ['exp_avg', 'exp_avg_sq'],
      ['momentum_buffer'],
      ['exp_avg'],
      [],
    ]);
    // fp32, non-distributed: Megatron's 16 bytes a param for Adam.
    expect(adam!.bytes_per_param).toBe(16);
    expect([sgd!.bytes_per_param, lion!.bytes_per_param, plain!.bytes_per_param]).toEqual([12, 12, 8]);
  });

  it('--exp-avg-dtype bf16 --exp-avg-sq-dtype bf16 saves 4 bytes per param of optimizer state before sharding: 4/d per rank', async () => {
    const rows = async (...extra: string[]) => {
      const out = await run(...small, '--bf16', '--data-parallel-size', '1,2,4', '--use-distributed-optimizer', '--json', ...extra);
      expect(out.status, out.stderr).toBe(0);
      return out.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { data_parallel_size: number; bytes_per_param: number; exp_avg_dtype: string });
    };
    const fp32 = await rows();
    const narrow = await rows('--use-precision-aware-optimizer', '--exp-avg-dtype', 'bf16', '--exp-avg-sq-dtype', 'bf16');
    for (const [k, r] of narrow.entries()) {
      const d = r.data_parallel_size;
      expect(r.exp_avg_dtype).toBe('bfloat16');
      // Megatron's bf16 row, 6 + 12/d, becomes 6 + 8/d.
      expect(fp32[k]!.bytes_per_param).toBeCloseTo(6 + 12 / d, 12);
      expect(r.bytes_per_param).toBeCloseTo(6 + 8 / d, 12);
    }
  });

  it.each([
    // Adam reads bf16 grads as they are: 2 bytes of grads instead of 4.
    [['--bf16', '--main-grads-dtype', 'bf16'], (d: number) => [4 + 12 / d, 2 + 14 / d, 16 / d]],
    [['--bf16', '--main-params-dtype', 'fp16'], (d: number) => [6 + 10 / d, 2 + 14 / d, 16 / d]],
    [['--bf16', '--main-grads-dtype', 'bf16', '--main-params-dtype', 'fp16'], (d: number) => [4 + 10 / d, 2 + 12 / d, 14 / d]],
    // fp16 params with fp16 main params are their own main params (Adam still reads fp32 main grads).
    [['--fp16', '--main-params-dtype', 'fp16'], (d: number) => [4 + 12 / d, 2 + 14 / d, 16 / d]],
  ] as const)(
    '%j: bytes per param of each strategy (distributed, optim_grads, optim_grads_params), measured equal to predicted',
    async (flags, table) => {
      const out = await run(
        ...small,
        ...flags,
        '--use-precision-aware-optimizer',
        '--data-parallel-size',
        '1,2,4',
        '--use-megatron-fsdp',
        '--measure',
        '--json',
      );
      expect(out.status, out.stderr).toBe(0);
      const rows = out.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown> & { data_parallel_size: number; strategy: string; bytes_per_param: number });
      for (const r of rows) {
        expect(r.measured, JSON.stringify(r)).toEqual(r.predicted);
        expect(r.measured_activations).toBe((r.by_category as { activations: number }).activations);
        const [zero1, zero2, zero3] = table(r.data_parallel_size) as [number, number, number];
        const want = { optim: zero1, optim_grads: zero2, optim_grads_params: zero3 }[r.strategy as 'optim'];
        if (want !== undefined) expect(r.bytes_per_param, `${r.strategy} at d = ${r.data_parallel_size}`).toBeCloseTo(want, 12);
      }
      expect(rows.filter((r) => r.strategy !== 'no_shard')).toHaveLength(9);
    },
  );

  it('--plot writes an SVG with one stacked bar per configuration', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'webtron-plot-')), 'memory.svg');
    const out = await run(...small, '--data-parallel-size', '1,2,4', '--plot', path);
    expect(out.status, out.stderr).toBe(0);
    const svg = readFileSync(path, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const d of [1, 2, 4]) for (const which of ['plain', 'Z1']) expect(svg).toContain(`<title>d=${d}\n${which}, params:`);
    expect(existsSync(`${path}.tmp`)).toBe(false);
    expect((await run(...small, '--plot', join(tmpdir(), 'x.png'))).stderr).toMatch(/--plot: '.*x\.png' must name an \.svg file/);
  });

  it('counts the params of an .onnx model from its initializers', async () => {
    const model = fileURLToPath(new URL('../fixtures/tiny.onnx', import.meta.url));
    const torch = JSON.parse(readFileSync(`${model}.json`, 'utf8')) as { params: number };
    const out = await run('--onnx', model, '--data-parallel-size', '1', '--json');
    expect(out.status, out.stderr).toBe(0);
    expect((JSON.parse(out.stdout.trim().split('\n')[0]!) as { params: number }).params).toBe(torch.params);
  });

  it('--recompute-granularity full: the activations of one span at a time, selective with mlp of one MLP at a time, measured equal to the table', async () => {
    const deep = ['--num-layers', '4', ...small.slice(2)];
    const activations = async (...flags: string[]) => {
      const out = await run(...deep, ...flags, '--data-parallel-size', '2', '--use-distributed-optimizer', '--measure', '--json');
      expect(out.status, out.stderr).toBe(0);
      const r = JSON.parse(out.stdout.trim().split('\n')[0]!) as { measured_activations: number; by_category: { activations: number } };
      expect(r.measured_activations, flags.join(' ')).toBe(r.by_category.activations);
      return r.by_category.activations;
    };
    const whole = await activations();
    const uniform = await activations('--recompute-granularity', 'full', '--recompute-method', 'uniform');
    const block = await activations('--recompute-granularity', 'full', '--recompute-method', 'block', '--recompute-num-layers', '2');
    const mlp = await activations('--recompute-granularity', 'selective', '--recompute-modules', 'core_attn', 'mlp');
    expect(uniform).toBeLessThan(block);
    expect(block).toBeLessThan(whole);
    expect(mlp).toBeLessThan(whole);
  });

  it('prints a table with human units (through bin/webtron.js)', () => {
    const out = runBin(...small, '--data-parallel-size', '2');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/\| d \| +optimizer \| B\/param \|/);
    expect(out.stdout).toMatch(/\| 2 \| +distributed \| +12 \|/);
    expect(out.stdout).toMatch(/KiB|MiB/);
  });

  it.each([
    [['--params', '-5'], /^webtron memory: --params: '-5' is not a positive count/],
    [
      ['--num-layers', '-2', '--hidden-size', '64', '--num-attention-heads', '4', '--seq-length', '32', '--vocab-size', '81'],
      /^webtron memory: --num-layers must be a positive integer, got -2/,
    ],
    [['--params', '1M', '--fp8'], /^webtron memory: unknown flag --fp8; --help lists this command's flags$/],
    [['--params', '1M', '--precision', 'fp8'], /^webtron memory: --precision: unknown dtype 'fp8'; use fp32, bf16 or fp16$/m],
    [
      ['--checkpoint', '/does/not/exist'],
      /^webtron memory: --checkpoint: \/does\/not\/exist: neither a checkpoint folder \(no index\.json\) nor a save folder/,
    ],
    [['--params', '1M', '--gpu-memory', 'lots'], /^webtron memory: --gpu-memory: 'lots' is not a size/],
    [[], /^webtron memory: no model: give a GPT shape/],
    [['--onnx', '/no/model.onnx'], /^webtron memory: \/no\/model\.onnx: no such file/],
    [
      ['--params', '1M', '--recompute-granularity', 'full'],
      /^webtron memory: --recompute-granularity changes a GPT's activations: give the GPT's shape/,
    ],
    [
      [...small, '--recompute-granularity', 'full'],
      /^webtron memory: --recompute-granularity full needs --recompute-method uniform or block$/,
    ],
    [
      [...small, '--recompute-activations', '--recompute-modules', 'moe'],
      /^webtron memory: --recompute-modules moe: webtron builds dense GPTs, without mixture-of-experts layers; give core_attn and\/or mlp$/,
    ],
  ])('bad input %j is a one-line error', async (args, message) => {
    const out = await run(...args);
    expect(out.status).toBe(2);
    expect(
      out.stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('Warning'))
        .join('\n'),
    ).toMatch(message);
    expect(
      out.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('webtron memory:')),
    ).toHaveLength(1);
  });
});
