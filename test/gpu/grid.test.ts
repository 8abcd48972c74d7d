import { describe, expect, it } from 'vitest';
import { gridFor, windowsFor } from '../../src/gpu/grid.js';

describe('gridFor', () => {
  it('is 1-D up to the per-dimension limit', () => {
    expect(gridFor(0)).toEqual({ x: 0, y: 1, z: 1 });
    expect(gridFor(65535)).toEqual({ x: 65535, y: 1, z: 1 });
  });
  it('goes 2-D past the limit, covering every workgroup with little overshoot', () => {
    for (const n of [65536, 131071, 1_000_003, 65535 * 65535]) {
      const g = gridFor(n);
      expect(g.x).toBeLessThanOrEqual(65535);
      expect(g.y).toBeLessThanOrEqual(65535);
      expect(g.x * g.y).toBeGreaterThanOrEqual(n);
      expect(g.x * g.y - n).toBeLessThan(g.y);
    }
    expect(gridFor(10, 4)).toEqual({ x: 4, y: 3, z: 1 });
  });
  it('rejects what no grid can hold', () => {
    expect(() => gridFor(65535 * 65535 + 1)).toThrow(/split the work into windows/);
    expect(() => gridFor(-1)).toThrow(/non-negative integer/);
  });
});

describe('windowsFor', () => {
  it('one window when the data fits one binding', () => {
    expect(windowsFor(0, 4, 1024)).toEqual([{ start: 0, count: 0 }]);
    expect(windowsFor(256, 4, 1024)).toEqual([{ start: 0, count: 256 }]);
  });
  it('tiles exactly, with aligned starts, one element past the limit', () => {
    const limit = 128 << 20;
    const ws = windowsFor(limit / 4 + 1, 4, limit);
    expect(ws).toEqual([
      { start: 0, count: limit / 4 },
      { start: limit / 4, count: 1 },
    ]);
  });
  it('rounds the window down to the offset alignment', () => {
    const ws = windowsFor(1000, 4, 1000, 256); // 1000 B -> 768 B windows of 192 floats
    expect(ws.map((w) => w.count)).toEqual([192, 192, 192, 192, 192, 40]);
    for (const w of ws) expect((w.start * 4) % 256).toBe(0);
    expect(ws.reduce((s, w) => s + w.count, 0)).toBe(1000);
  });
  it('handles 2-byte elements and refuses windows smaller than the alignment', () => {
    expect(windowsFor(300, 2, 512, 256)).toEqual([
      { start: 0, count: 256 },
      { start: 256, count: 44 },
    ]);
    expect(() => windowsFor(10, 4, 100, 256)).toThrow(/cannot window/);
  });
});
