/**
 * `npm run bench -- reduce`: the host reduction collectives run on every received segment, as a
 * plain JS loop (any Float32Array) and as WASM SIMD on a `hostFloat32` buffer, measured in the same
 * run on the same data: with the source already in the SIMD scratch (how sockets deliver it) and
 * copied in from elsewhere (a frame buffered early).
 */
import { reduceInto } from '../src/collectives/reduce.js';
import { hostFloat32, reduceBytesInto, scratchFor } from '../src/collectives/simd.js';
import type { Bench } from './bench.js';
import { median } from './timing.js';

function time(runs: number, fn: () => void): number {
  const samples: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    const t0 = performance.now();
    fn();
    if (i >= 2) samples.push(performance.now() - t0);
  }
  return median(samples);
}

export const reduceBench: Bench = {
  name: 'reduce',
  summary: 'host sum of float32 segments: JS loop vs WASM SIMD',
  columns: ['method', 'elements', 'ms', 'gelems_per_s', 'speedup_vs_js'],
  flags: {
    elements: { kind: 'int', default: 8 << 20, help: 'elements to reduce (in 1 MiB segments)' },
  },
  async run(_env, flags) {
    const n = flags.elements as number;
    const segment = (1 << 20) / 4;
    const source = Float32Array.from({ length: n }, (_, i) => (i % 97) - 48);
    const plain = new Float32Array(n);
    const host = hostFloat32(n);
    const scratch = scratchFor(host)!;
    const sourceBytes = new Uint8Array(source.buffer);
    const spare = () => new Float32Array(segment);
    const js = time(10, () => {
      for (let at = 0; at < n; at += segment) reduceInto(plain.subarray(at, at + segment), source.subarray(at, at + segment), 'sum');
    });
    const inScratch = time(10, () => {
      for (let at = 0; at < n; at += segment)
        reduceBytesInto(host.subarray(at, at + segment), scratch.subarray(0, Math.min(segment, n - at) * 4), 'sum', spare);
    });
    const copiedIn = time(10, () => {
      for (let at = 0; at < n; at += segment)
        reduceBytesInto(host.subarray(at, at + segment), sourceBytes.subarray(at * 4, Math.min(at + segment, n) * 4), 'sum', spare);
    });
    return [
      ['js-loop', js],
      ['wasm-simd (source in scratch)', inScratch],
      ['wasm-simd (source copied in)', copiedIn],
    ].map(([method, ms]) => ({
      bench: 'reduce',
      method,
      elements: n,
      ms,
      gelems_per_s: n / (ms as number) / 1e6,
      speedup_vs_js: js / (ms as number),
    }));
  },
};
