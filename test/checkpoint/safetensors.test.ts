import { closeSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BLOCK_BYTES, BlockChecksums, verifyBlocks } from '../../src/checkpoint/blocks.js';
import { encodeHeader, encodeSafetensors, parseHeaderJson, readHeader } from '../../src/checkpoint/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-st-'));

/** Write bytes to a file and read its header back. */
function headerOf(name: string, bytes: Uint8Array) {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  const fd = openSync(path, 'r');
  try {
    return readHeader(fd, path);
  } finally {
    closeSync(fd);
  }
}

/** A file whose header is `json` (any text) followed by `dataBytes` zero bytes. */
function crafted(json: string, dataBytes = 16, lengthField?: bigint): Buffer {
  const body = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(lengthField ?? BigInt(body.byteLength));
  return Buffer.concat([prefix, body, Buffer.alloc(dataBytes)]);
}

describe('safetensors', () => {
  it('round-trips dtypes and shapes; the data starts 8-byte aligned', () => {
    const w = Float32Array.from([1.5, -2, 3e-8, 4]);
    const h = new Uint16Array([0x3f80, 0x4000, 0x4040]);
    const bytes = encodeSafetensors(
      [
        { name: 'w', dtype: 'F32', shape: [2, 2], data: w },
        { name: 'h', dtype: 'BF16', shape: [3], data: h },
      ],
      { kind: 'test' },
    );
    const header = headerOf('ok.safetensors', bytes);
    expect(header.dataStart % 8).toBe(0);
    expect(header.metadata).toEqual({ kind: 'test' });
    const e = header.entries.get('w')!;
    expect(e).toMatchObject({ dtype: 'F32', shape: [2, 2], begin: 0, end: 16 });
    expect(
      new Float32Array(bytes.buffer.slice(bytes.byteOffset + header.dataStart + e.begin, bytes.byteOffset + header.dataStart + e.end)),
    ).toEqual(w);
    expect(header.entries.get('h')).toMatchObject({ dtype: 'BF16', shape: [3], begin: 16, end: 22 });
    expect(encodeHeader([{ name: 'x', dtype: 'F16', shape: [0] }]).entries[0]).toMatchObject({ begin: 0, end: 0 });
  });

  it.each([
    ['a null header', 'null', /the safetensors header is not a JSON object/],
    ['a list header', '[1]', /the safetensors header is not a JSON object/],
    ['not JSON', '{"w":', /the safetensors header is not JSON/],
    ['a null entry', '{"w":null}', /tensor 'w': entry is not an object/],
    ['an unknown dtype', '{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}', /tensor 'w': unknown dtype "F33"/],
    [
      'a negative dim',
      '{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}',
      /tensor 'w': shape \[-2\] is not a list of non-negative integers/,
    ],
    [
      'negative offsets',
      '{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}',
      /tensor 'w': data_offsets \[-8,0\] are not two non-negative integers/,
    ],
    [
      'offsets past the data',
      '{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}',
      /tensor 'w': data_offsets \[0, 32\] lie outside the file's 16 data bytes/,
    ],
    ['reversed offsets', '{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', /tensor 'w': data_offsets \[8, 0\] lie outside/],
    [
      'a shape that disagrees with the bytes',
      '{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
      /tensor 'w': shape \[3\] of F32 needs more than 12 B but data_offsets \[0, 8\] hold 8/,
    ],
    [
      'a shape whose product overflows',
      '{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}}',
      /tensor 'w': shape \[4294967296, 4294967296, 4294967296\] of F32 needs more than/,
    ],
    ['metadata that is not strings', '{"__metadata__":{"a":1}}', /'__metadata__' must be an object of strings/],
  ])('%s is a CheckpointError naming the file and the tensor', (_what, json, message) => {
    expect(() => headerOf('bad.safetensors', crafted(json))).toThrow(message);
    try {
      headerOf('bad.safetensors', crafted(json));
    } catch (error) {
      expect((error as Error).name).toBe('CheckpointError');
      expect((error as Error).message.startsWith(join(dir, 'bad.safetensors'))).toBe(true);
    }
  });

  it("a header length past the file (or the format's limit) is refused before anything is allocated for it", () => {
    expect(() => headerOf('long.safetensors', crafted('{}', 0, 2n ** 62n))).toThrow(
      /header length 4611686018427387904 runs past the end of the file \(10 B\)/,
    );
    expect(() => headerOf('short.safetensors', new Uint8Array(5))).toThrow(/not a safetensors file \(5 B\)/);
    expect(() => parseHeaderJson('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 'x', 8, 8)).not.toThrow();
  });

  it('block checksums: any byte changed in any block is found, whatever the pieces it arrived in', () => {
    const data = Uint8Array.from({ length: BLOCK_BYTES * 2 + 1000 }, (_, i) => (i * 31) % 251);
    const whole = new BlockChecksums();
    whole.push(data);
    const pieces = new BlockChecksums();
    for (let at = 0; at < data.byteLength; at += 999_983) pieces.push(data.subarray(at, at + 999_983));
    expect(pieces.finish()).toEqual(whole.finish());
    expect(whole.finish()).toHaveLength(3);
    verifyBlocks(data.subarray(BLOCK_BYTES), 1, whole.finish(), 'f');
    const bad = data.slice();
    bad[BLOCK_BYTES + 7]! ^= 1;
    expect(() => verifyBlocks(bad, 0, whole.finish(), 'f')).toThrow(
      `f: bytes ${BLOCK_BYTES}..${2 * BLOCK_BYTES} do not match their checksum in index.json`,
    );
  });
});
