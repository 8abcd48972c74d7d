/**
 * Reading torch.save's files without Python: the pickle reader refereed by Python's own pickle
 * module, and the zip archive by torch's own files and Python's zipfile.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type PickleValue,
  PyCall,
  PyFloat,
  PyGlobal,
  PyObject,
  PyPersistent,
  PyTuple,
  pickle,
  unpickle,
} from '../../src/checkpoint/pickle.js';
import { type TensorRef, TorchArchive, writeTorchArchive } from '../../src/checkpoint/torch-archive.js';
import { torchReferee } from '../helpers/apt.js';
import { PYTHON } from '../helpers/python.js';

const dir = mkdtempSync(join(tmpdir(), 'webtron-torch-archive-'));
const torch = torchReferee();
const skipWithoutTorch = torch.skipWithout;

beforeAll(() => {
  torch.find();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the pickle reader', () => {
  it("reads what Python's pickle writes, protocols 2 to 5: ints of any size and sign, floats, text, bytes, containers, shared objects, unknown classes", (context) => {
    skipWithoutTorch(context);
    // Python writes the pickles and, beside each, its own reading of them as tagged JSON.
    const script = String.raw`
import json, pickle, sys, argparse, collections
shared = [7]
value = [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**53, -2**53 - 1, 2**64, -2**64, 2**100, -129,
         3.5, -0.25, 1.5e-300, 'text', 'ünïcödé ✓', b'\x00\xff', bytearray(b'ab'), True, False, None, (1, 2), (1, 2, 3), (1,), (),
         [], {}, {'a': [1, {'b': 2.5}]}, {1: 'one', 'two': 2}, {3, 1, 2}, frozenset({5}), shared, shared,
         argparse.Namespace(num_layers=2, lr=1.5e-4, data_path=['x']), collections.OrderedDict([('k', 1)])]
def tag(v):
    if isinstance(v, bool) or v is None: return v
    if isinstance(v, int): return {'int': str(v)}
    if isinstance(v, float): return v
    if isinstance(v, str): return v
    if isinstance(v, (bytes, bytearray)): return {'bytes': v.hex()}
    if isinstance(v, (list, tuple)): return [tag(x) for x in v]
    if isinstance(v, dict): return {'dict': [[tag(k), tag(x)] for k, x in v.items()]}
    if isinstance(v, (set, frozenset)): return {'set': sorted(tag(x)['int'] for x in v)}
    if isinstance(v, argparse.Namespace): return {'call': 'argparse.Namespace', 'state': {k: tag(x) for k, x in vars(v).items()}}
    raise TypeError(type(v))
out = {'want': tag(value), 'pickles': {p: pickle.dumps(value, protocol=p).hex() for p in (2, 3, 4, 5)}}
json.dump(out, sys.stdout)
`;
    const run = spawnSync(PYTHON, ['-c', script], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const { want, pickles } = JSON.parse(run.stdout) as { want: unknown; pickles: Record<string, string> };
    const tag = (v: unknown): unknown => {
      if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
      if (typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v))) return { int: String(v) };
      if (typeof v === 'number') return v;
      if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') };
      if (Array.isArray(v)) return v.map(tag);
      if (v instanceof Map) return { dict: [...v].map(([k, x]) => [tag(k), tag(x)]) };
      if (v instanceof Set) return { set: [...v].map((x) => String(x)).sort() };
      const call = v as { $call: string; args: unknown[]; [k: string]: unknown };
      const { $call, args, ...state } = call;
      expect(args).toEqual([]);
      return { call: $call, state: Object.fromEntries(Object.entries(state).map(([k, x]) => [k, tag(x)])) };
    };
    for (const [protocol, hex] of Object.entries(pickles)) {
      const got = unpickle(Buffer.from(hex, 'hex'), { globals: { 'collections.OrderedDict': () => new Map() } }) as unknown[];
      // The shared list is one object, as in Python.
      expect(got[got.length - 3], `protocol ${protocol}`).toBe(got[got.length - 4]);
      expect(tag(got), `protocol ${protocol}`).toEqual(want);
    }
    // A pickle cut short is an error naming where, not a wrong value.
    expect(() => unpickle(Buffer.from(pickles['2']!, 'hex').subarray(0, 40))).toThrow(/ends inside|pops an empty stack|no mark/);
  });
});

describe("torch.save's archive", () => {
  it("reads torch's fp32, fp16 and bf16 tensors, a view at an offset among them, from a plain archive and from its records rewritten as zip64 (which Python's zipfile checks)", async (context) => {
    skipWithoutTorch(context);
    const plain = join(dir, 'tensors.pt');
    const script = String.raw`
import io, json, sys, zipfile, torch
torch.manual_seed(3)
base = torch.randn(6, 5)
tensors = {'f32': base, 'f16': torch.randn(3, 4).half(), 'bf16': torch.randn(7).bfloat16(), 'view': base[2:4]}
torch.save(tensors, sys.argv[1])
records = [[i.filename, zipfile.ZipFile(sys.argv[1]).read(i).hex()] for i in zipfile.ZipFile(sys.argv[1]).infolist()]
json.dump({'want': {k: v.float().flatten().tolist() for k, v in tensors.items()}, 'records': records}, sys.stdout)
`;
    const run = spawnSync(PYTHON, ['-c', script, plain], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const { want, records } = JSON.parse(run.stdout) as { want: Record<string, number[]>; records: [string, string][] };
    // The same records in a zip64 archive, checked by Python's zipfile (CRCs and sizes).
    const wide = join(dir, 'tensors64.pt');
    await writeTorchArchive(
      wide,
      records.map(([name, hex]) => ({ name, bytes: () => Buffer.from(hex, 'hex') })),
      { zip64: true },
    );
    const check = spawnSync(PYTHON, ['-c', 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).testzip())', wide], {
      encoding: 'utf8',
    });
    expect(check.stdout.trim(), check.stderr).toBe('None');
    for (const file of [plain, wide]) {
      const archive = TorchArchive.open(file);
      try {
        const root = archive.load() as Map<string, TensorRef>;
        for (const [name, values] of Object.entries(want)) {
          const got = archive.read(root.get(name)!, name);
          expect(Array.from(got), `${file} ${name}`).toEqual(values.map((v) => Math.fround(v)));
        }
      } finally {
        archive.close();
      }
    }
  });
});

describe('writing for torch.load', () => {
  it("pickle's output is what Python's pickle reads back: ints of any size and sign, floats, text, lists, tuples, dicts, a namespace, globals", (context) => {
    skipWithoutTorch(context);
    const value: PickleValue = [
      0,
      -1,
      2 ** 31 - 1,
      2 ** 31,
      -(2 ** 31),
      -(2 ** 31) - 1,
      2 ** 53,
      2n ** 64n,
      -(2n ** 100n),
      -129,
      0.1,
      new PyFloat(3),
      -0,
      'ünïcödé ✓',
      true,
      false,
      null,
      [],
      new PyTuple([1, 'a']),
      new Map<PickleValue, PickleValue>([
        ['k', [1, 2]],
        [7, 'seven'],
      ]),
      new PyObject(new PyGlobal('argparse', 'Namespace'), new Map<string, PickleValue>([['num_layers', 2]])),
      new PyGlobal('collections', 'OrderedDict'),
    ];
    const script = String.raw`
import json, pickle, sys
v = pickle.loads(bytes.fromhex(sys.stdin.read()))
def tag(x):
    if isinstance(x, bool) or x is None or isinstance(x, str): return x
    if isinstance(x, int): return {'int': str(x)}
    if isinstance(x, float): return {'float': repr(x)}
    if isinstance(x, tuple): return {'tuple': [tag(y) for y in x]}
    if isinstance(x, list): return [tag(y) for y in x]
    if isinstance(x, dict): return {'dict': [[tag(k), tag(y)] for k, y in x.items()]}
    if isinstance(x, type): return {'global': x.__module__ + '.' + x.__name__}
    return {'object': type(x).__module__ + '.' + type(x).__name__, 'state': {k: tag(y) for k, y in vars(x).items()}}
json.dump(tag(v), sys.stdout)
`;
    const run = spawnSync(PYTHON, ['-c', script], { input: Buffer.from(pickle(value)).toString('hex'), encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const int = (v: number | bigint) => ({ int: String(v) });
    expect(JSON.parse(run.stdout)).toEqual([
      ...[0, -1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 53, 2n ** 64n, -(2n ** 100n), -129].map(int),
      { float: '0.1' },
      { float: '3.0' },
      { float: '-0.0' },
      'ünïcödé ✓',
      true,
      false,
      null,
      [],
      { tuple: [int(1), 'a'] },
      {
        dict: [
          ['k', [int(1), int(2)]],
          [int(7), 'seven'],
        ],
      },
      { object: 'argparse.Namespace', state: { num_layers: int(2) } },
      { global: 'collections.OrderedDict' },
    ]);
    // And webtron's reader reads back what it wrote.
    const back = unpickle(pickle(value)) as unknown[];
    // Past 2^53 - 1 an int reads as a bigint, so that no digit is lost.
    expect(back.slice(0, 10)).toEqual([0, -1, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2n ** 53n, 2n ** 64n, -(2n ** 100n), -129]);
  });

  it('writeTorchArchive: torch.load reads the tensors it holds, with zip64 fields everywhere or only where needed, and Python checks every CRC', async (context) => {
    skipWithoutTorch(context);
    const values = Float32Array.from({ length: 12 }, (_, i) => i / 3 - 1);
    const storage = new PyPersistent(new PyTuple(['storage', new PyGlobal('torch', 'FloatStorage'), '0', 'cpu', 12]));
    const tensor = new PyCall(new PyGlobal('torch._utils', '_rebuild_tensor_v2'), [
      storage,
      2,
      new PyTuple([2, 5]),
      new PyTuple([5, 1]),
      false,
      new PyCall(new PyGlobal('collections', 'OrderedDict'), []),
    ]);
    const state = new Map<PickleValue, PickleValue>([
      ['w', tensor],
      ['iteration', 7],
    ]);
    for (const zip64 of [false, true]) {
      const file = join(dir, `written-${zip64}.pt`);
      await writeTorchArchive(
        file,
        [
          { name: 'archive/data.pkl', bytes: () => pickle(state) },
          { name: 'archive/byteorder', bytes: () => new TextEncoder().encode('little') },
          { name: 'archive/data/0', bytes: () => new Uint8Array(values.buffer) },
          { name: 'archive/version', bytes: () => new TextEncoder().encode('3\n') },
        ],
        { zip64 },
      );
      const script = String.raw`
import json, sys, zipfile, torch
assert zipfile.ZipFile(sys.argv[1]).testzip() is None
sd = torch.load(sys.argv[1])
print(json.dumps({'w': sd['w'].flatten().tolist(), 'shape': list(sd['w'].shape), 'iteration': sd['iteration']}))
`;
      const run = spawnSync(PYTHON, ['-c', script, file], { encoding: 'utf8' });
      expect(run.status, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual({ w: Array.from(values.subarray(2, 12)), shape: [2, 5], iteration: 7 });
    }
  });
});
