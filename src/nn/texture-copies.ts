/**
 * A runner's copies of tensors in textures, for the texture matmul (CPU drivers): a tensor's rows
 * copied once serve every product that reads it before it changes, as A or B, straight or
 * transposed (dy feeds both dx = dy Wᵀ and dW = xᵀ dy; qkv feeds q kᵀ and the product with v).
 *
 * A copy stays valid until something this runner records writes its buffer (a dispatch binding it
 * writable, a clear) and at most until the runner submits: other writers (uploads, other runners)
 * are ordered by submission, so nothing is reused across one. Each format keeps at most `SLOTS`
 * copies; a new one takes the least recently used slot (the GPU runs commands in order, so
 * overwriting a texture after the products that read it is safe), except the ones the next product
 * is about to read. Textures are leased from the context's scratch pool and returned on submit.
 *
 * Params are pinned instead: a graph's params do not change while it lives (the forward waits for a
 * block's gathered params before it records the block), so a weight copied in the forward serves the
 * backward's dx = dy Wᵀ too, across submits, in a texture of its own until the runner is destroyed.
 * A write to the buffer it was copied from still makes it stale.
 */
import type { DeviceBuffer, DeviceTexture, GpuContext, TextureRequest } from '../gpu/context.js';

const SLOTS = 4;

/** Rows of a tensor as they lie in its buffer: `height` rows of `width` texels, `bytesPerRow` apart from `offset`. */
export interface TextureRegion {
  buffer: DeviceBuffer;
  offset: number;
  bytesPerRow: number;
  width: number;
  height: number;
  format: TextureRequest['format'];
}

interface Slot {
  texture: DeviceTexture;
  region: TextureRegion | null;
  used: number;
}

const same = (a: TextureRegion, b: TextureRegion) =>
  a.buffer === b.buffer &&
  a.offset === b.offset &&
  a.bytesPerRow === b.bytesPerRow &&
  a.width === b.width &&
  a.height === b.height &&
  a.format === b.format;

export class TextureCopies {
  private readonly slots = new Map<string, Slot[]>();
  private readonly leased: DeviceTexture[] = [];
  private readonly pinned: Slot[] = [];
  private clock = 0;
  /** Copies made and reused since the last submit (for tests and profiles). */
  made = 0;
  reused = 0;

  constructor(private readonly ctx: GpuContext) {}

  /**
   * The texture holding `region`: the copy already made, or a new one recorded by `copy` into a
   * slot that is not in `keep` (the textures the same product reads).
   */
  texture(region: TextureRegion, keep: readonly DeviceTexture[], copy: (texture: DeviceTexture) => void, pin = false): DeviceTexture {
    if (pin) {
      const held = this.pinned.find((s) => s.region && same(s.region, region));
      if (held) {
        this.reused++;
        return held.texture;
      }
      // A stale pinned copy of the same place keeps its texture when it is large enough.
      const stale = this.pinned.find(
        (s) => !s.region && s.texture.format === region.format && s.texture.width >= region.width && s.texture.height >= region.height,
      );
      const slot = stale ?? { texture: this.ctx.scratch.lease(region.format, region.width, region.height), region: null, used: 0 };
      if (!stale) this.pinned.push(slot);
      slot.region = region;
      copy(slot.texture);
      this.made++;
      return slot.texture;
    }
    const slots = this.slots.get(region.format) ?? [];
    this.slots.set(region.format, slots);
    this.clock++;
    const hit = slots.find((s) => s.region && same(s.region, region));
    if (hit) {
      hit.used = this.clock;
      this.reused++;
      return hit.texture;
    }
    let slot: Slot | undefined;
    if (slots.length < SLOTS) {
      slot = { texture: this.lease(region), region: null, used: 0 };
      slots.push(slot);
    } else {
      slot = slots.filter((s) => !keep.includes(s.texture)).sort((a, b) => a.used - b.used)[0]!;
      if (slot.texture.width < region.width || slot.texture.height < region.height) slot.texture = this.lease(region);
    }
    slot.region = region;
    slot.used = this.clock;
    copy(slot.texture);
    this.made++;
    return slot.texture;
  }

  private lease(region: TextureRegion): DeviceTexture {
    const texture = this.ctx.scratch.lease(region.format, region.width, region.height);
    this.leased.push(texture);
    return texture;
  }

  /** Something recorded writes `buffer`: its copies are stale. */
  written(buffer: DeviceBuffer): void {
    for (const slots of [...this.slots.values(), this.pinned]) for (const s of slots) if (s.region?.buffer === buffer) s.region = null;
  }

  /** The runner submitted: forget every copy but the pinned ones and return their textures. */
  submitted(): void {
    this.ctx.scratch.release(this.leased);
    this.leased.length = 0;
    this.slots.clear();
    this.made = 0;
    this.reused = 0;
  }

  /** The runner is done: the pinned copies' textures go back too. */
  destroy(): void {
    this.submitted();
    this.ctx.scratch.release(this.pinned.map((s) => s.texture));
    this.pinned.length = 0;
  }
}
