import { describe, expect, it } from 'vitest';
import { wireRatios } from '../../bench/collectives.js';

describe('bench collectives: an op against the wire', () => {
  it('compares round by round with the exchange of the lower median time, and with each round’s faster one', () => {
    // Three rounds of 64 MiB. plain: 10, 20, 30 ms (median 20); in place: 15, 12, 40 ms (median 15).
    const op = [20, 10, 60];
    const plain = [10, 20, 30];
    const inplace = [15, 12, 40];
    const factor = 0.5; // reduce_scatter at world 2
    // busbw / wire rate per round = factor · wire time / op time, worked by hand:
    //   against in place (the lower median): 0.5·15/20 = 0.375, 0.5·12/10 = 0.6, 0.5·40/60 ≈ 0.333 → median 0.375
    //   against each round's faster: 0.5·10/20 = 0.25, 0.5·12/10 = 0.6, 0.5·30/60 = 0.25 → median 0.25
    const r = wireRatios(op, plain, inplace, factor);
    expect(r.vs_wire).toBeCloseTo(0.375, 12);
    expect(r.vs_wire_round_min).toBeCloseTo(0.25, 12);
  });

  it('is 1 for an op exactly as fast as the faster wire (all_reduce factor 1), whichever exchange that is', () => {
    const wire = [31, 29, 30, 33, 28];
    const slower = wire.map((t) => t * 1.25);
    expect(wireRatios(wire, wire, slower, 1).vs_wire).toBe(1);
    expect(wireRatios(wire, slower, wire, 1).vs_wire).toBe(1);
  });
});
