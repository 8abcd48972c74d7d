/** Dropout seeds: one stream per dropout call of a graph. */

/** The seed of the `call`-th dropout of a graph seeded `seed` (host twin of the shader's stream). */
export function dropoutSeed(seed: number, call: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(call + 1, 0x85ebca6b)) >>> 0;
}
