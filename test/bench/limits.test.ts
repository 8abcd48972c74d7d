import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BaselineError, fractionOf, gptTrainFlopsPerToken, requireOptimizedBlas, type TorchEnv } from '../../bench/limits.js';
import { PYTHON } from '../helpers/python.js';

const hasTorch = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;

function env(kind: string, device = 'cpu'): TorchEnv {
  return {
    torch_version: '1.13',
    device,
    threads: 1,
    gemm_size: 1024,
    gemm_gflops: 6.5,
    blas: { build: 'generic', kind, libraries: ['/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0'] },
  };
}

describe('the torch baseline', () => {
  it('is refused on the reference BLAS, in one line that names the Debian package to install', () => {
    expect(() => requireOptimizedBlas(env('reference'))).toThrow(BaselineError);
    expect(() => requireOptimizedBlas(env('reference'))).toThrow(
      /^torch runs on the reference BLAS .*6\.5 GFLOP\/s.*apt-get install libopenblas0-pthread/,
    );
    expect(() => requireOptimizedBlas(env('reference'))).not.toThrow(/\n/);
  });

  it('is accepted on an optimized BLAS, and on a GPU whatever the CPU BLAS', () => {
    expect(() => requireOptimizedBlas(env('openblas'))).not.toThrow();
    expect(() => requireOptimizedBlas(env('blis'))).not.toThrow();
    expect(() => requireOptimizedBlas(env('reference', 'cuda'))).not.toThrow();
  });

  // torch_env.py's classification, by the folder Debian's alternatives put libblas.so.3 in.
  it.skipIf(!hasTorch)('torch_env.py names the library that provides libblas.so.3', () => {
    const script = [
      'import sys',
      "sys.path.insert(0, 'bench/reference')",
      'from torch_env import blas_kind',
      "print(blas_kind(['/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0', '/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so'], 'generic'))",
      "print(blas_kind(['/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3'], 'generic'))",
      "print(blas_kind(['/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3'], 'generic'))",
      "print(blas_kind([], 'mkl'))",
    ].join('\n');
    const r = spawnSync(PYTHON, ['-c', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    // netlib's libblas.so.3 wins over an OpenBLAS that is mapped only for LAPACK.
    expect(r.stdout.trim().split('\n')).toEqual(['reference', 'openblas', 'blis', 'mkl']);
  });
  if (!hasTorch) console.log(`skipped: ${PYTHON} has no torch (apt-get install python3-torch libopenblas0-pthread)`);
});

describe('device limits', () => {
  it("counts a GPT's training FLOPs per token as 6 per matmul weight plus 12·L·T·C", () => {
    // 2 layers of 64, T 16, vocab 100: weights 2·12·64² + 100·64 = 104,704; attention 12·2·16·64 = 24,576.
    expect(gptTrainFlopsPerToken({ numLayers: 2, hiddenSize: 64, seqLength: 16, vocabSize: 100 })).toBe(6 * 104_704 + 24_576);
  });

  it('gives a fraction only against a known limit', () => {
    expect(fractionOf(50, 200)).toBe(0.25);
    expect(fractionOf(50, null)).toBeNull();
  });
});
