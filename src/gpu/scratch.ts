/**
 * Scratch textures for kernels that read copies of their operands (the texture matmul on CPU
 * drivers). A runner leases one per copy it keeps and returns them when it submits: a texture is
 * never shared by two runners' unsubmitted work. Returned textures wait for the next lease of their
 * format; a lease larger than every idle texture takes the largest and replaces it with one covering
 * both sizes, so a model's shapes settle on a few textures after the first step. A replaced texture
 * is dropped, not destroyed (submitted work may still read it; Dawn frees it once that is done and
 * nothing refers to it, and the kernels' bind group cache forgets it), and its bytes leave the count
 * at once.
 */
import type { DeviceTexture, GpuContext, TextureRequest } from './context.js';

export class ScratchTextures {
  private readonly idle: DeviceTexture[] = [];
  private readonly leased = new Set<DeviceTexture>();

  constructor(private readonly ctx: GpuContext) {}

  /** A texture of `format` of at least `width` x `height` texels (contents undefined), until `release`. */
  lease(format: TextureRequest['format'], width: number, height: number): DeviceTexture {
    const same = this.idle.filter((t) => t.format === format);
    // The smallest idle texture that fits, else the largest to grow (or none).
    const fits = same.filter((t) => t.width >= width && t.height >= height).sort((a, b) => a.size - b.size)[0];
    let texture = fits;
    if (!texture) {
      const grow = same.sort((a, b) => b.size - a.size)[0];
      texture = this.ctx.createTexture({
        label: `scratch.${format}`,
        width: Math.max(width, grow?.width ?? 0),
        height: Math.max(height, grow?.height ?? 0),
        format,
        usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
        category: 'other',
      });
      if (grow) {
        this.idle.splice(this.idle.indexOf(grow), 1);
        this.ctx.memory.freed(grow.category, grow.size);
        this.ctx.kernels.forget(grow.view);
      }
    } else {
      this.idle.splice(this.idle.indexOf(texture), 1);
    }
    this.leased.add(texture);
    return texture;
  }

  /** Take leased textures back (the work that reads them is submitted). */
  release(textures: Iterable<DeviceTexture>): void {
    for (const t of textures) {
      if (!this.leased.delete(t)) continue;
      this.idle.push(t);
    }
  }

  /** Bytes held now, leased or idle. */
  get bytes(): number {
    let sum = 0;
    for (const t of [...this.idle, ...this.leased]) sum += t.size;
    return sum;
  }

  destroy(): void {
    for (const t of [...this.idle, ...this.leased]) t.destroy();
    this.idle.length = 0;
    this.leased.clear();
  }
}
