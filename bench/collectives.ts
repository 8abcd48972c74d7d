/**
 * `npm run bench -- collectives [--world N[,N...]] [--json]`: webtron's ring all_reduce, reduce_scatter and
 * all_gather from 1 KiB to 256 MiB with real worker processes on this machine, and in the same run
 * the wire's limits between two processes over plain sockets with large writes (one-way, and both
 * directions at once as every ring step does). Bandwidths follow nccl-tests: `bytes` is the whole
 * buffer, algbw = bytes / time, busbw = algbw·2(n−1)/n for all_reduce and algbw·(n−1)/n for
 * reduce_scatter and all_gather. `--hosts` runs each rank in a network namespace of its own on a
 * bridge (test/helpers/hosts.ts, root only) and the wire between the same namespaces, so the
 * ratio holds across a real network stack (veth) and not only loopback.
 *
 * `vs_wire`: each op's busbw over the faster of p2p_exchange and p2p_exchange_inplace (GB/s each
 * way): the faster exchange is the one of higher median rate over the rounds, and the op is compared
 * with it round by round, the median over rounds — every round runs the ops and then the wire, so a
 * slow second on a shared machine slows both sides of a ratio. `vs_wire_round_min` divides instead
 * by the faster exchange of each round: the minimum of two noisy times is biased low, so it reads a
 * few percent under `vs_wire`.
 */
import { median } from './timing.js';
import { fileURLToPath } from 'node:url';
import { FlagError } from '../src/cli/flags.js';
import type { Bench } from './bench.js';
import { hostsUnavailable, TestHosts } from '../test/helpers/hosts.js';
import { startRanks } from './ranks.js';
import { progress, type Row } from './report.js';

const WORKER = fileURLToPath(new URL('./collectives-worker.js', import.meta.url));

export function sizesBetween(min: number, max: number): number[] {
  const sizes: number[] = [];
  for (let s = min; s <= max; s *= 4) sizes.push(s);
  return sizes;
}

export const collectivesBench: Bench = {
  name: 'collectives',
  summary: 'ring all_reduce / reduce_scatter / all_gather over TCP vs the wire (plain sockets)',
  columns: ['op', 'world', 'link', 'bytes', 'ms', 'algbw_gbps', 'busbw_gbps', 'gbps', 'vs_wire', 'vs_wire_round_min', 'vs_tcp'],
  flags: {
    // A list, like the optimizer benchmark's --world: `npm run bench` parses one set of flags for all.
    world: { kind: 'list', default: ['2'], help: 'worker processes (ranks), one or a list' },
    'min-bytes': { kind: 'int', default: 1024, help: 'smallest buffer' },
    'max-bytes': { kind: 'int', default: 256 << 20, help: 'largest buffer' },
    gpu: {
      kind: 'boolean',
      help: "also DDP's grad sync of a bucket of each size on the GPU: readback, collective and upload (grad_sync, grad_sync_unpipelined, grad_sync_all_reduce)",
    },
    websocket: {
      kind: 'boolean',
      help: 'also the same ops over WebSocket links (WEBTRON_TRANSPORT=ws, the link of browser ranks): link loopback-ws, vs_tcp against the TCP ring',
    },
    hosts: {
      kind: 'boolean',
      help: 'one rank per network namespace on a bridge (veth; root only), the wire measured between the same namespaces',
    },
  },
  async run(_env, flags) {
    const sizes = sizesBetween(flags['min-bytes'] as number, flags['max-bytes'] as number);
    const rows: Row[] = [];
    for (const text of flags.world as string[]) {
      const world = Number(text);
      if (!Number.isInteger(world) || world < 2) throw new FlagError(`--world: '${text}' is not a rank count of 2 or more`);
      const gpu = flags.gpu as boolean;
      if (!flags.hosts) {
        const tcp = await runWorld(world, sizes, gpu);
        rows.push(...tcp);
        if (flags.websocket) rows.push(...withVsTcp(await runWorld(world, sizes, false, undefined, 'ws'), tcp));
        continue;
      }
      const why = hostsUnavailable();
      if (why) throw new FlagError(`--hosts: ${why}`);
      const hosts = TestHosts.make(world);
      try {
        rows.push(...(await runWorld(world, sizes, gpu, hosts)));
      } finally {
        hosts.teardown();
      }
    }
    return rows;
  },
};

