import { describe, expect, it } from 'vitest';
import { decodeHeader, encodeHeader, FrameReader, HEADER_BYTES, type FrameHeader } from '../../src/collectives/frame.js';
import {
  bf16ToFloat,
  float32ToWords,
  floatToBf16,
  floatToHalf,
  halfToFloat,
  reduceBf16Into,
  reduceInto,
} from '../../src/collectives/reduce.js';
import { bf16Reference } from '../helpers/bf16.js';
import { seeded } from '../helpers/seed.js';
import { allGatherStep, barrierRounds, chunkRange, reduceScatterStep, segments } from '../../src/collectives/ring.js';

describe('frames', () => {
  const header: FrameHeader = { op: 'allReduce', dtype: 'float32', reduce: 'sum', seq: 7, chunk: 3, length: 10, totalBytes: 4096 };

  it('round-trip and reject garbage with a reason', () => {
    expect(decodeHeader(encodeHeader(header))).toEqual(header);
    const bad = encodeHeader(header);
    bad[0] = 0x47;
    expect(() => decodeHeader(bad)).toThrow(/bad frame magic/);
    const version = encodeHeader(header);
    version[4] = 9;
    expect(() => decodeHeader(version)).toThrow(/frame version 9, this webtron speaks 2/);
    const reduce = encodeHeader(header);
    reduce[7] = 9;
    expect(() => decodeHeader(reduce)).toThrow(/unknown reduce op code 9/);
    for (const op of ['none', 'sum', 'avg', 'max'] as const) expect(decodeHeader(encodeHeader({ ...header, reduce: op })).reduce).toBe(op);
  });

  it('the reader takes frames split at every byte (push)', () => {
    const body = Uint8Array.from({ length: 10 }, (_, i) => i + 1);
    const second: FrameHeader = { ...header, chunk: 4, length: 0 };
    const wire = Buffer.concat([encodeHeader(header), body, encodeHeader(second)]);
    for (let cut = 1; cut < wire.byteLength; cut++) {
      const got: number[] = [];
      const ends: number[] = [];
      const reader = new FrameReader((h) => ({
        bytes: h.length,
        piece: (piece, offset) => {
          for (const [i, b] of piece.entries()) got[offset + i] = b;
        },
        end: () => ends.push(h.chunk),
      }));
      reader.push(wire.subarray(0, cut));
      reader.push(wire.subarray(cut));
      expect(got).toEqual([...body]);
      expect(ends).toEqual([3, 4]);
    }
    expect(HEADER_BYTES).toBe(24);
  });

  it("socket-style reads land in the sink's own memory and never cross a frame boundary", () => {
    // Three frames; the middle one goes to a sink that names its target (read in place).
    const bodies = [
      Uint8Array.from({ length: 1000 }, (_, i) => i % 251),
      Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) % 253),
      new Uint8Array([9, 9, 9]),
    ];
    const wire = Buffer.concat(bodies.flatMap((b, chunk) => [encodeHeader({ ...header, chunk, length: b.byteLength }), b]));
    const inPlace = new Uint8Array(3000);
    const copied: number[][] = [[], [], []];
    let seed = 7;
    let pos = 0;
    const reader = new FrameReader(
      (h) =>
        h.chunk === 1
          ? {
              bytes: 3000,
              target: (offset, max) => inPlace.subarray(offset, offset + max),
              piece: (bytes, offset) => expect(bytes.byteOffset).toBe(offset),
              end: () => undefined,
            }
          : {
              bytes: h.length,
              piece: (bytes, offset) => {
                for (const [i, b] of bytes.entries()) copied[h.chunk]![offset + i] = b;
              },
              end: () => undefined,
            },
      64,
    );
    while (pos < wire.byteLength) {
      const target = reader.target();
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const n = Math.min(target.byteLength, wire.byteLength - pos, 1 + (seed % 700)); // a short read
      target.set(wire.subarray(pos, pos + n));
      pos += n;
      reader.advance(n);
    }
    expect(Array.from(inPlace)).toEqual(Array.from(bodies[1]!));
    expect(copied[0]).toEqual(Array.from(bodies[0]!));
    expect(copied[2]).toEqual([9, 9, 9]);
  });

  it('a body longer or shorter than its place is an error before any byte of it is taken', () => {
    for (const length of [12, 8]) {
      const taken: number[] = [];
      const reader = new FrameReader(() => ({ bytes: 10, piece: (b) => taken.push(b.byteLength), end: () => undefined }));
      const wire = Buffer.concat([encodeHeader({ ...header, length }), new Uint8Array(length)]);
      expect(() => reader.push(wire)).toThrow(`allReduce frame #7/3 carries ${length} B where this rank expects 10 B`);
      expect(taken).toEqual([]);
    }
  });

  it('a place that offers no room for bytes still due is an error, never a loop', () => {
    // Before: a copy target clipped to zero length made push() spin forever on the event loop.
    const reader = new FrameReader(() => ({ bytes: 10, target: () => new Uint8Array(0), piece: () => undefined, end: () => undefined }));
    expect(() => reader.push(Buffer.concat([encodeHeader(header), new Uint8Array(10)]))).toThrow(/offered 0 B for 10 B still due/);
  });

  it('a frame of an op not started yet is held, with the bytes behind it, until retry finds its place', () => {
    let started = false;
    const got: number[] = [];
    const ends: number[] = [];
    const reader = new FrameReader((h) =>
      started
        ? {
            bytes: h.length,
            piece: (b, o) => {
              for (const [i, x] of b.entries()) got[o + i] = x;
            },
            end: () => ends.push(h.chunk),
          }
        : null,
    );
    const body = Uint8Array.from({ length: 10 }, (_, i) => 100 + i);
    const wire = Buffer.concat([encodeHeader(header), body, encodeHeader({ ...header, chunk: 4, length: 0 })]);
    reader.push(wire.subarray(0, 30)); // the header and 6 body bytes
    expect(reader.held).toBe(true);
    const t = reader.target(); // a socket read while held lands in the reader's scratch
    t.set(wire.subarray(30, 33));
    reader.advance(3);
    reader.push(wire.subarray(33));
    expect(got).toEqual([]);
    expect(reader.retry()).toBe(false); // still not started
    started = true;
    const epoch = reader.epoch;
    expect(reader.retry()).toBe(true);
    expect(reader.epoch).not.toBe(epoch);
    expect(got).toEqual([...body]);
    expect(ends).toEqual([3, 4]);
  });
});

