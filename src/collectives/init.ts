/**
 * Process-group initialisation with the conventions of torchrun, Slurm and Kubernetes training
 * operators: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (Slurm's
 * SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID as fallbacks, and the first host of SLURM_JOB_NODELIST
 * as the master), or explicit options. Rank 0 serves the
 * store at MASTER_ADDR:MASTER_PORT unless a launcher already does (WEBTRON_STORE_EXTERNAL=1).
 */
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import os from 'node:os';
import { CollectiveError, JoinError } from './errors.js';
import { FRAME_VERSION } from './frame.js';
import { effectiveSegmentBytes, ProcessGroup } from './process-group.js';
import { jobToken, slurmMaster } from './slurm.js';
import { StoreClient, StoreServer } from './store.js';
import type { ByteStream } from './auth.js';
import { peerAddressKey, settingsMismatch, Transport, TRANSPORT_LINKS, type TransportLink, type TransportListener } from './transport.js';

/** Where each shared setting comes from, for error messages. */
const SETTING_SOURCES: Record<string, string> = {
  segmentBytes: 'WEBTRON_SEGMENT_BYTES',
  protocol: 'the webtron version',
};

/**
 * Every rank's published settings against this rank's: the first difference as one error that
 * names the setting, where it comes from, and the ranks' values. Pure.
 */
export function checkSharedSettings(mine: Record<string, number | string>, published: { rank: number; settings: unknown }[]): void {
  for (const { rank, settings } of published) {
    const mismatch = settingsMismatch(mine, settings, `rank ${rank}`);
    if (!mismatch) continue;
    const key = /^setting (\S+)/.exec(mismatch)![1]!;
    const values = published.map((p) => `rank ${p.rank}: ${String((p.settings as Record<string, unknown> | undefined)?.[key])}`).join(', ');
    throw new CollectiveError(
      `ranks disagree on ${key} (${SETTING_SOURCES[key] ?? 'a shared setting'}): ${values}; give every rank the same value`,
    );
  }
}

/** How long a store host that failed to join keeps serving the others' last questions. */
const STORE_GRACE_MS = 2000;

export interface InitOptions {
  rank?: number;
  worldSize?: number;
  localRank?: number;
  localWorldSize?: number;
  masterAddr?: string;
  masterPort?: number;
  /** The job's secret; default WEBTRON_JOB_TOKEN. Required when the world has more than one rank. */
  token?: string;
  /** Address to listen on; default WEBTRON_BIND, else WEBTRON_SOCKET_IFNAME's address, else the route to MASTER_ADDR. */
  bind?: string;
  /** Network interface name whose address to listen on (WEBTRON_SOCKET_IFNAME). */
  ifname?: string;
  /** Transport port of this rank; default 0 (the OS chooses). */
  port?: number;
  /** Per-op timeout (default WEBTRON_TIMEOUT_MS or 30 s). */
  timeoutMs?: number;
  /** How long to wait for every rank to join (default WEBTRON_JOIN_TIMEOUT_MS or 300 s). */
  joinTimeoutMs?: number;
  /** The store is served by a launcher, not by rank 0 (default WEBTRON_STORE_EXTERNAL=1). */
  storeExternal?: boolean;
  segmentBytes?: number;
  /** What this rank listens on: TCP, or WebSocket (default WEBTRON_TRANSPORT, else tcp). Its peers dial the link it publishes. */
  link?: TransportLink;
  /**
   * A browser tab's way into the job, which can neither listen nor open TCP: the store through a
   * WebSocket that its launcher joins to the store's port, and its connections through the
   * launcher's relay.
   */
  browser?: { openStore: () => Promise<ByteStream>; listener: TransportListener };
  log?: (line: string) => void;
}

export interface DistributedInfo {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

export interface Distributed {
  info: DistributedInfo;
  group: ProcessGroup;
  /** The store client (null for a world of one). */
  store: StoreClient | null;
  /** Rank 0's store server, when it serves one. */
  storeServer: StoreServer | null;
  /** Close the group, the store client and the store server. */
  close(): Promise<void>;
}

function intFrom(name: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0)
    throw new CollectiveError(`${name}='${value}' is not a non-negative integer; fix the environment or pass the option`);
  return n;
}

