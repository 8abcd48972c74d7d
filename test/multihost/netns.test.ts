/**
 * `webtron train` across hosts with network stacks of their own: two network namespaces joined by a
 * bridge (test/helpers/hosts.ts), one node per namespace, each started as a user starts a node
 * (`--nnodes 2 --node-rank i --master-addr 192.0.2.1`). The job's losses equal a single-node run
 * with the same global batch; every listening socket is bound to the node's own address, by the
 * route to the master or by WEBTRON_SOCKET_IFNAME, never to every interface; a node with another
 * job token cannot join, and both sides say so. Root only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finished, hostsUnavailable, TestHosts } from '../helpers/hosts.js';
import { BIN, dir, expectSameLosses, losses, TINY, train } from '../helpers/train.js';
import { join } from 'node:path';

const unavailable = hostsUnavailable();
if (unavailable) console.log(`skipped: multi-host tests need network namespaces: ${unavailable}`);
let hosts: TestHosts | null = null;
beforeAll(() => {
  if (!unavailable) hosts = TestHosts.make(2);
});
afterAll(() => hosts?.teardown());

const JOB = [...TINY, '--train-iters', '6', '--global-batch-size', '4', '--hidden-dropout', '0', '--attention-dropout', '0'];

/** One node per host; returns both nodes' results and every listening socket seen in each host while the job ran. */
async function twoNodes(runDir: string, envOf: (i: number) => NodeJS.ProcessEnv, extra: string[] = []) {
  const h = hosts!;
  const nodes = [0, 1].map((i) =>
    h.spawn(
      i,
      'node',
      [
        BIN,
        'train',
        ...JOB,
        '--use-distributed-optimizer',
        '--nnodes',
        '2',
        '--node-rank',
        String(i),
        '--master-addr',
        '192.0.2.1',
        '--run-dir',
        runDir,
        ...extra,
      ],
      envOf(i),
    ),
  );
  const ends = nodes.map(finished);
  const seen = [new Set<string>(), new Set<string>()];
  let done = false;
  void Promise.all(ends).then(() => (done = true));
  while (!done) {
    for (const i of [0, 1]) for (const s of h.listening(i)) seen[i]!.add(s);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { results: await Promise.all(ends), seen };
}

describe.skipIf(unavailable !== null)('webtron train on two hosts (network namespaces)', () => {
  it('the losses of a single-node run; each node listens on its own address only, by the route to the master or by WEBTRON_SOCKET_IFNAME', async () => {
    const base = dir();
    const single = await train([...JOB, '--nproc-per-node', '2', '--use-distributed-optimizer', '--run-dir', join(base, 'single')]);
    expect(single.code, single.stderr).toBe(0);
    const token = { WEBTRON_JOB_TOKEN: 'a-test-token-shared-by-both-nodes' };
    for (const [name, envOf] of [
      ['route', () => token],
      ['ifname', (i: number) => ({ ...token, WEBTRON_SOCKET_IFNAME: hosts!.hosts[i]!.ifname })],
    ] as const) {
      const { results, seen } = await twoNodes(join(base, name), envOf);
      results.forEach((r, i) => expect(r.code, `${name}: node ${i}: ${r.stderr}`).toBe(0));
      expectSameLosses(losses(join(base, 'single')), losses(join(base, name)), 1e-6, `two hosts (${name}) vs one`);
      for (const i of [0, 1]) {
        const own = hosts!.hosts[i]!.address;
        expect(seen[i]!.size, `${name}: node ${i} listened nowhere`).toBeGreaterThan(0);
        for (const socket of seen[i]!) expect(socket.split(':')[0], `${name}: node ${i} listens on ${socket}`).toBe(own);
      }
    }
  });

  it('a node with another job token cannot join, and both nodes say so', async () => {
    const base = dir();
    const quick = { WEBTRON_JOIN_TIMEOUT_MS: '8000' };
    const { results } = await twoNodes(join(base, 'tokens'), (i) => ({
      ...quick,
      WEBTRON_JOB_TOKEN: i === 0 ? 'the-job-token-of-node-zero' : 'another-token-entirely',
    }));
    const [node0, node1] = results;
    expect(node1!.code).not.toBe(0);
    expect(node1!.stderr).toMatch(/store at 192\.0\.2\.1:29500 refused this client: .*wrong WEBTRON_JOB_TOKEN/);
    expect(node0!.code).not.toBe(0);
    expect(node0!.stderr).toMatch(/refused connection from 192\.0\.2\.2:\d+: wrong or missing job token/);
  });
});