describe('ring schedules', () => {
  it('chunks tile any length', () => {
    for (const [len, n] of [
      [0, 3],
      [1, 4],
      [10, 3],
      [1001, 4],
    ] as const) {
      let next = 0;
      for (let c = 0; c < n; c++) {
        const r = chunkRange(len, n, c);
        expect(r.start).toBe(next);
        next = r.end;
      }
      expect(next).toBe(len);
    }
  });

  it('reduce-scatter: each chunk is reduced by every rank and lands on its owner', () => {
    for (const n of [2, 3, 4, 7]) {
      // Simulate the schedule with sets of contributing ranks.
      const holds = Array.from({ length: n }, (_, r) => Array.from({ length: n }, () => new Set([r])));
      for (let k = 0; k < n - 1; k++) {
        const sent = holds.map((h, r) => new Set(h[reduceScatterStep(r, n, k).send]));
        for (let r = 0; r < n; r++) {
          const left = (r - 1 + n) % n;
          const { recv } = reduceScatterStep(r, n, k);
          expect(recv).toBe(reduceScatterStep(left, n, k).send);
          for (const x of sent[left]!) holds[r]![recv]!.add(x);
          if (k + 1 < n - 1) expect(reduceScatterStep(r, n, k + 1).send).toBe(recv);
        }
      }
      for (let r = 0; r < n; r++) expect(holds[r]![r]!.size).toBe(n);
    }
  });

  it('all-gather: every rank ends with every chunk', () => {
    for (const n of [2, 3, 5]) {
      const has = Array.from({ length: n }, (_, r) => new Set([r]));
      for (let k = 0; k < n - 1; k++) {
        for (let r = 0; r < n; r++) {
          const left = (r - 1 + n) % n;
          expect(allGatherStep(r, n, k).recv).toBe(allGatherStep(left, n, k).send);
          expect(has[left]!.has(allGatherStep(left, n, k).send)).toBe(true);
        }
        for (let r = 0; r < n; r++) has[r]!.add(allGatherStep(r, n, k).recv);
      }
      for (const h of has) expect(h.size).toBe(n);
    }
  });

  it('segments and barrier rounds', () => {
    expect(segments({ start: 10, end: 35 }, 10)).toEqual([
      { start: 10, end: 20 },
      { start: 20, end: 30 },
      { start: 30, end: 35 },
    ]);
    expect(segments({ start: 5, end: 5 }, 10)).toEqual([]);
    expect(barrierRounds(0, 5)).toEqual([
      { to: 1, from: 4 },
      { to: 2, from: 3 },
      { to: 4, from: 1 },
    ]);
    expect(barrierRounds(0, 1)).toEqual([]);
  });
});

