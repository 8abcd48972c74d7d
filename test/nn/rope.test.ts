/**
 * Rotary position embedding (src/nn/rope.ts, shaders/rope.wgsl) against two references: a plain
 * float64 rotation written here, and test/nn/rope_reference.py, written in torch from Megatron-LM's
 * RotaryEmbedding and _apply_rotary_pos_emb_bshd (its forward and its autograd backward).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GpuContext } from '../../src/gpu/context.js';
import type { GptShape } from '../../src/nn/gpt-spec.js';
import { qkvWidth, queryGroups, rotaryDim } from '../../src/nn/gpt-spec.js';
import { Graph } from '../../src/nn/graph.js';
import { rotary, rotaryInverseFrequencies, rotaryTable } from '../../src/nn/rope.js';
import { pythonModulesMissing } from '../helpers/apt.js';
import { hashedUniform } from '../helpers/hash.js';
import { seeded } from '../helpers/seed.js';
import { relError } from './reference.js';

const SEED = seeded('nn/rope.test.ts').seed;
const msg = (what: string) => `${what} (seed ${SEED}: replay with WEBTRON_TEST_SEED=${SEED})`;
const REFEREE = fileURLToPath(new URL('./rope_reference.py', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'webtron-rope-'));

let ctx: GpuContext;
let noTorch: string | null = null;
beforeAll(async () => {
  ctx = await GpuContext.create();
  noTorch = pythonModulesMissing(['torch', 'numpy'], ['python3-torch', 'python3-numpy']);
});
afterAll(() => {
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The rotation written out in float64: pairs (i, i + rot/2), or (2i, 2i + 1), by angle pos / base^(2i/d),
 * in the H query heads and then the G key heads of each row.
 */
function plainRope(qkv: Float32Array, s: GptShape, batch: number, t: number, sign = 1): Float64Array {
  const width = qkvWidth(s);
  const hd = s.hiddenSize / s.numAttentionHeads;
  const d = Math.floor(hd * (s.rotaryPercent ?? 1));
  const half = Math.ceil(d / 2);
  const out = Float64Array.from(qkv);
  for (let r = 0; r < batch * t; r++) {
    for (let h = 0; h < s.numAttentionHeads + queryGroups(s); h++) {
      for (let i = 0; i < half; i++) {
        const freq = 1 / (s.rotaryBase ?? 10000) ** ((2 * i) / d);
        const angle = (r % t) * (s.ropeScalingFactor ? llama3(freq, s.ropeScalingFactor) : freq);
        const base = r * width + h * hd;
        const [a, b] = s.rotaryInterleaved ? [base + 2 * i, base + 2 * i + 1] : [base + i, base + i + half];
        const [x, y] = [qkv[a]!, qkv[b]!];
        out[a] = x * Math.cos(angle) - sign * y * Math.sin(angle);
        out[b] = y * Math.cos(angle) + sign * x * Math.sin(angle);
      }
    }
  }
  return out;
}

/** webtron's rope of `qkv` and, under `dy`, its grad. */
async function webtronRope(s: GptShape, batch: number, qkv: Float32Array, dy: Float32Array) {
  const t = s.seqLength;
  const g = new Graph(ctx);
  const table = rotaryTable(s, t);
  const x = g.input(qkv, [batch, t, qkvWidth(s)], 'qkv', true);
  rotary(g, x, s, g.input(table, [table.length], 'rope.table'));
  g.backwardFrom(x, dy);
  const out = { y: await g.read(x), dqkv: await g.read(g.gradOf(x)) };
  g.release();
  return out;
}

const CASES: [string, GptShape, number][] = [
  [
    'rotate-half, whole heads',
    { numLayers: 1, hiddenSize: 16, numAttentionHeads: 2, seqLength: 7, vocabSize: 5, positionEmbeddingType: 'rope' },
    3,
  ],
  [
    'interleaved, base 500',
    {
      numLayers: 1,
      hiddenSize: 24,
      numAttentionHeads: 3,
      seqLength: 9,
      vocabSize: 5,
      positionEmbeddingType: 'rope',
      rotaryInterleaved: true,
      rotaryBase: 500,
    },
    2,
  ],
  // 12 · 0.6 = 7.2: d = 7 channels give 4 frequencies, so 8 rotate and 4 pass.
  [
    'percent 0.6 of heads of 12',
    { numLayers: 1, hiddenSize: 24, numAttentionHeads: 2, seqLength: 20, vocabSize: 5, positionEmbeddingType: 'rope', rotaryPercent: 0.6 },
    2,
  ],
  // Grouped-query attention: k of 2 key heads (each shared by 2 of the 4 query heads), before the repeat.
  [
    'grouped, 2 key heads for 4',
    { numLayers: 1, hiddenSize: 16, numAttentionHeads: 4, numQueryGroups: 2, seqLength: 6, vocabSize: 5, positionEmbeddingType: 'rope' },
    2,
  ],
  // Llama 3's: base 500000 and heads of 64, so the wavelengths fall in all three bands of the scaling.
  [
    "Llama 3's scaling by 8",
    {
      numLayers: 1,
      hiddenSize: 128,
      numAttentionHeads: 2,
      seqLength: 20,
      vocabSize: 5,
      positionEmbeddingType: 'rope',
      rotaryBase: 500000,
      ropeScalingFactor: 8,
    },
    1,
  ],
];

