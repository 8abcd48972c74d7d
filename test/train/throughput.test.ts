/** --log-throughput: Megatron's FLOPs formula against a hand count, the peaks, and a run's log. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { adapterModel } from '../../src/gpu/adapter.js';
import { gptFlopsPerIteration, knownPeak, knownPeaks, throughput } from '../../src/train/throughput.js';
import { dir, TINY, train } from '../helpers/train.js';

describe('--log-throughput', () => {
  it("Megatron's formula equals the matmuls of a GPT counted one by one (2 FLOPs a multiply-add, half the causal scores, backward twice the forward)", () => {
    const [B, s, L, h, V] = [4, 16, 2, 32, 96];
    // Each product [m, k] @ [k, n] of one forward: 2·m·k·n FLOPs.
    const mm = (m: number, k: number, n: number) => 2 * m * k * n;
    // The causal mask leaves half of the s × s scores (Megatron counts s²/2, not s(s+1)/2).
    const causal = (flops: number) => flops / 2;
    const rows = B * s;
    const perLayer =
      mm(rows, h, 3 * h) + // QKV
      B * causal(mm(s, h, s)) + // scores, all heads together (the heads split h)
      B * causal(mm(s, s, h)) + // the scores times V
      mm(rows, h, h) + // attention output projection
      mm(rows, h, 4 * h) + // MLP up
      mm(rows, 4 * h, h); // MLP down
    const forward = L * perLayer + mm(rows, h, V); // and the logits
    expect(gptFlopsPerIteration({ numLayers: L, hiddenSize: h, numAttentionHeads: 2, seqLength: s, vocabSize: V }, B)).toBe(3 * forward);
    // SwiGLU: the MLP's up product is twice as wide (gate and value), f = 3h here.
    const gated = forward + L * (mm(rows, h, 2 * 3 * h) + mm(rows, 3 * h, h) - mm(rows, h, 4 * h) - mm(rows, 4 * h, h));
    const shape = { numLayers: L, hiddenSize: h, numAttentionHeads: 2, seqLength: s, vocabSize: V, swiglu: true, ffnHiddenSize: 3 * h };
    expect(gptFlopsPerIteration(shape, B)).toBeCloseTo(3 * gated, 0);
    // Grouped-query attention: 4 heads in 1 group, so k and v are a quarter as wide.
    const grouped = forward + L * (mm(rows, h, h + 2 * (h / 4)) - mm(rows, h, 3 * h));
    const gqa = { numLayers: L, hiddenSize: h, numAttentionHeads: 4, numQueryGroups: 1, seqLength: s, vocabSize: V };
    expect(gptFlopsPerIteration(gqa, B)).toBeCloseTo(3 * grouped, 0);
    // --kv-channels 24 on 2 heads: q, k and v 48 wide each, the scores and their product over 48,
    // and the output projection from 48 to h.
    const a = 2 * 24;
    const wide =
      forward +
      L *
        (mm(rows, h, 3 * a) +
          B * causal(mm(s, a, s)) +
          B * causal(mm(s, s, a)) +
          mm(rows, a, h) -
          mm(rows, h, 3 * h) -
          B * causal(mm(s, h, s)) -
          B * causal(mm(s, s, h)) -
          mm(rows, h, h));
    const kv = { numLayers: L, hiddenSize: h, numAttentionHeads: 2, seqLength: s, vocabSize: V, kvChannels: 24 };
    expect(gptFlopsPerIteration(kv, B)).toBeCloseTo(3 * wide, 0);
  });

  it('peaks: the table by adapter name and precision; an unknown adapter has none', () => {
    expect(knownPeak('NVIDIA H200', 'bf16')).toEqual({ tflops: 989.4, source: 'table: NVIDIA H200, dense bf16' });
    expect(knownPeak('NVIDIA H100 PCIe', 'fp32')?.tflops).toBe(51.2);
    expect(knownPeak('NVIDIA H100 80GB HBM3', 'fp16')?.tflops).toBe(989.4);
    expect(knownPeak('llvmpipe (LLVM 15.0.6, 256 bits)', 'fp32')).toBeNull();
    // NVIDIA's Vulkan driver, as Dawn reported it on an H200: the model is in the device id alone.
    const h200 = { description: 'NVIDIA: 580.159.04 580.159.4.0', device: 'nvidia-h200', vendor: 'nvidia' };
    expect(knownPeak(h200.description, 'bf16')).toBeNull();
    expect(knownPeak(adapterModel(h200), 'bf16')?.source).toBe('table: NVIDIA H200, dense bf16');
    expect(knownPeaks(adapterModel(h200))).toEqual({ name: 'NVIDIA H200', fp32: 66.9, fp16: 133.8, half: 989.4 });
    expect(knownPeak(adapterModel({ description: 'x', device: 'nvidia-h100-pcie', vendor: 'nvidia' }), 'fp32')?.tflops).toBe(51.2);
    expect(throughput(6e12, 500, 2, { tflops: 10, source: 'x' })).toEqual({ tflops: 6, mfu: 0.6 });
  });

  it('a run logs TFLOP/s per rank and MFU (against the fma chains measured on a CPU driver) in the line, metrics.jsonl and summary.json', async () => {
    const runDir = join(dir(), 'run');
    const r = await train([
      ...TINY,
      '--train-iters',
      '4',
      '--global-batch-size',
      '4',
      '--nproc-per-node',
      '2',
      '--log-throughput',
      '--run-dir',
      runDir,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const flops = gptFlopsPerIteration({ numLayers: 2, hiddenSize: 32, numAttentionHeads: 2, seqLength: 16, vocabSize: 96 }, 4);
    expect(r.stdout).toContain(`throughput: ${(flops / 1e9).toPrecision(4)} GFLOP of model work per iteration`);
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8')) as Record<string, number | string>;
    expect(summary.peak_source).toMatch(/^measured: fp32 fma chains through WGSL on /);
    const lines = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { step_ms?: number; throughput_tflops_per_rank?: number; mfu?: number });
    const logged = lines.filter((l) => l.throughput_tflops_per_rank !== undefined);
    expect(logged).toHaveLength(4);
    for (const l of logged) {
      // The same iteration time as the line's: FLOPs over time over ranks.
      expect(l.throughput_tflops_per_rank!).toBeCloseTo(flops / (l.step_ms! / 1000) / 2 / 1e12, 12);
      expect(l.mfu!).toBeCloseTo(l.throughput_tflops_per_rank! / (summary.peak_tflops as number), 12);
    }
    expect(r.stdout).toMatch(/ throughput per GPU \(TFLOP\/s\/GPU\): [\d.e-]+ \| MFU: [\d.e-]+% \|/);
    expect(summary.mfu as number).toBeGreaterThan(0);
  });
});
