/**
 * `npm run bench -- adam`: the WGSL Adam step against the same device's buffer-to-buffer copy,
 * measured in the same run. Adam moves 28 bytes per param (reads p, g, m, v; writes p, m, v); the
 * copy moves 8 bytes per float (one read, one write), so ratio_to_copy says how close Adam gets to
 * the memory bandwidth the device actually delivers. A third workload, a WGSL kernel that only
 * copies (shaders/stream-copy.wgsl, Adam's work layout), shows what any shader streams on this
 * device: ratio_to_shader_copy is Adam's bandwidth over that.
 */
import { storageUsage, type DeviceBuffer, type GpuContext } from '../src/gpu/context.js';
import { windowsFor } from '../src/gpu/grid.js';
import { AdamKernel } from '../src/optimizer/adam.js';
import { ADAMW_DEFAULTS } from '../src/optimizer/adam-math.js';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { progress } from './report.js';
import { timeGpuInterleaved } from './timing.js';

function filled(
  ctx: GpuContext,
  label: string,
  n: number,
  category: 'main-params' | 'grads' | 'optimizer-state' | 'other',
  value: (i: number) => number,
) {
  const buffer = ctx.createBuffer({ label, size: n * 4, usage: storageUsage(), category });
  const chunk = new Float32Array(Math.min(n, 1 << 22));
  for (let at = 0; at < n; at += chunk.length) {
    const len = Math.min(chunk.length, n - at);
    for (let i = 0; i < len; i++) chunk[i] = value(at + i);
    ctx.transfers.upload(buffer, chunk.subarray(0, len), at * 4);
  }
  return buffer;
}

/**
 * Encoder for the streaming-copy kernel over the first `n` floats of `src` into `dst` (whole vec4s:
 * the (n mod 4) tail is left out, and so are its bytes), in windows of one storage binding each.
 * Returns the encode function and the bytes one run moves (read plus written).
 */
export function shaderCopy(
  ctx: GpuContext,
  src: DeviceBuffer,
  dst: DeviceBuffer,
  n: number,
  options: { workgroupSize: number; itemsPerThread: number; maxBindingBytes?: number },
) {
  const limits = ctx.limits;
  const wg = options.workgroupSize;
  const items = options.itemsPerThread;
  const whole = n - (n % 4);
  const pipeline = ctx.kernels.pipeline('stream-copy', 'copy_vec4', { WG: wg, ITEMS: items });
  const maxBinding = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize);
  const windows = windowsFor(whole, 4, maxBinding, limits.minStorageBufferOffsetAlignment).filter((w) => w.count > 0);
  const groups = windows.map((w) => {
    const range = { offset: w.start * 4, size: w.count * 4 };
    return {
      w,
      group: ctx.kernels.bindGroup(pipeline, { src: { buffer: src, ...range }, dst: { buffer: dst, ...range } }),
    };
  });
  const encode = (encoder: GPUCommandEncoder) => {
    const pass = encoder.beginComputePass({ label: 'stream-copy' });
    for (const { w, group } of groups) ctx.kernels.dispatchInPass(pass, pipeline, [group], Math.ceil(w.count / 4 / (wg * items)));
    pass.end();
  };
  return { encode, bytes: 8 * whole };
}

export const adamBench: Bench = {
  name: 'adam',
  summary: 'WGSL AdamW step vs buffer copy bandwidth',
  columns: [
    'n',
    'ms',
    'gparams_per_s',
    'gb_per_s',
    'copy_gb_per_s',
    'ratio_to_copy',
    'shader_copy_gb_per_s',
    'ratio_to_shader_copy',
    'timing',
  ],
  flags: {
    n: { kind: 'list', default: ['16M'], help: 'param counts (K, M, G are powers of 1024)' },
    runs: { kind: 'int', default: 20, help: 'timed runs per measurement (median reported)' },
    warmup: { kind: 'int', default: 3, help: 'untimed runs first' },
    wg: { kind: 'int', default: 64, help: 'Adam workgroup size' },
    items: { kind: 'int', default: 16, help: 'vec4s per Adam invocation' },
  },
  async run(env, flags) {
    const ctx = await env.gpu();
    const rows = [];
    for (const n of (flags.n as string[]).map(parseCount)) {
      progress(`adam n=${n}: allocating ${((5 * n * 4) / 2 ** 20).toFixed(0)} MiB`);
      const p = filled(ctx, 'bench.p', n, 'main-params', (i) => Math.sin(i));
      const g = filled(ctx, 'bench.g', n, 'grads', (i) => Math.cos(i) * 1e-2);
      const m = filled(ctx, 'bench.m', n, 'optimizer-state', () => 0);
      const v = filled(ctx, 'bench.v', n, 'optimizer-state', () => 0);
      const copyDst = ctx.createBuffer({ label: 'bench.copy', size: n * 4, usage: storageUsage(), category: 'other' });
      const kernel = new AdamKernel(
        ctx,
        { param: { buffer: p }, grad: { buffer: g }, expAvg: { buffer: m }, expAvgSq: { buffer: v }, length: n },
        { workgroupSize: flags.wg as number, itemsPerThread: flags.items as number },
      );
      const streamCopy = shaderCopy(ctx, g, copyDst, n, { workgroupSize: flags.wg as number, itemsPerThread: flags.items as number });
      const timing = { runs: flags.runs as number, warmup: flags.warmup as number };
      progress(`adam n=${n}: ${timing.warmup}+${timing.runs} Adam steps, copies and shader copies, interleaved`);
      const [adam, copy, shader] = await timeGpuInterleaved(
        ctx,
        [
          (encoder, run) => kernel.encode(encoder, ADAMW_DEFAULTS, run + 1),
          (encoder) => encoder.copyBufferToBuffer(g.gpu, 0, copyDst.gpu, 0, n * 4),
          streamCopy.encode,
        ],
        timing,
      );
      if (!adam || !copy || !shader) throw new Error('adam bench: missing timings');
      kernel.destroy();
      for (const b of [p, g, m, v, copyDst]) b.destroy();
      const gbPerS = (28 * n) / adam.ms / 1e6;
      const copyGbPerS = (8 * n) / copy.ms / 1e6;
      const shaderCopyGbPerS = streamCopy.bytes / shader.ms / 1e6;
      rows.push({
        bench: 'adam',
        backend: ctx.backend,
        adapter: ctx.adapterName,
        n,
        ms: adam.ms,
        gparams_per_s: n / adam.ms / 1e6,
        gb_per_s: gbPerS,
        copy_gb_per_s: copyGbPerS,
        ratio_to_copy: gbPerS / copyGbPerS,
        shader_copy_gb_per_s: shaderCopyGbPerS,
        ratio_to_shader_copy: gbPerS / shaderCopyGbPerS,
        timing: adam.method,
      });
    }
    return rows;
  },
};

/** "16M" → 16777216, "1000" → 1000, "1.5K" → 1536. */
export function parseCount(text: string): number {
  const match = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(text.trim());
  if (!match) throw new FlagError(`--n: '${text}' is not a count; use e.g. 1000, 64K, 16M`);
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  const value = Math.round(Number(match[1]) * scale);
  if (value < 1) throw new FlagError(`--n: '${text}' must be at least 1`);
  return value;
}
