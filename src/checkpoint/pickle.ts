/**
 * A reader of Python pickles (protocols 2 to 5, what torch.save writes) that never runs Python: a
 * class or function the pickle names (GLOBAL, STACK_GLOBAL) is looked up in `globals`, and one not
 * there becomes a `PickleGlobal` that only records what it was called with (REDUCE, NEWOBJ) and the
 * state set on it (BUILD). Dicts become Maps, lists and tuples arrays, sets Sets, ints numbers (a
 * bigint past 2^53), bytes Uint8Arrays. Persistent ids (BINPERSID, torch's storages) go to
 * `persistent`.
 *
 * Written here rather than taken from npm: pickleparser 0.2.1 throws on an int of more than 8 bytes
 * (Python writes 2^64 and above that way) and reads a negative LONG1 as a positive number.
 */

/** A class or function a pickle names: never run, only named. Calling it gives a PickleCall. */
export interface PickleGlobal {
  (...args: unknown[]): PickleCall;
  readonly qualifiedName: string;
}

/** What calling (or constructing) a PickleGlobal gives: its name and arguments, then any state BUILD sets. */
export interface PickleCall {
  readonly $call: string;
  readonly args: unknown[];
  [state: string]: unknown;
}

export interface PickleOptions {
  /** Globals with meaning, by `module.name`: called for REDUCE and NEWOBJ with the pickled arguments. */
  globals?: Record<string, (...args: never[]) => unknown>;
  /** What a persistent id (BINPERSID) stands for. */
  persistent?: (pid: unknown) => unknown;
}

export class PickleError extends Error {
  override name = 'PickleError';
}

/** A global as an inert function that records its calls. */
function pickleGlobal(qualifiedName: string): PickleGlobal {
  const f = ((...args: unknown[]): PickleCall => ({ $call: qualifiedName, args })) as PickleGlobal;
  Object.defineProperty(f, 'qualifiedName', { value: qualifiedName });
  return f;
}

