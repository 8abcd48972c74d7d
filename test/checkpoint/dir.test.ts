/** Megatron's --save-retain-interval rule on a save folder, step by step, beside the rule written out plainly. */
import { existsSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dropUnretained, iterName } from '../../src/checkpoint/dir.js';

describe('dropUnretained (--save-retain-interval)', () => {
  it('removes the previous checkpoint unless its iteration is a multiple, the same one, or a symbolic link', () => {
    const save = mkdtempSync(join(tmpdir(), 'webtron-retain-'));
    const made = (it: number) => mkdirSync(join(save, iterName(it)));
    const elsewhere = mkdtempSync(join(tmpdir(), 'webtron-retain-link-'));
    symlinkSync(elsewhere, join(save, iterName(5)));
    let previous: number | null = null;
    for (let it = 1; it <= 8; it++) {
      if (it !== 5) made(it);
      const dropped = dropUnretained(save, previous, it, 4);
      // The rule: the previous one goes unless it is a multiple of 4 (or the link at 5).
      const goes = previous !== null && previous % 4 !== 0 && previous !== 5;
      expect(dropped, `after saving ${it}`).toBe(goes ? previous : null);
      previous = it;
    }
    const left = [1, 2, 3, 4, 5, 6, 7, 8].filter((it) => existsSync(join(save, iterName(it))));
    expect(left).toEqual([4, 5, 8]);
    expect(dropUnretained(save, 8, 8, 4)).toBeNull(); // saved again at the same iteration
    expect(dropUnretained(save, null, 9, 4)).toBeNull(); // no tracker before
    expect(existsSync(elsewhere)).toBe(true);
  });
});
