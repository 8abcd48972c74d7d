/**
 * Scratch textures: one per role and format, reused by every kernel call that copies an operand into
 * a texture (the texture matmul on CPU drivers). A request larger than the texture in hand replaces
 * it with one covering both sizes, so a model's shapes settle on one texture per role after the first
 * step. The texture given up is dropped, not destroyed: commands already recorded may still read it,
 * and Dawn frees it once they are done and nothing refers to it. Its bytes leave the count at once.
 */
import type { DeviceTexture, GpuContext, TextureRequest } from './context.js';

export class ScratchTextures {
  private readonly textures = new Map<string, DeviceTexture>();

  constructor(private readonly ctx: GpuContext) {}

  /** A texture of `format` at least `width` x `height` texels for `role` (contents undefined). */
  texture(role: string, format: TextureRequest['format'], width: number, height: number): DeviceTexture {
    const key = `${role}:${format}`;
    const held = this.textures.get(key);
    if (held && held.width >= width && held.height >= height) return held;
    const texture = this.ctx.createTexture({
      label: `scratch.${key}`,
      width: Math.max(width, held?.width ?? 0),
      height: Math.max(height, held?.height ?? 0),
      format,
      usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST,
      category: 'other',
    });
    if (held) this.ctx.memory.freed(held.category, held.size);
    this.textures.set(key, texture);
    return texture;
  }

  /** Bytes held now. */
  get bytes(): number {
    return [...this.textures.values()].reduce((sum, t) => sum + t.size, 0);
  }

  destroy(): void {
    for (const t of this.textures.values()) t.destroy();
    this.textures.clear();
  }
}
