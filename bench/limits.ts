/**
 * What a benchmark figure is worth: the torch baseline's BLAS (refused when it is netlib's reference
 * implementation), and the device's limit each row is a fraction of. On a CPU driver the limit is
 * torch's own fp32 GEMM on every core of the same machine, measured in the same run; on a known GPU
 * it is the vendor's peak from `knownPeaks` (src/train/throughput.ts) (a GPU row also gets webtron's best kernel measured
 * in the same run where the benchmark runs one: `npm run bench -- nn`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { FlagError } from '../src/cli/flags.js';
import { progress } from './report.js';

const TORCH_ENV = fileURLToPath(new URL('../../bench/reference/torch_env.py', import.meta.url));

/** The record bench/reference/torch_env.py prints (and the reference scripts embed as `env`). */
export interface TorchEnv {
  torch_version: string;
  device: string;
  threads: number;
  gemm_size: number;
  gemm_gflops: number;
  blas: { build: string | null; kind: string; libraries: string[] };
  gpu?: string;
}

/** A baseline that would make the comparison meaningless. Printed as one line, exit code 2. */
export class BaselineError extends FlagError {
  override name = 'BaselineError';
}

/** Refuse a torch that computes its GEMMs with the reference BLAS. */
export function requireOptimizedBlas(env: TorchEnv): void {
  if (env.device !== 'cpu' || env.blas.kind !== 'reference') return;
  throw new BaselineError(
    `torch runs on the reference BLAS (${env.blas.libraries.find((l) => l.includes('libblas')) ?? 'libblas.so.3'}, ` +
      `${env.gemm_gflops} GFLOP/s at ${env.gemm_size}^3), which no one would train with: install Debian's ` +
      'libopenblas0-pthread (apt-get install libopenblas0-pthread) and run the benchmark again',
  );
}

/** The fields every torch row carries about what torch ran on. */
export function torchEnvFields(env: TorchEnv): Record<string, string | number> {
  return {
    torch_version: env.torch_version,
    torch_blas: env.blas.kind,
    torch_threads: env.threads,
    torch_gemm_gflops: env.gemm_gflops,
    ...(env.gpu ? { torch_gpu: env.gpu } : {}),
  };
}

/** torch's GEMM on every core of this machine (the CPU's limit), or null when torch is not installed. */
export function cpuGemmLimit(python: string): TorchEnv | null {
  if (!existsSync(python)) return null;
  try {
    const out = execFileSync(python, [TORCH_ENV, '--threads', String(cpus().length)], { encoding: 'utf8', timeout: 120_000 });
    const env = JSON.parse(out.trim().split('\n').at(-1)!) as TorchEnv;
    requireOptimizedBlas(env);
    return env;
  } catch (e) {
    if (e instanceof BaselineError) throw e;
    progress(`CPU limit not measured: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

/** torch's GEMM of [m, k] @ [k, n] in `dtype` on `device` (its default threads), or null when torch cannot run it. */
export function torchGemm(
  python: string,
  device: string,
  m: number,
  k: number,
  n: number,
  dtype: 'float32' | 'float16' = 'float32',
): (TorchEnv & { gemm_shape_gflops: number }) | null {
  if (!existsSync(python)) return null;
  try {
    const args = [TORCH_ENV, '--device', device, '--gemm', `${m},${k},${n}`, '--gemm-dtype', dtype];
    const out = execFileSync(python, args, { encoding: 'utf8', timeout: 120_000 });
    const env = JSON.parse(out.trim().split('\n').at(-1)!) as TorchEnv & { gemm_shape_gflops: number };
    requireOptimizedBlas(env);
    return env;
  } catch (e) {
    if (e instanceof BaselineError) throw e;
    progress(`torch GEMM ${m}x${k}x${n} not measured: ${(e as Error).message.split('\n')[0]}`);
    return null;
  }
}

/** FLOPs of one trained token of webtron's GPT: 6 per matmul weight (forward and backward) plus attention's 12·L·T·C. */
export function gptTrainFlopsPerToken(c: { numLayers: number; hiddenSize: number; seqLength: number; vocabSize: number }): number {
  const matmulWeights = c.numLayers * 12 * c.hiddenSize ** 2 + c.vocabSize * c.hiddenSize;
  return 6 * matmulWeights + 12 * c.numLayers * c.seqLength * c.hiddenSize;
}

/** `achieved` GFLOP/s as a fraction of `limit`, rounded for a table. */
export function fractionOf(achievedGflops: number, limitGflops: number | null | undefined): number | null {
  return limitGflops ? Math.round((achievedGflops / limitGflops) * 1000) / 1000 : null;
}