describe('16-bit floats and reductions', () => {
  it('every fp16 and bf16 word round-trips through float', () => {
    for (let w = 0; w < 65536; w++) {
      const h = halfToFloat(w);
      if (Number.isNaN(h)) expect(Number.isNaN(halfToFloat(floatToHalf(h)))).toBe(true);
      else expect(floatToHalf(h)).toBe(w);
      const b = bf16ToFloat(w);
      if (Number.isNaN(b)) expect(Number.isNaN(bf16ToFloat(floatToBf16(b)))).toBe(true);
      else expect(floatToBf16(b)).toBe(w);
    }
  });

  it('rounds to nearest even and overflows to infinity', () => {
    expect(halfToFloat(floatToHalf(1 + 2 ** -11))).toBe(1); // tie → even
    expect(halfToFloat(floatToHalf(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9);
    expect(halfToFloat(floatToHalf(65520))).toBe(Infinity);
    expect(halfToFloat(floatToHalf(2 ** -25))).toBe(0);
    expect(halfToFloat(floatToHalf(3 * 2 ** -26))).toBe(2 ** -24);
    expect(bf16ToFloat(floatToBf16(1 + 2 ** -8))).toBe(1);
    expect(bf16ToFloat(floatToBf16(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6);
  });

  it('bf16 words of whole arrays: the per-element conversion and the float64 reference, NaN, infinities and ties included', () => {
    const { random, seed } = seeded('bf16 arrays');
    const special = [0, -0, 1, -1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 2 ** -130, 3.4e38, Infinity, -Infinity, NaN, 65504.5, -1e-20];
    const values = Float32Array.from([
      ...special,
      ...Array.from({ length: 5000 }, () => (random() - 0.5) * 2 ** Math.floor(random() * 40 - 20)),
    ]);
    const words = new Uint16Array(values.length);
    float32ToWords(values, 'bfloat16', words);
    for (const [i, x] of values.entries()) {
      const w = words[i]!;
      const at = `seed ${seed}, value ${x} (index ${i})`;
      if (Number.isNaN(x)) expect(Number.isNaN(bf16ToFloat(w)), at).toBe(true);
      else expect(w, at).toBe(floatToBf16(x));
      // The float64 reference (normal finite numbers), written apart from the bit tricks.
      const normal = Number.isFinite(x) && x !== 0 && Math.abs(x) >= 2 ** -126 && Math.abs(bf16Reference(x)) < 2 ** 128;
      if (normal) expect(bf16ToFloat(w), at).toBe(bf16Reference(x));
    }
  });

  it('bf16 words add into fp32 (sum and max), block after block', () => {
    const n = 40_000; // more than one widening block
    const words = Uint16Array.from({ length: n }, (_, i) => floatToBf16((i % 301) / 7 - 20));
    const sum = Float32Array.from({ length: n }, (_, i) => i / 1000);
    const max = Float32Array.from({ length: n }, (_, i) => (i % 3) - 1);
    reduceBf16Into(sum, words, 'sum');
    reduceBf16Into(max, words, 'max');
    for (let i = 0; i < n; i++) {
      expect(sum[i]).toBe(Math.fround(Math.fround(i / 1000) + bf16ToFloat(words[i]!)));
      expect(max[i]).toBe(Math.max((i % 3) - 1, bf16ToFloat(words[i]!)));
    }
  });

  it('sum and max (NaN propagates)', () => {
    const a = new Float32Array([1, 5, NaN, -2]);
    reduceInto(a, new Float32Array([2, -1, 3, NaN]), 'max');
    expect(Array.from(a)).toEqual([2, 5, NaN, NaN]);
    reduceInto(a, new Float32Array([1, 1, 1, 1]), 'sum');
    expect(Array.from(a)).toEqual([3, 6, NaN, NaN]);
  });
});

describe('WASM SIMD reductions on host buffers', () => {
  it('match the plain reduction for odd lengths, unaligned pieces, sum and max', async () => {
    const { hostFloat32, isHostBuffer, reduceBytesInto } = await import('../../src/collectives/simd.js');
    for (const length of [1, 3, 4, 17, 70_001]) {
      for (const op of ['sum', 'max'] as const) {
        const host = hostFloat32(length);
        expect(isHostBuffer(host)).toBe(true);
        const plain = new Float32Array(length);
        for (let i = 0; i < length; i++) host[i] = plain[i] = ((i * 7919) % 201) - 100 + (i % 13 === 0 ? NaN : 0);
        const src = Float32Array.from({ length }, (_, i) => ((i * 104729) % 301) - 150.5);
        // Deliver the source at a byte offset of 1, as socket chunks may be.
        const shifted = new Uint8Array(length * 4 + 1).subarray(1);
        shifted.set(new Uint8Array(src.buffer));
        reduceBytesInto(host, shifted, op, () => new Float32Array(1 << 14));
        reduceInto(plain, src, op);
        expect(Array.from(host)).toEqual(Array.from(plain));
      }
    }
    expect(isHostBuffer(new Float32Array(4))).toBe(false);
  });
});
