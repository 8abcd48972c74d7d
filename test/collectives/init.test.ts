import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { bindAddress, interfaceAddress, resolveInfo, routeAddress } from '../../src/collectives/init.js';

describe('init: environment conventions and the bind address', () => {
  it('reads torchrun variables, falls back to Slurm, and prefers explicit options', () => {
    expect(
      resolveInfo({}, { RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'head', MASTER_PORT: '1234' }),
    ).toEqual({
      rank: 3,
      worldSize: 8,
      localRank: 1,
      localWorldSize: 2,
      masterAddr: 'head',
      masterPort: 1234,
    });
    expect(resolveInfo({}, { SLURM_PROCID: '5', SLURM_NTASKS: '6', SLURM_LOCALID: '1', SLURM_NTASKS_PER_NODE: '3' })).toMatchObject({
      rank: 5,
      worldSize: 6,
      localRank: 1,
      localWorldSize: 3,
      masterPort: 29500,
    });
    expect(resolveInfo({ rank: 0, worldSize: 1 }, { RANK: '3', WORLD_SIZE: '8' })).toMatchObject({ rank: 0, worldSize: 1 });
    expect(() => resolveInfo({}, { RANK: '4', WORLD_SIZE: '4' })).toThrow('rank 4 is not below the world size 4 (RANK, WORLD_SIZE)');
    expect(() => resolveInfo({}, { RANK: 'x' })).toThrow("RANK='x' is not a non-negative integer");
  });

  it('binds to the route towards MASTER_ADDR, an interface by name, or an explicit address — never to every interface', async () => {
    expect(await routeAddress('127.0.0.1')).toBe('127.0.0.1');
    expect(await bindAddress({}, {}, '127.0.0.1')).toBe('127.0.0.1');
    const loopback = Object.entries(os.networkInterfaces()).find(([, a]) => a?.some((x) => x.internal && x.family === 'IPv4'))!;
    expect(interfaceAddress(loopback[0])).toBe('127.0.0.1');
    expect(await bindAddress({}, { WEBTRON_SOCKET_IFNAME: loopback[0] }, '10.1.2.3')).toBe('127.0.0.1');
    expect(await bindAddress({ bind: '127.0.0.5' }, { WEBTRON_SOCKET_IFNAME: loopback[0] }, '10.1.2.3')).toBe('127.0.0.5');
    expect(() => interfaceAddress('nope0')).toThrow(/WEBTRON_SOCKET_IFNAME: no interface named 'nope0'; this host has /);
    expect(await bindAddress({}, {}, '127.0.0.1')).not.toBe('0.0.0.0');
  });
});
