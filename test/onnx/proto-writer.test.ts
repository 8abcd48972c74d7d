import { describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import { matmulModel, ProtoWriter } from '../../src/onnx/proto-writer.js';

describe('ONNX protobuf writer', () => {
  it('writes varints and nested length-delimited fields as protobuf encodes them', () => {
    // field 1 varint 300 -> 08 ac 02; field 2 string "hi" -> 12 02 68 69; field 3 message {1: 1} -> 1a 02 08 01
    const bytes = new ProtoWriter().int(1, 300).bytes(2, 'hi').bytes(3, new ProtoWriter().int(1, 1)).finish();
    expect([...bytes]).toEqual([0x08, 0xac, 0x02, 0x12, 0x02, 0x68, 0x69, 0x1a, 0x02, 0x08, 0x01]);
    expect(() => new ProtoWriter().int(1, -1)).toThrow(/non-negative/);
  });

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
