import { describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import { matmulModel } from '../../src/onnx/proto.js';

describe('ONNX models through onnx-proto', () => {
  it('builds a MatMul model that onnxruntime loads and runs', async () => {
    const [m, k, n] = [3, 5, 2];
    const session = await ort.InferenceSession.create(matmulModel(m, k, n), { executionProviders: ['cpu'] });
    const a = Float32Array.from({ length: m * k }, (_, i) => i - 4);
    const b = Float32Array.from({ length: k * n }, (_, i) => (i % 3) - 1);
    const out = await session.run({ a: new ort.Tensor('float32', a, [m, k]), b: new ort.Tensor('float32', b, [k, n]) });
    const want: number[] = [];
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * n + j]!;
        want.push(s);
      }
    expect([...(out.c!.data as Float32Array)]).toEqual(want);
    expect(out.c!.dims).toEqual([m, n]);
  });
});