/**
 * An op's busbw over the wire's GB/s each way, from per-round times (ms) of the op and of both
 * exchanges over the same bytes: `vs_wire` against the exchange of lower median time, round by
 * round; `vs_wire_round_min` against the faster exchange of each round. Medians over rounds.
 * `factor` is the op's busbw factor (2(n−1)/n for all_reduce, (n−1)/n otherwise).
 */
export function wireRatios(
  op: number[],
  plain: number[],
  inplace: number[],
  factor: number,
): { vs_wire: number; vs_wire_round_min: number } {
  const wire = median(plain) <= median(inplace) ? plain : inplace;
  // busbw / wire GB/s in round i = (bytes·factor / t) / (bytes / wire time).
  return {
    vs_wire: median(op.map((t, i) => (factor * wire[i]!) / t)),
    vs_wire_round_min: median(op.map((t, i) => (factor * Math.min(plain[i]!, inplace[i]!)) / t)),
  };
}

/** WebSocket rows with their busbw over the TCP ring's at the same op and size. */
function withVsTcp(ws: Row[], tcp: Row[]): Row[] {
  return ws.map((row) => {
    const same = tcp.find((t) => t.op === row.op && t.bytes === row.bytes && t.world === row.world);
    return same?.busbw_gbps ? { ...row, vs_tcp: (row.busbw_gbps as number) / (same.busbw_gbps as number) } : row;
  });
}

/**
 * One world size: its ring ops and, between ranks 0 and 1, the wire; on `hosts`, one rank per
 * namespace. Over WebSocket links (`link` 'ws') the ring ops only.
 */
async function runWorld(world: number, sizes: number[], gpu: boolean, hosts?: TestHosts, transport: 'tcp' | 'ws' = 'tcp'): Promise<Row[]> {
  const rows: Row[] = [];
  progress(
    `collectives: ${world} ranks${hosts ? ' on hosts of their own (veth)' : ''}${transport === 'ws' ? ' over WebSocket links' : ''}, ${sizes.length} sizes from ${sizes[0]} B to ${sizes.at(-1)} B`,
  );
  const placement = hosts ? { namespaces: hosts.hosts.map((h) => h.ns), addresses: hosts.hosts.map((h) => h.address) } : undefined;
  const config = {
    sizes,
    ops: ['all_reduce', 'reduce_scatter', 'all_gather'],
    wireMin: transport === 'ws' ? Number.MAX_SAFE_INTEGER : 1 << 20,
    gpu,
  };
  const ranks = startRanks(WORKER, world, config, placement, transport === 'ws' ? { WEBTRON_TRANSPORT: 'ws' } : {});
  const link = hosts ? 'veth' : transport === 'ws' ? 'loopback-ws' : 'loopback';
  ranks[0]!.onLine((l) => progress(`${l.op as string} ${l.bytes as number} B: ${(l.ms as number).toFixed(2)} ms`));
  await Promise.all(ranks.map((r) => r.done));
  const lines = ranks[0]!.lines;
  const samplesOf = (op: string, bytes: number) => lines.find((l) => l.op === op && l.bytes === bytes)?.samples_ms as number[] | undefined;
  for (const l of lines) {
    const bytes = l.bytes as number;
    const ms = l.ms as number;
    const op = l.op as string;
    if (op.startsWith('p2p_')) {
      // One-way: bytes moved one way. Exchange: bytes moved each way (GB/s per direction).
      rows.push({ bench: 'collectives', op, world: 2, link, bytes, ms, gbps: bytes / ms / 1e6 });
      continue;
    }
    const algbw = bytes / ms / 1e6;
    const factor = op.endsWith('all_reduce') ? (2 * (world - 1)) / world : (world - 1) / world;
    const row: Row = { bench: 'collectives', op, world, link, bytes, ms, algbw_gbps: algbw, busbw_gbps: algbw * factor };
    const own = l.samples_ms as number[];
    const [plain, inplace] = [samplesOf('p2p_exchange', bytes), samplesOf('p2p_exchange_inplace', bytes)];
    if (plain && inplace && plain.length === own.length && inplace.length === own.length)
      Object.assign(row, wireRatios(own, plain, inplace, factor));
    rows.push(row);
  }
  return rows;
}
