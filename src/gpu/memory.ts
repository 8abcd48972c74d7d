/**
 * Allocation accounting: every byte the GPU holds for webtron is counted in one category. The memory
 * calculator (src/memory) predicts the model-state categories and is checked against these counts.
 */

export const MEMORY_CATEGORIES = [
  'params',
  'grads',
  'main-params',
  'optimizer-state',
  'activations',
  'staging',
  'other',
  // Activation buffers no graph holds, kept for the next graph to reuse (src/gpu/pool.ts).
  'pooled',
] as const;

export type MemoryCategory = (typeof MEMORY_CATEGORIES)[number];

export interface MemoryReport {
  /** Live bytes per category right now. */
  live: Record<MemoryCategory, number>;
  /** Highest live bytes each category reached. */
  peak: Record<MemoryCategory, number>;
  /** Sum of `live`. */
  total: number;
  /** Highest `total` reached. */
  peakTotal: number;
  /** Number of live buffers. */
  buffers: number;
}

function zeros(): Record<MemoryCategory, number> {
  return Object.fromEntries(MEMORY_CATEGORIES.map((c) => [c, 0])) as Record<MemoryCategory, number>;
}

export function isMemoryCategory(name: string): name is MemoryCategory {
  return (MEMORY_CATEGORIES as readonly string[]).includes(name);
}

/** Live and peak byte counts by category. Pure bookkeeping: the context calls it on create/destroy. */
export class MemoryAccounting {
  private readonly live = zeros();
  private readonly peak = zeros();
  private total = 0;
  private peakTotal = 0;
  private count = 0;

  allocated(category: MemoryCategory, bytes: number): void {
    this.live[category] += bytes;
    this.peak[category] = Math.max(this.peak[category], this.live[category]);
    this.total += bytes;
    this.peakTotal = Math.max(this.peakTotal, this.total);
    this.count += 1;
  }

  /** Start the peaks again from what is live now (work before it, such as a measurement, does not count). */
  resetPeaks(): void {
    Object.assign(this.peak, this.live);
    this.peakTotal = this.total;
  }

  /** Bytes that stay allocated but now count under another category. */
  moved(from: MemoryCategory, to: MemoryCategory, bytes: number): void {
    if (this.live[from] < bytes) {
      throw new Error(`memory accounting: moving ${bytes} B out of '${from}' but only ${this.live[from]} B are live`);
    }
    this.live[from] -= bytes;
    this.live[to] += bytes;
    this.peak[to] = Math.max(this.peak[to], this.live[to]);
  }

  freed(category: MemoryCategory, bytes: number): void {
    if (this.live[category] < bytes) {
      throw new Error(`memory accounting: freeing ${bytes} B of '${category}' but only ${this.live[category]} B are live`);
    }
    this.live[category] -= bytes;
    this.total -= bytes;
    this.count -= 1;
  }

  report(): MemoryReport {
    return {
      live: { ...this.live },
      peak: { ...this.peak },
      total: this.total,
      peakTotal: this.peakTotal,
      buffers: this.count,
    };
  }
}

/** Bytes in human units (binary prefixes), e.g. `1.50 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(2)} ${units[unit]}`;
}
