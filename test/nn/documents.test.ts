/**
 * Documents inside samples against Megatron's own construction, written here as its
 * _get_ltor_masks_and_position_ids (megatron/core/datasets/gpt_dataset.py) builds them: position ids
 * 0..T-1 from which, at each end-of-document index i, every later id drops by i + 1 - prev; and a
 * lower-triangular mask whose rows after i lose the columns up to i.
 */
import { describe, expect, it } from 'vitest';
import { documentPositions, documentStarts } from '../../src/nn/documents.js';
import { seeded } from '../helpers/seed.js';

const { seed, random } = seeded('nn/documents.test.ts');

/** Megatron's position ids and attention mask (true: attends) for one sample. */
function megatron(data: number[], eod: number): { positions: number[]; mask: boolean[][] } {
  const T = data.length;
  const positions = Array.from({ length: T }, (_, i) => i);
  const mask = Array.from({ length: T }, (_, r) => Array.from({ length: T }, (_, c) => c <= r));
  const eods = positions.filter((i) => data[i] === eod);
  let prev = 0;
  for (const i of eods) {
    for (let r = i + 1; r < T; r++) for (let c = 0; c <= i; c++) mask[r]![c] = false;
    for (let r = i + 1; r < T; r++) positions[r]! -= i + 1 - prev;
    prev = i + 1;
  }
  return { positions, mask };
}

describe('documents inside samples', () => {
  it(`starts and positions are Megatron's position ids and attention mask (seed ${seed})`, () => {
    const [T, eod] = [24, 3];
    // Samples with no end of document, one at each end, two back to back, and random ones.
    const samples = [
      Array.from({ length: T }, () => 5),
      Array.from({ length: T }, (_, i) => (i === 0 || i === T - 1 ? eod : 1)),
      Array.from({ length: T }, (_, i) => (i === 7 || i === 8 ? eod : 2)),
      ...Array.from({ length: 20 }, () => Array.from({ length: T }, () => (random() < 0.2 ? eod : Math.floor(random() * 3)))),
    ];
    const ids = Uint32Array.from(samples.flat());
    const starts = documentStarts(ids, T, eod);
    const positions = documentPositions(starts, T);
    samples.forEach((data, s) => {
      const want = megatron(data, eod);
      expect([...positions.subarray(s * T, (s + 1) * T)], `positions of sample ${s}`).toEqual(want.positions);
      const mask = Array.from({ length: T }, (_, r) => Array.from({ length: T }, (_, c) => starts[s * T + r]! <= c && c <= r));
      expect(mask, `mask of sample ${s}`).toEqual(want.mask);
    });
  });

  it('refuses ids that are not whole samples', () => {
    expect(() => documentStarts(new Uint32Array(10), 4, 0)).toThrow(/10 ids are not whole samples of 4 tokens/);
  });
});
