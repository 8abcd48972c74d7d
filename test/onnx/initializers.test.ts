import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { numelOf } from '../../src/ddp/layout.js';
import { readOnnxInitializers } from '../../src/onnx/proto.js';

const model = fileURLToPath(new URL('../fixtures/tiny.onnx', import.meta.url));
const torch = JSON.parse(readFileSync(`${model}.json`, 'utf8')) as { params: number; shapes: Record<string, number[]> };

describe('ONNX initializers', () => {
  it('names, shapes and count equal what torch exported (scripts/make-onnx-fixture.py)', () => {
    const inits = readOnnxInitializers(model);
    expect(Object.fromEntries(inits.map((i) => [i.name, i.shape]))).toEqual(torch.shapes);
    expect(inits.reduce((s, i) => s + numelOf(i.shape), 0)).toBe(torch.params);
  });

  it('a missing, truncated or foreign file is a one-line error naming it', () => {
    expect(() => readOnnxInitializers('/no/such.onnx')).toThrow('/no/such.onnx: no such file; give the path of an .onnx model');
    const dir = mkdtempSync(join(tmpdir(), 'webtron-onnx-'));
    const cut = join(dir, 'cut.onnx');
    writeFileSync(cut, readFileSync(model).subarray(0, 100));
    expect(() => readOnnxInitializers(cut)).toThrow(/cut\.onnx: (not an ONNX model|the model has no graph)/);
    const text = join(dir, 'text.onnx');
    writeFileSync(text, 'hello, this is not a model at all\n');
    expect(() => readOnnxInitializers(text)).toThrow(/text\.onnx: /);
  });
});