/** Llama 3's scaling of an inverse frequency, in float64: wavelengths past 8192 slowed by `factor`, under 2048 kept, between interpolated. */
function llama3(freq: number, factor: number): number {
  const wavelen = (2 * Math.PI) / freq;
  if (wavelen < 8192 / 4) return freq;
  if (wavelen > 8192) return freq / factor;
  const smooth = (8192 / wavelen - 1) / (4 - 1);
  return ((1 - smooth) * freq) / factor + smooth * freq;
}

describe('rope', () => {
  it("Llama 3's scaling reaches all three bands on its own shape", () => {
    const s = CASES[4]![1];
    const scaled = rotaryInverseFrequencies(s);
    const plain = rotaryInverseFrequencies({ ...s, ropeScalingFactor: undefined });
    const ratios = new Set(
      Array.from(scaled, (x, i) => (x === plain[i] ? 'kept' : Math.abs(x * 8 - plain[i]!) < 1e-6 * plain[i]! ? 'slowed' : 'between')),
    );
    expect([...ratios].sort()).toEqual(['between', 'kept', 'slowed']);
  });

  it('counts the rotated channels as Megatron does', () => {
    expect(rotaryDim(CASES[2]![1])).toBe(8);
    expect(rotaryDim({ ...CASES[2]![1], rotaryPercent: 0.5 })).toBe(6);
    expect(rotaryDim({ ...CASES[2]![1], positionEmbeddingType: 'learned_absolute' })).toBe(0);
  });

  for (const [name, s, batch] of CASES) {
    it(`${name}: the plain rotation forward, its inverse backward`, async () => {
      const n = batch * s.seqLength * qkvWidth(s);
      const qkv = hashedUniform(SEED, 1, n, 2);
      const dy = hashedUniform(SEED, 2, n, 1);
      const got = await webtronRope(s, batch, qkv, dy);
      expect(relError(got.y, plainRope(qkv, s, batch, s.seqLength)), msg('rotated qkv')).toBeLessThanOrEqual(1e-6);
      expect(relError(got.dqkv, plainRope(dy, s, batch, s.seqLength, -1)), msg('grad')).toBeLessThanOrEqual(1e-6);
      // v, and the channels past the rotated ones, pass untouched.
      const [width, v] = [qkvWidth(s), qkvWidth(s) - (qkvWidth(s) - s.hiddenSize) / 2];
      for (let r = 0; r < batch * s.seqLength; r++) {
        expect(got.y.subarray(r * width + v, (r + 1) * width)).toEqual(qkv.subarray(r * width + v, (r + 1) * width));
      }
    });

    it(`${name}: Megatron's rope in torch gives the same values and grads`, async (context) => {
      if (noTorch) {
        console.log(`skipped: ${noTorch}`);
        context.skip();
      }
      const n = batch * s.seqLength * qkvWidth(s);
      const qkv = hashedUniform(SEED, 3, n, 2);
      const dy = hashedUniform(SEED, 4, n, 1);
      const src = join(dir, 'in.bin');
      const dst = join(dir, 'out.bin');
      const both = new Float32Array(2 * n);
      both.set(qkv);
      both.set(dy, n);
      writeFileSync(src, both);
      const args = [
        s.hiddenSize,
        s.numAttentionHeads,
        s.rotaryBase ?? 10000,
        s.rotaryPercent ?? 1,
        s.rotaryInterleaved ? 1 : 0,
        s.ropeScalingFactor ?? 0,
        queryGroups(s),
      ];
      const run = spawnSync('/usr/bin/python3', [REFEREE, src, dst, String(batch), String(s.seqLength), ...args.map(String)], {
        encoding: 'utf8',
      });
      expect(run.status, run.stderr).toBe(0);
      // A small file's Buffer can sit inside Node's shared pool: take its own bytes only.
      const bytes = readFileSync(dst);
      const want = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      const got = await webtronRope(s, batch, qkv, dy);
      expect(relError(got.y, want.subarray(0, n)), msg('rotated qkv vs torch')).toBeLessThanOrEqual(1e-6);
      expect(relError(got.dqkv, want.subarray(n)), msg('grad vs torch')).toBeLessThanOrEqual(1e-6);
    });
  }
});