/** A little-endian two's-complement integer of `bytes` (LONG1, LONG4). */
function longOf(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(8 * bytes.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

const MARK = Symbol('mark');

/** Python's builtins that protocols 2 and 3 reach by REDUCE: sets, bytes (as latin-1 text) and bytearrays. */
const BUILTINS: Record<string, (...args: never[]) => unknown> = {};
const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
for (const module of ['builtins', '__builtin__']) {
  BUILTINS[`${module}.set`] = (items: unknown[] = []) => new Set(items);
  BUILTINS[`${module}.frozenset`] = (items: unknown[] = []) => new Set(items);
  BUILTINS[`${module}.bytearray`] = (value: string | Uint8Array = new Uint8Array(), encoding?: string) =>
    typeof value === 'string'
      ? encoding === 'latin-1' || encoding === 'latin1'
        ? latin1(value)
        : new TextEncoder().encode(value)
      : value.slice();
  BUILTINS[`${module}.bytes`] = (value: string | Uint8Array = new Uint8Array()) =>
    typeof value === 'string' ? latin1(value) : value.slice();
}
BUILTINS['_codecs.encode'] = (text: string, encoding: string) =>
  encoding === 'latin1' || encoding === 'latin-1' ? latin1(text) : new TextEncoder().encode(text);

/** Unpickle `data` (see the file's comment). Throws PickleError naming the opcode and its offset. */
export function unpickle(data: Uint8Array, options: PickleOptions = {}): unknown {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const text = new TextDecoder('utf-8');
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let at = 0;
  const need = (n: number) => {
    if (at + n > data.length) throw new PickleError(`the pickle ends inside an opcode at byte ${at} (${n} more bytes wanted)`);
    const start = at;
    at += n;
    return start;
  };
  const u8 = () => data[need(1)]!;
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = () => {
    const v = view.getBigUint64(need(8), true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PickleError(`a length of ${v} bytes at byte ${at - 8}`);
    return Number(v);
  };
  const bytes = (n: number) => data.subarray(need(n), at);
  const str = (n: number) => text.decode(bytes(n));
  const line = () => {
    const end = data.indexOf(0x0a, at);
    if (end < 0) throw new PickleError(`the pickle ends inside a text opcode at byte ${at}`);
    const s = new TextDecoder('latin1').decode(data.subarray(at, end));
    at = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) throw new PickleError(`the pickle pops an empty stack at byte ${at}`);
    return stack.pop();
  };
  const top = () => stack[stack.length - 1];
  /** The items above the topmost mark, which is removed. */
  const popMark = (): unknown[] => {
    const mark = stack.lastIndexOf(MARK);
    if (mark < 0) throw new PickleError(`the pickle has no mark to pop to at byte ${at}`);
    const items = stack.slice(mark + 1);
    stack.length = mark;
    return items;
  };
  const lookup = (module: string, name: string): unknown => {
    const key = `${module}.${name}`;
    const known = options.globals?.[key] ?? BUILTINS[key];
    if (!known) return pickleGlobal(key);
    const f = ((...args: never[]) => known(...args)) as unknown as PickleGlobal;
    Object.defineProperty(f, 'qualifiedName', { value: key });
    return f;
  };
  const call = (f: unknown, args: unknown): unknown => {
    if (typeof f !== 'function') throw new PickleError(`the pickle calls a ${typeof f} at byte ${at}`);
    return (f as (...a: unknown[]) => unknown)(...(args as unknown[]));
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (!(target instanceof Map)) throw new PickleError(`the pickle sets items of a ${typeof target} at byte ${at}`);
    for (let i = 0; i + 1 < items.length; i += 2) target.set(items[i], items[i + 1]);
  };
  const append = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) throw new PickleError(`the pickle appends to a ${typeof target} at byte ${at}`);
    target.push(...items);
  };

  for (;;) {
    const offset = at;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(longOf(bytes(u8())));
        break;
      case 0x8b: // LONG4
        stack.push(longOf(bytes(u32())));
        break;
      case 0x49: {
        // INT (protocol 0; "01"/"00" are True/False)
        const s = line();
        stack.push(s === '01' ? true : s === '00' ? false : Number(s));
        break;
      }
      case 0x47: // BINFLOAT
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(str(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(str(u8()));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(str(u64()));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(new TextDecoder('latin1').decode(bytes(u8())));
        break;
      case 0x54: // BINSTRING
        stack.push(new TextDecoder('latin1').decode(bytes(u32())));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x8e: // BINBYTES8
        stack.push(bytes(u64()).slice());
        break;
      case 0x96: // BYTEARRAY8
        stack.push(bytes(u64()).slice());
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x8f: // EMPTY_SET
        stack.push(new Set());
        break;
      case 0x64: {
        // DICT
        const m = new Map();
        setItems(m, popMark());
        stack.push(m);
        break;
      }
      case 0x6c: // LIST
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x91: // FROZENSET
        stack.push(new Set(popMark()));
        break;
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        const set = top();
        if (!(set instanceof Set)) throw new PickleError(`the pickle adds items to a ${typeof set} at byte ${offset}`);
        for (const item of items) set.add(item);
        break;
      }
      case 0x61: {
        // APPEND
        const item = pop();
        append(top(), [item]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x73: {
        // SETITEM
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const key = op === 0x68 ? u8() : u32();
        if (!memo.has(key)) throw new PickleError(`the pickle gets memo ${key}, never put, at byte ${offset}`);
        stack.push(memo.get(key));
        break;
      }
      case 0x63: {
        // GLOBAL
        const module = line();
        stack.push(lookup(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        stack.push(lookup(String(pop()), String(name)));
        break;
      }
      case 0x52: // REDUCE
      case 0x81: {
        // NEWOBJ
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x92: {
        // NEWOBJ_EX
        pop(); // keyword arguments: none of the objects read here take any
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const target = top();
        const fields = Array.isArray(state) ? state[0] : state; // (dict, slots) or dict
        if (fields instanceof Map && typeof target === 'object' && target !== null && !(target instanceof Map))
          for (const [k, v] of fields) (target as Record<string, unknown>)[String(k)] = v;
        else if (typeof target === 'object' && target !== null && !(target instanceof Map))
          (target as Record<string, unknown>).$state = state;
        break;
      }
      case 0x51: // BINPERSID
        stack.push(options.persistent ? options.persistent(pop()) : pop());
        break;
      default:
        throw new PickleError(`opcode 0x${op.toString(16)} at byte ${offset} is not one webtron reads`);
    }
  }
}

// ------------------------------------------------------------------------------------ writing

/** A Python float where the number is whole (3.0 rather than 3). */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A Python tuple. */
export class PyTuple {
  constructor(readonly items: PickleValue[]) {}
}

/** A class or function by name (`torch.float32`, `argparse.Namespace`), not called. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}

/** `callable(*args)`, unpickled by calling it (REDUCE). */
export class PyCall {
  constructor(
    readonly callable: PyGlobal,
    readonly args: PickleValue[],
  ) {}
}

/** An instance of `cls` made without arguments, its attributes `state` (NEWOBJ, then BUILD). */
export class PyObject {
  constructor(
    readonly cls: PyGlobal,
    readonly state: Map<string, PickleValue>,
  ) {}
}

/** What the unpickler's persistent_load gets for `id` (BINPERSID): torch's storages. */
export class PyPersistent {
  constructor(readonly id: PickleValue) {}
}

export type PickleValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PickleValue[]
  | Map<PickleValue, PickleValue>
  | PyFloat
  | PyTuple
  | PyGlobal
  | PyCall
  | PyObject
  | PyPersistent;

/**
 * `value` as a protocol 2 pickle, what torch.save writes: JS integers as Python ints (BININT, or
 * LONG1 beyond 32 bits), other numbers and PyFloats as floats, arrays as lists, Maps as dicts. No
 * memo: every object is written where it occurs.
 */
export function pickle(value: PickleValue): Uint8Array {
  const chunks: Uint8Array[] = [Uint8Array.of(0x80, 2)];
  const op = (...bytes: number[]) => chunks.push(Uint8Array.from(bytes));
  const raw = (bytes: Uint8Array) => chunks.push(bytes);
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    return b;
  };
  const text = (s: string) => {
    const bytes = new TextEncoder().encode(s);
    op(0x58);
    raw(u32(bytes.length));
    raw(bytes);
  };
  const long = (v: bigint) => {
    const bytes: number[] = [];
    let x = v;
    // Little-endian two's complement, as short as keeps the sign.
    do {
      bytes.push(Number(x & 0xffn));
      x >>= 8n;
    } while (!((x === 0n && (bytes.at(-1)! & 0x80) === 0) || (x === -1n && (bytes.at(-1)! & 0x80) !== 0)));
    op(0x8a, bytes.length, ...bytes);
  };
  const float = (v: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, false);
    op(0x47);
    raw(b);
  };
  const global = (g: PyGlobal) => raw(new TextEncoder().encode(`c${g.module}\n${g.name}\n`));
  const write = (v: PickleValue): void => {
    if (v === null) op(0x4e);
    else if (v === true) op(0x88);
    else if (v === false) op(0x89);
    else if (typeof v === 'bigint') long(v);
    else if (typeof v === 'number') {
      if (!Number.isInteger(v) || Object.is(v, -0)) float(v);
      else if (v >= -(2 ** 31) && v < 2 ** 31) {
        op(0x4a);
        raw(u32(v >>> 0));
      } else long(BigInt(v));
    } else if (typeof v === 'string') text(v);
    else if (v instanceof PyFloat) float(v.value);
    else if (Array.isArray(v)) {
      op(0x5d);
      if (v.length > 0) {
        op(0x28);
        for (const item of v) write(item);
        op(0x65);
      }
    } else if (v instanceof Map) {
      op(0x7d);
      if (v.size > 0) {
        op(0x28);
        for (const [key, item] of v) {
          write(key);
          write(item);
        }
        op(0x75);
      }
    } else if (v instanceof PyTuple) {
      op(0x28);
      for (const item of v.items) write(item);
      op(0x74);
    } else if (v instanceof PyGlobal) global(v);
    else if (v instanceof PyCall) {
      global(v.callable);
      write(new PyTuple(v.args));
      op(0x52);
    } else if (v instanceof PyObject) {
      global(v.cls);
      op(0x29, 0x81);
      write(new Map<PickleValue, PickleValue>(v.state));
      op(0x62);
    } else if (v instanceof PyPersistent) {
      write(v.id);
      op(0x51);
    } else throw new PickleError(`pickle: ${String(v)} is no value webtron writes`);
  };
  write(value);
  op(0x2e);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
