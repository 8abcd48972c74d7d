/**
 * Token tables past the storage binding limit, read a window of tokens at a time: the windows cover
 * the table within one binding each (at this device's real limit too), the embedding gives every
 * token's row exactly, and a GPT's logits (forward and decoder) equal those of the whole table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ParamDtype } from '../../src/ddp/layout.js';
import { GpuContext, storageUsage } from '../../src/gpu/context.js';
import { GptDecoder } from '../../src/nn/decode.js';
import { Gpt, type GptConfig } from '../../src/nn/gpt.js';
import { Graph } from '../../src/nn/graph.js';
import { embedding } from '../../src/nn/ops.js';
import { LocalParams } from '../../src/nn/params.js';
import { Tensor } from '../../src/nn/tensor.js';
import { vocabWindows } from '../../src/nn/vocab-windows.js';
import { asParam } from '../helpers/matmul-weights.js';
import { seeded } from '../helpers/seed.js';

let ctx: GpuContext;
beforeAll(async () => {
  ctx = await GpuContext.create();
});
afterAll(() => ctx?.destroy());

/** Run `fn` with at most `tokens` tokens per window. */
async function withWindows<T>(tokens: number, fn: () => Promise<T>): Promise<T> {
  ctx.vocabWindowTokens = tokens;
  try {
    return await fn();
  } finally {
    ctx.vocabWindowTokens = Number.POSITIVE_INFINITY;
  }
}

