/**
 * --tensorboard-dir: the event file read back by a reader written here from the formats' specs (a
 * TFRecord deframer with its own bitwise CRC-32C, and a protobuf wire-format decoder for the Event
 * and Summary fields), not by webtron's writer code, and checked against metrics.jsonl.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { IterationTiming } from '../../src/train/timing.js';
import { dir, TINY, train } from '../helpers/train.js';

/** CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), bit by bit. */
function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

const masked = (crc: number) => (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;

/** The whole records of a TFRecord file, every CRC checked; a cut last record is left out. */
function records(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 12 <= file.length) {
    const length = Number(file.readBigUInt64LE(at));
    if (masked(crc32c(file.subarray(at, at + 8))) !== file.readUInt32LE(at + 8)) throw new Error(`bad length CRC at byte ${at}`);
    if (at + 12 + length + 4 > file.length) break; // cut mid-record
    const data = file.subarray(at + 12, at + 12 + length);
    if (masked(crc32c(data)) !== file.readUInt32LE(at + 12 + length)) throw new Error(`bad data CRC at byte ${at}`);
    out.push(data);
    at += 12 + length + 4;
  }
  return out;
}

/** Protobuf wire format: each field's number, wire type and raw value (varint as bigint, bytes, or 4/8 bytes). */
function fields(buf: Buffer): { field: number; wire: number; value: bigint | Buffer }[] {
  const out: { field: number; wire: number; value: bigint | Buffer }[] = [];
  let at = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[at++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result;
      shift += 7n;
    }
  };
  while (at < buf.length) {
    const key = Number(varint());
    const [field, wire] = [key >>> 3, key & 7];
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      out.push({ field, wire, value: buf.subarray(at, at + n) });
      at += n;
    } else if (wire === 2) {
      const n = Number(varint());
      out.push({ field, wire, value: buf.subarray(at, at + n) });
      at += n;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

interface Event {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Map<string, number>;
}

/** Event: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5; Summary.value = 1; Value: tag = 1, simple_value = 2 (float). */
function decodeEvent(data: Buffer): Event {
  const event: Event = { wallTime: NaN, step: 0, scalars: new Map() };
  for (const f of fields(data)) {
    if (f.field === 1) event.wallTime = (f.value as Buffer).readDoubleLE(0);
    if (f.field === 2) event.step = Number(f.value as bigint);
    if (f.field === 3) event.fileVersion = (f.value as Buffer).toString('utf8');
    if (f.field === 5) {
      for (const v of fields(f.value as Buffer).filter((x) => x.field === 1)) {
        const parts = fields(v.value as Buffer);
        const tag = (parts.find((p) => p.field === 1)!.value as Buffer).toString('utf8');
        event.scalars.set(tag, (parts.find((p) => p.field === 2)!.value as Buffer).readFloatLE(0));
      }
    }
  }
  return event;
}

describe('--tensorboard-dir', () => {
  it("rank 0's event file holds Megatron's tags with metrics.jsonl's values, every CRC right; a file cut anywhere yields its whole records", async () => {
    expect(masked(crc32c(Buffer.from('123456789')))).toBe(masked(0xe3069283)); // CRC-32C's check value
    const base = dir();
    const tb = join(base, 'tb');
    const r = await train([
      ...TINY,
      '--train-iters',
      '4',
      '--global-batch-size',
      '4',
      '--nproc-per-node',
      '2',
      '--eval-interval',
      '2',
      '--tensorboard-dir',
      tb,
      '--log-memory-to-tensorboard',
      '--log-params-norm',
      '--log-validation-ppl-to-tensorboard',
      '--log-timers-to-tensorboard',
      '--log-num-zeros-in-grad',
      '--timing',
      '--run-dir',
      join(base, 'run'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const files = readdirSync(tb);
    expect(files).toHaveLength(1); // only rank 0 writes
    expect(files[0]).toMatch(/^events\.out\.tfevents\.\d+\..+\.webtron$/);
    const file = readFileSync(join(tb, files[0]!));
    const events = records(file).map(decodeEvent);
    expect(events[0]!.fileVersion).toBe('brain.Event:2');
    const metrics = readFileSync(join(base, 'run', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            iteration: number;
            consumed_samples: number;
            loss?: number;
            lr?: number;
            grad_norm?: number;
            params_norm?: number;
            val_loss?: number;
            num_zeros?: number;
            timing?: IterationTiming;
          },
      );
    const at = (step: number, tag: string) => events.find((e) => e.step === step && e.scalars.has(tag))?.scalars.get(tag);
    for (const m of metrics) {
      // --log-interval 1: each metrics line is one iteration's; simple_value is a float32.
      expect(at(m.iteration, 'lm loss'), `lm loss at ${m.iteration}`).toBe(Math.fround(m.loss!));
      expect(at(m.iteration, 'grad-norm')).toBe(Math.fround(m.grad_norm!));
      expect(at(m.iteration, 'learning-rate')).toBe(Math.fround(m.lr!));
      expect(at(m.iteration, 'batch-size')).toBe(4);
      expect(m.params_norm).toBeGreaterThan(0);
      expect(at(m.iteration, 'params-norm')).toBe(Math.fround(m.params_norm!));
      expect(Number.isInteger(m.num_zeros)).toBe(true);
      expect(at(m.iteration, 'num-zeros')).toBe(m.num_zeros);
      // Times after the first iteration (Megatron's set-up aside): the step's, and each timed phase's.
      if (m.iteration === 1) expect(at(1, 'iteration-time')).toBeUndefined();
      else expect(at(m.iteration, 'iteration-time')).toBeGreaterThan(0);
      for (const [phase, ms] of Object.entries(m.timing!.phases))
        expect(at(m.iteration, `${phase}-time`), `${phase} at ${m.iteration}`).toBe(m.iteration === 1 ? undefined : Math.fround(ms / 1000));
      expect(at(m.iteration, 'mem-allocated-bytes')).toBeGreaterThan(0);
      expect(at(m.iteration, 'mem-params-bytes')).toBeGreaterThan(0);
      expect(at(m.consumed_samples, 'lm loss vs samples')).toBe(Math.fround(m.loss!));
      if (m.val_loss !== undefined) {
        expect(at(m.iteration, 'lm loss validation')).toBe(Math.fround(m.val_loss));
        expect(at(m.iteration, 'lm loss validation ppl')).toBe(Math.fround(Math.exp(m.val_loss)));
        expect(at(m.consumed_samples, 'lm loss validation vs samples')).toBe(Math.fround(m.val_loss));
        expect(at(m.consumed_samples, 'lm loss validation ppl vs samples')).toBe(Math.fround(Math.exp(m.val_loss)));
      }
    }
    expect(metrics.filter((m) => m.val_loss !== undefined).map((m) => m.iteration)).toEqual([2, 4]);
    expect(r.stdout).toMatch(/ grad norm: [\d.]+ \| num zeros: \d+\.0 \| params norm: [\d.]+ \|/);
    expect(events.every((e) => e.wallTime > 1.7e9)).toBe(true);
    // Cut anywhere inside the last record: every record before it is still read, CRCs and all.
    const whole = records(file).length;
    const lastStart = file.length - (12 + records(file).at(-1)!.length + 4);
    for (let cut = lastStart; cut < file.length; cut += 3) expect(records(file.subarray(0, cut)), `cut at ${cut}`).toHaveLength(whole - 1);
  });

  it.each([
    [['--log-memory-to-tensorboard'], /^webtron train: --log-memory-to-tensorboard needs --tensorboard-dir \(where to write\)$/],
    [['--log-timers-to-tensorboard'], /^webtron train: --log-timers-to-tensorboard needs --tensorboard-dir \(where to write\)$/],
    [
      ['--tensorboard-dir', 'package.json'],
      /^webtron train: --tensorboard-dir: package\.json is a file; give a folder \(it is made if missing\)$/,
    ],
  ])('%j is refused in one line', async (flags, says) => {
    const r = await train([...TINY, '--train-iters', '4', ...flags]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(says);
  });
});
