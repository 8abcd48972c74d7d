/**
 * TensorBoard event files (--tensorboard-dir): TFRecord framing of `Event` protos carrying scalar
 * summaries, as TensorBoard's readers expect.
 *
 * A record is the payload's length (uint64, little-endian), the masked CRC-32C of those 8 bytes, the
 * payload, and the masked CRC-32C of the payload; a masked CRC is ((crc >>> 15) | (crc << 17)) +
 * 0xa282ead8. Each record goes to the file in one write, so a run killed at any moment leaves a file
 * TensorBoard reads up to its last whole record. The first record is the version event.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import CRC32C from 'crc-32/crc32c.js';
import protobuf from 'protobufjs';

/**
 * The messages webtron writes, with the field numbers of TensorBoard's own
 * `tensorboard/compat/proto/event.proto` and `summary.proto` (the fields left out are not written).
 */
const SCHEMA = `
syntax = "proto3";
package tensorboard;
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
  }
}
message Summary {
  message Value {
    string tag = 1;
    oneof value {
      float simple_value = 2;
    }
  }
  repeated Value value = 1;
}
`;

const Event = protobuf.parse(SCHEMA).root.lookupType('tensorboard.Event');

/** The masked CRC-32C TFRecord puts after the length and after the payload. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = CRC32C.buf(bytes) >>> 0;
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, its masked CRC, the payload, its masked CRC. */
export function tfRecord(payload: Uint8Array): Buffer {
  const record = Buffer.alloc(8 + 4 + payload.length + 4);
  record.writeBigUInt64LE(BigInt(payload.length), 0);
  record.writeUInt32LE(maskedCrc32c(record.subarray(0, 8)), 8);
  record.set(payload, 12);
  record.writeUInt32LE(maskedCrc32c(payload), 12 + payload.length);
  return record;
}

export class TensorBoardWriter {
  readonly path: string;
  private fd: number | null;

  /** A new event file in `dir` (made if missing), named as TensorBoard looks for them. */
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    this.path = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.webtron`);
    this.fd = openSync(this.path, 'wx');
    this.write({ wallTime: now, fileVersion: 'brain.Event:2' });
  }

  /** Scalars of one step, as one event. Non-finite values are written as they are (TensorBoard shows them). */
  scalars(step: number, values: Record<string, number>): void {
    const value = Object.entries(values).map(([tag, simpleValue]) => ({ tag, simpleValue }));
    if (value.length > 0) this.write({ wallTime: Date.now() / 1000, step, summary: { value } });
  }

  /** Make what was written durable (at a checkpoint and at the end). */
  flush(): void {
    if (this.fd !== null) fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    this.flush();
    closeSync(this.fd);
    this.fd = null;
  }

  private write(event: Record<string, unknown>): void {
    if (this.fd === null) return;
    const record = tfRecord(Event.encode(Event.fromObject(event)).finish());
    writeSync(this.fd, record);
  }
}