describe('token tables read in windows', () => {
  it("windows cover the table in order, each within one binding, at this device's own limit and below it", () => {
    const c = 64;
    const limit = ctx.limits.maxStorageBufferBindingSize;
    const vocab = Math.ceil(limit / (c * 4)) + 100; // one table row past what one binding holds, and more
    const buffer = ctx.createBuffer({ label: 'big table', size: vocab * c * 4, usage: storageUsage(), category: 'other' });
    try {
      const table = new Tensor(buffer, 0, [vocab, c], 'float32');
      expect(table.fitsOneBinding(ctx)).toBe(false);
      const windows = vocabWindows(ctx, table);
      expect(windows.length).toBeGreaterThanOrEqual(2);
      let next = 0;
      for (const w of windows) {
        expect(w.first).toBe(next);
        expect(w.rows.offset).toBe(w.first * c);
        expect(w.rows.shape).toEqual([w.count, c]);
        expect(w.rows.fitsOneBinding(ctx)).toBe(true);
        next += w.count;
      }
      expect(next).toBe(vocab);
      // In steps of 64 tokens, within a step of the most one binding holds (room is kept for the alignment).
      expect(windows[0]!.count % 64).toBe(0);
      expect(new Tensor(buffer, 0, [windows[0]!.count + 128, c], 'float32').fitsOneBinding(ctx)).toBe(false);
      const small = new Tensor(buffer, 7, [300, c], 'float32');
      expect(vocabWindows(ctx, small)).toEqual([{ first: 0, count: 300, rows: small }]);
      ctx.vocabWindowTokens = 128;
      expect(vocabWindows(ctx, small).map((w) => [w.first, w.count, w.rows.offset])).toEqual([
        [0, 128, 7],
        [128, 128, 7 + 128 * c],
        [256, 44, 7 + 256 * c],
      ]);
    } finally {
      ctx.vocabWindowTokens = Number.POSITIVE_INFINITY;
      buffer.destroy();
    }
  });

  for (const dtype of ['float32', 'bfloat16'] as ParamDtype[])
    for (const positions of [true, false])
      it(`embedding from windows of 64 tokens: every row exact (${dtype} table, ${positions ? 'with' : 'without'} positions, from position 5)`, async () => {
        const { random } = seeded(`vocab windows embedding ${dtype} ${positions}`);
        const [vocab, c, batch, t, at] = [300, 12, 2, 40, 5];
        const wte = asParam(
          Float32Array.from({ length: vocab * c }, () => random() * 2 - 1),
          dtype,
        );
        const wpe = asParam(
          Float32Array.from({ length: (at + t) * c }, () => random() * 2 - 1),
          dtype,
        );
        // A small param first, so that the table starts off the binding alignment.
        const params = new LocalParams(ctx, [
          { name: 'pad', shape: [3], dtype, gradDtype: 'float32' },
          { name: 'wte', shape: [vocab * c], dtype, gradDtype: 'float32' },
          { name: 'wpe', shape: [(at + t) * c], dtype, gradDtype: 'float32' },
        ]);
        params.set(
          new Map([
            ['pad', new Float32Array(3)],
            ['wte', wte],
            ['wpe', wpe],
          ]),
        );
        // Every window's first and last token, the table's last, and random ones.
        const ids = Uint32Array.from(
          { length: batch * t },
          (_, i) => [0, 63, 64, 127, 128, 255, 256, vocab - 1][i] ?? Math.floor(random() * vocab),
        );
        const rows = await withWindows(64, async () => {
          const g = new Graph(ctx, { training: false });
          const table = params.get('wte').reshape([vocab, c]);
          expect(vocabWindows(ctx, table).length).toBe(5);
          const y = embedding(g, g.input(ids, [batch, t]), table, positions ? params.get('wpe').reshape([at + t, c]) : null, at);
          const out = await g.read(y);
          g.release();
          return out;
        });
        params.destroy();
        for (let r = 0; r < batch * t; r++)
          for (let j = 0; j < c; j++) {
            const want = Math.fround(wte[ids[r]! * c + j]! + (positions ? wpe[(at + (r % t)) * c + j]! : 0));
            expect(rows[r * c + j], `row ${r} (token ${ids[r]}), column ${j}`).toBe(want);
          }
      });

  it("a GPT's logits from windows of its table equal the whole table's: the forward, and the decoder's steps", async () => {
    const { seed, random } = seeded('vocab windows gpt');
    const config: GptConfig = { numLayers: 1, numAttentionHeads: 2, hiddenSize: 32, seqLength: 16, vocabSize: 300 };
    const params = new LocalParams(ctx, Gpt.specs(config));
    params.set(Gpt.init(config, seed));
    const gpt = new Gpt(config, params.tensors);
    const ids = Uint32Array.from({ length: 2 * 16 }, () => Math.floor(random() * config.vocabSize));
    const forward = async () => {
      const g = new Graph(ctx, { training: false });
      const logits = await g.read(gpt.forward(g, g.input(ids, [2, 16])).logits);
      g.release();
      return logits;
    };
    const decode = async () => {
      const decoder = new GptDecoder(ctx, gpt, 16);
      const out = [await decoder.append(Array.from(ids.subarray(0, 5)))];
      for (const id of ids.subarray(5, 9)) out.push(await decoder.step(id));
      decoder.destroy();
      return out;
    };
    const whole = { forward: await forward(), decode: await decode() };
    const windowed = await withWindows(64, async () => ({ forward: await forward(), decode: await decode() }));
    params.destroy();
    const worst = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
    expect(windowed.forward.length).toBe(2 * 16 * config.vocabSize);
    expect(worst(windowed.forward, whole.forward)).toBeLessThanOrEqual(1e-5);
    for (const [i, logits] of windowed.decode.entries())
      expect(worst(logits, whole.decode[i]!), `decode step ${i}`).toBeLessThanOrEqual(1e-5);
  });

  it('a backward through a head read in windows throws one line instead of leaving its grads out', async () => {
    const config: GptConfig = { numLayers: 1, numAttentionHeads: 2, hiddenSize: 32, seqLength: 8, vocabSize: 300 };
    const params = new LocalParams(ctx, Gpt.specs(config));
    params.set(Gpt.init(config, 1));
    const ids = Uint32Array.from({ length: 8 }, (_, i) => (i * 37) % config.vocabSize);
    const error = await withWindows(64, async () => {
      const g = new Graph(ctx);
      try {
        const out = new Gpt(config, params.tensors).forward(g, g.input(ids, [1, 8]), g.input(ids, [8]));
        g.backward(out.loss!);
        return null;
      } catch (e) {
        return e as Error;
      } finally {
        g.release();
      }
    });
    params.destroy();
    expect(error?.message).toMatch(
      /^output head \[300, 32\]: it passes this device's storage binding limit \(\d+ B\) and is read in windows, which have no backward; train a smaller vocabulary or width on this device$/,
    );
  });
});
