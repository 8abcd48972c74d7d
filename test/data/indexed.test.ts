/**
 * Megatron's indexed dataset format: webtron's writer and reader round trip; files from an
 * independent writer (scripts/write-megatron-indexed.py, numpy) read back; damaged indexes are one
 * clear error each.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DataError, IndexedDataset, IndexedDatasetBuilder, tokenDtypeFor } from '../../src/data/indexed.js';
import { seeded } from '../helpers/seed.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-indexed-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const SCRIPT = fileURLToPath(new URL('../../scripts/write-megatron-indexed.py', import.meta.url));
const hasNumpy = spawnSync('/usr/bin/python3', ['-c', 'import numpy']).status === 0;

/** Random documents of 1–3 sequences of 0–40 tokens below `vocab`. */
function documents(random: () => number, count: number, vocab: number): number[][][] {
  return Array.from({ length: count }, () =>
    Array.from({ length: 1 + Math.floor(random() * 3) }, () =>
      Array.from({ length: Math.floor(random() * 41) }, () => Math.floor(random() * vocab)),
    ),
  );
}

function readAll(prefix: string): number[][] {
  const ds = IndexedDataset.open(prefix);
  try {
    return Array.from({ length: ds.documentCount }, (_, d) => [...ds.document(d)]);
  } finally {
    ds.close();
  }
}

describe('Megatron indexed dataset', () => {
  it.each(['uint16', 'int32'] as const)('%s: what the builder writes reads back document by document', (dtype) => {
    const { random } = seeded(`indexed round trip ${dtype}`);
    const vocab = dtype === 'uint16' ? 50257 : 200_000;
    const docs = documents(random, 60, vocab);
    const prefix = join(dir, `round-${dtype}`);
    const builder = new IndexedDatasetBuilder(prefix, dtype);
    for (const doc of docs) builder.addDocument(doc);
    builder.finish();
    expect(readAll(prefix)).toEqual(docs.map((doc) => doc.flat()));
    const ds = IndexedDataset.open(prefix);
    expect([ds.dtype, ds.sequenceCount, ds.documentCount]).toEqual([dtype, docs.flat().length, docs.length]);
    expect([...ds.sequence(3)]).toEqual(docs.flat()[3]);
    ds.close();
  });

  it('reads files written by an independent writer (numpy), int32 and uint16, several sequences per document', (context) => {
    if (!hasNumpy) {
      console.log('skipped: /usr/bin/python3 has no numpy (apt-get install python3-numpy)');
      return context.skip();
    }
    const { random } = seeded('indexed independent writer');
    for (const [dtype, vocab] of [
      ['int32', 1_000_000],
      ['uint16', 65_536],
    ] as const) {
      const docs = documents(random, 40, vocab);
      const prefix = join(dir, `numpy-${dtype}`);
      writeFileSync(join(dir, 'spec.json'), JSON.stringify({ prefix, dtype, documents: docs }));
      const run = spawnSync('/usr/bin/python3', [SCRIPT, join(dir, 'spec.json')], { encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(0);
      expect(readAll(prefix)).toEqual(docs.map((doc) => doc.flat()));
      // and webtron's writer writes the same bytes
      const ours = join(dir, `ours-${dtype}`);
      const builder = new IndexedDatasetBuilder(ours, dtype);
      for (const doc of docs) builder.addDocument(doc);
      builder.finish();
      for (const ext of ['.bin', '.idx']) expect(readFileSync(`${ours}${ext}`).equals(readFileSync(`${prefix}${ext}`)), ext).toBe(true);
    }
  });

  it('a damaged index or data file is one DataError that names the file', () => {
    const prefix = join(dir, 'good');
    const builder = new IndexedDatasetBuilder(prefix, 'uint16');
    builder.addDocument([
      [1, 2, 3],
      [4, 5],
    ]);
    builder.addDocument([[6, 7, 8, 9]]);
    builder.finish();
    const good = readFileSync(`${prefix}.idx`);
    const damaged = (name: string, bytes: Uint8Array) => {
      const p = join(dir, name);
      writeFileSync(`${p}.idx`, bytes);
      writeFileSync(`${p}.bin`, readFileSync(`${prefix}.bin`));
      return p;
    };
    const magic = Uint8Array.from(good);
    magic[0] = 0x58;
    expect(() => IndexedDataset.open(damaged('magic', magic))).toThrow(/magic\.idx: bad magic \(expected "MMIDIDX"\)/);
    expect(() => IndexedDataset.open(damaged('short', good.subarray(0, good.byteLength - 5)))).toThrow(
      /short\.idx: truncated: 3 sequences and 3 document boundaries need \d+ bytes/,
    );
    const far = Uint8Array.from(good);
    new DataView(far.buffer).setBigInt64(34 + 4 * 3 + 8 * 2, 1000n, true); // the third sequence's pointer (after the 34-byte header)
    expect(() => IndexedDataset.open(damaged('far', far))).toThrow(
      /far\.idx: sequence 2 \(bytes 1000\.\.1008\) runs past the end of .*far\.bin \(18 bytes\)/,
    );
    const cut = damaged('cut', good);
    truncateSync(`${cut}.bin`, 10);
    expect(() => IndexedDataset.open(cut)).toThrow(DataError);
    expect(() => IndexedDataset.open(join(dir, 'absent'))).toThrow(
      /absent\.idx: no such file; give the prefix of a Megatron indexed dataset/,
    );
  });

  it('an unfinished build replaces nothing, and Megatron picks uint16 while the vocabulary fits', () => {
    const prefix = join(dir, 'kept');
    const first = new IndexedDatasetBuilder(prefix, 'uint16');
    first.addDocument([[1, 2]]);
    first.finish();
    const second = new IndexedDatasetBuilder(prefix, 'uint16');
    second.addDocument([[3, 4, 5]]);
    second.abort();
    expect(readAll(prefix)).toEqual([[1, 2]]);
    expect(existsSync(`${prefix}.bin.tmp-${process.pid}`)).toBe(false);
    expect([tokenDtypeFor(50257), tokenDtypeFor(65536), tokenDtypeFor(65537)]).toEqual(['uint16', 'uint16', 'int32']);
  });
});