/** Rank, world and master from options, then torchrun's variables, then Slurm's. Pure. */
export function resolveInfo(options: InitOptions, env: NodeJS.ProcessEnv): DistributedInfo {
  const rank = options.rank ?? intFrom('RANK', env.RANK) ?? intFrom('SLURM_PROCID', env.SLURM_PROCID) ?? 0;
  const worldSize = options.worldSize ?? intFrom('WORLD_SIZE', env.WORLD_SIZE) ?? intFrom('SLURM_NTASKS', env.SLURM_NTASKS) ?? 1;
  const localRank = options.localRank ?? intFrom('LOCAL_RANK', env.LOCAL_RANK) ?? intFrom('SLURM_LOCALID', env.SLURM_LOCALID) ?? rank;
  const localWorldSize =
    options.localWorldSize ??
    intFrom('LOCAL_WORLD_SIZE', env.LOCAL_WORLD_SIZE) ??
    intFrom('SLURM_NTASKS_PER_NODE', env.SLURM_NTASKS_PER_NODE) ??
    worldSize;
  // Inside a Slurm job without MASTER_ADDR/MASTER_PORT: the first host of its node list and a port from its job id.
  const slurm = env.MASTER_ADDR && env.MASTER_PORT ? null : slurmMaster(env);
  const masterAddr = options.masterAddr ?? (env.MASTER_ADDR || slurm?.addr || '127.0.0.1');
  const masterPort = options.masterPort ?? intFrom('MASTER_PORT', env.MASTER_PORT) ?? slurm?.port ?? 29500;
  if (worldSize < 1) throw new CollectiveError(`world size must be at least 1, got ${worldSize} (WORLD_SIZE)`);
  if (rank >= worldSize) throw new CollectiveError(`rank ${rank} is not below the world size ${worldSize} (RANK, WORLD_SIZE)`);
  if (localRank >= localWorldSize)
    throw new CollectiveError(`local rank ${localRank} is not below the local world size ${localWorldSize} (LOCAL_RANK, LOCAL_WORLD_SIZE)`);
  if (masterPort > 65535) throw new CollectiveError(`MASTER_PORT ${masterPort} is not a TCP port`);
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort };
}

/** The local address of the route to `host` (no packet is sent). */
export async function routeAddress(host: string): Promise<string> {
  const { address, family } = await lookup(host);
  const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(9, address, () => resolve());
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

/** The IPv4 (else IPv6) address of interface `name`. */
export function interfaceAddress(name: string): string {
  const addresses = os.networkInterfaces()[name];
  if (!addresses || addresses.length === 0) {
    const known = Object.keys(os.networkInterfaces()).join(', ');
    throw new CollectiveError(`WEBTRON_SOCKET_IFNAME: no interface named '${name}'; this host has ${known}`);
  }
  return (addresses.find((a) => a.family === 'IPv4') ?? addresses[0]!).address;
}

export async function bindAddress(options: InitOptions, env: NodeJS.ProcessEnv, masterAddr: string): Promise<string> {
  const bind = options.bind ?? (env.WEBTRON_BIND || undefined);
  if (bind) return bind;
  const ifname = options.ifname ?? (env.WEBTRON_SOCKET_IFNAME || undefined);
  if (ifname) return interfaceAddress(ifname);
  return routeAddress(masterAddr);
}

/** Join the job: serve or reach the store, listen, publish this rank, and wait for every rank. */
export async function initProcessGroup(options: InitOptions = {}, env: NodeJS.ProcessEnv = process.env): Promise<Distributed> {
  const info = resolveInfo(options, env);
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const timeoutMs = options.timeoutMs ?? intFrom('WEBTRON_TIMEOUT_MS', env.WEBTRON_TIMEOUT_MS) ?? 30_000;
  const joinTimeoutMs = options.joinTimeoutMs ?? intFrom('WEBTRON_JOIN_TIMEOUT_MS', env.WEBTRON_JOIN_TIMEOUT_MS) ?? 300_000;
  if (info.worldSize === 1) {
    const group = new ProcessGroup(0, 1, null, { timeoutMs });
    return { info, group, store: null, storeServer: null, close: () => group.close() };
  }
  const token = options.token ?? jobToken(env);
  if (!token) {
    throw new CollectiveError(
      'WEBTRON_JOB_TOKEN is not set: give every worker the same secret (the `webtron` launcher generates one; in a Slurm job every task derives one from WEBTRON_JOB_TOKEN_FILE, default ~/.webtron/job-token), or pass { token }',
    );
  }
  const storeExternal = options.storeExternal ?? env.WEBTRON_STORE_EXTERNAL === '1';
  const segmentBytes = effectiveSegmentBytes(options.segmentBytes ?? intFrom('WEBTRON_SEGMENT_BYTES', env.WEBTRON_SEGMENT_BYTES));
  const link = options.link ?? env.WEBTRON_TRANSPORT ?? 'tcp';
  if (!(TRANSPORT_LINKS as readonly string[]).includes(link))
    throw new CollectiveError(`WEBTRON_TRANSPORT is '${link}'; the ranks' links are ${TRANSPORT_LINKS.join(' or ')}`);
  const settings = { segmentBytes, protocol: FRAME_VERSION };
  const { browser } = options;
  const masterIp = browser ? info.masterAddr : (await lookup(info.masterAddr)).address;
  const storeServer =
    info.rank === 0 && !storeExternal && !browser ? await StoreServer.start({ host: masterIp, port: info.masterPort, token, log }) : null;
  let store: StoreClient | null = null;
  let transport: Transport | null = null;
  try {
    store = await StoreClient.connect({
      host: masterIp,
      port: info.masterPort,
      token,
      connectTimeoutMs: joinTimeoutMs,
      ...(browser ? { open: browser.openStore } : {}),
    });
    const host = browser ? '' : await bindAddress(options, env, info.masterAddr);
    const round = env.WEBTRON_RESTART_COUNT ?? '0';
    transport = await Transport.start({
      rank: info.rank,
      worldSize: info.worldSize,
      token,
      host,
      port: options.port ?? 0,
      store,
      round,
      connectTimeoutMs: Math.min(joinTimeoutMs, 60_000),
      settings,
      link: link as TransportLink,
      ...(browser ? { listener: browser.listener } : {}),
      log,
    });
    await store.add(`webtron/${round}/joined`, 1);
    const keys = Array.from({ length: info.worldSize }, (_, r) => peerAddressKey(r, round));
    try {
      await store.wait(keys, joinTimeoutMs);
    } catch (error) {
      const present = await store.check(keys).catch(() => keys.map(() => false));
      const missing = keys.map((_, r) => r).filter((r) => !present[r]);
      throw new JoinError(
        `join timed out after ${joinTimeoutMs} ms: ${info.worldSize - missing.length}/${info.worldSize} workers joined; missing ranks: ${missing.join(', ')} (${(error as Error).message})`,
      );
    }
    // Settings that must match (the segment size decides every frame's length): the same error on every rank.
    const published = (await store.getMany(keys, joinTimeoutMs)).map((v, rank) => ({
      rank,
      settings: (JSON.parse(v.toString('utf8')) as { settings?: unknown }).settings,
    }));
    checkSharedSettings(settings, published);
    const group = new ProcessGroup(info.rank, info.worldSize, transport, { timeoutMs, segmentBytes });
    const client = store;
    return {
      info,
      group,
      store,
      storeServer,
      close: async () => {
        await group.close();
        client.close();
        await storeServer?.close();
      },
    };
  } catch (error) {
    await transport?.close();
    store?.close();
    // The other ranks time out at about the same moment and still ask the store who is missing.
    if (storeServer && error instanceof CollectiveError) await new Promise((r) => setTimeout(r, STORE_GRACE_MS));
    await storeServer?.close();
    throw error;
  }
}
