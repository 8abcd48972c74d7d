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
import { BIN, dir, expectIdenticalLosses, expectSameLosses, losses, TINY, train } from '../helpers/train.js';
import { workerOfRank } from '../helpers/job.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const unavailable = hostsUnavailable();
if (unavailable) console.log(`skipped: multi-host tests need network namespaces: ${unavailable}`);
let hosts: TestHosts | null = null;
beforeAll(() => {
  if (!unavailable) hosts = TestHosts.make(2);
});
afterAll(() => hosts?.teardown());

const JOB = [...TINY, '--train-iters', '6', '--global-batch-size', '4', '--hidden-dropout', '0', '--attention-dropout', '0'];
/** Node i of the two-node job with the distributed optimizer, as a user starts it. */
const nodeFlags = (i: number) => ['--use-distributed-optimizer', '--nnodes', '2', '--node-rank', String(i), '--master-addr', '192.0.2.1'];

/** One node per host; returns both nodes' results and every listening socket seen in each host while the job ran. */
async function twoNodes(runDir: string, envOf: (i: number) => NodeJS.ProcessEnv, extra: string[] = []) {
  const h = hosts!;
  const nodes = [0, 1].map((i) => h.spawn(i, 'node', [BIN, 'train', ...JOB, ...nodeFlags(i), '--run-dir', runDir, ...extra], envOf(i)));
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
      for (const [i, r] of results.entries()) expect(r.code, `${name}: node ${i}: ${r.stderr}`).toBe(0);
      expectSameLosses(losses(join(base, 'single')), losses(join(base, name)), 1e-6, `two hosts (${name}) vs one`);
      for (const i of [0, 1]) {
        const own = hosts!.hosts[i]!.address;
        expect(seen[i]!.size, `${name}: node ${i} listened nowhere`).toBeGreaterThan(0);
        for (const socket of seen[i]!) expect(socket.split(':')[0], `${name}: node ${i} listens on ${socket}`).toBe(own);
      }
    }
  });

  it('--max-restarts 1 on two nodes: a worker of node 1 SIGKILLed, both nodes restart together through the store and end with the uninterrupted losses', async () => {
    const h = hosts!;
    const base = dir();
    const env = { WEBTRON_JOB_TOKEN: 'token-of-the-restarting-job', WEBTRON_TIMEOUT_MS: '4000', WEBTRON_STOP_GRACE_MS: '2000' };
    const flags = (i: number, name: string) => [
      BIN,
      'train',
      ...TINY,
      '--train-iters',
      '16',
      '--global-batch-size',
      '4',
      ...nodeFlags(i),
      '--save-interval',
      '4',
      '--save',
      join(base, `${name}-ckpt`),
      '--run-dir',
      join(base, name),
    ];
    const whole = await Promise.all([0, 1].map((i) => finished(h.spawn(i, 'node', flags(i, 'whole'), env))));
    for (const [i, r] of whole.entries()) expect(r.code, `uninterrupted, node ${i}: ${r.stderr}`).toBe(0);
    const nodes = [0, 1].map((i) => h.spawn(i, 'node', [...flags(i, 'run'), '--max-restarts', '1'], env));
    const ends = nodes.map(finished);
    await waitFor('the first checkpoint', () => existsSync(join(base, 'run-ckpt', 'iter_0000004', 'index.json')), 60_000);
    const worker = workerOfRank(h.pids(1), 1); // node 1's worker
    expect(worker).toBeDefined();
    process.kill(worker!, 'SIGKILL');
    const [node0, node1] = await Promise.all(ends);
    expect(node0!.code, `node 0: ${node0!.stderr}`).toBe(0);
    expect(node1!.code, `node 1: ${node1!.stderr}`).toBe(0);
    expect(node1!.stderr).toMatch(
      /webtron launch: rank 1 was killed by SIGKILL \(exit code 137\) after iteration \d+; restart 1 of 1: starting every worker again from \S+iter_\d{7} \(iteration \d+\)/,
    );
    expect(node0!.stderr).toMatch(
      /webtron launch: rank 0 exited with code 1 after iteration \d+; restart 1 of 1: starting every worker again from \S+iter_\d{7} \(iteration \d+\)/,
    );
    expectIdenticalLosses(losses(join(base, 'whole')), losses(join(base, 'run')));
    for (const i of [0, 1]) expect(h.pids(i), `processes left in host ${i}`).toEqual([]);
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
    expect(node0!.stderr).toMatch(/join timed out after 8000 ms: 1\/2 workers joined; missing ranks: 1/);
    console.log(`node 0:\n${node0!.stderr.trim()}\nnode 1:\n${node1!.stderr.trim()}`);
  });

  it('a node started without the job token is refused before it starts, and node 0 times out the join naming it', async () => {
    const base = dir();
    const { results } = await twoNodes(join(base, 'no-token'), (i) => ({
      WEBTRON_JOIN_TIMEOUT_MS: '5000',
      WEBTRON_JOB_TOKEN: i === 0 ? 'the-job-token-of-node-zero' : '',
    }));
    const [node0, node1] = results;
    expect(node1!.code).toBe(2);
    expect(node1!.stderr.trim()).toMatch(/^webtron train: .*a multi-node job needs the same WEBTRON_JOB_TOKEN on every node/);
    expect(node0!.code).not.toBe(0);
    expect(node0!.stderr).toMatch(/join timed out after 5000 ms: 1\/2 workers joined; missing ranks: 1/);
  });
});

/** Wait until `ok()` holds (polling every 100 ms), or fail after `ms`. */
async function waitFor(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(unavailable !== null)('links that fail mid-training', () => {
  const linkDown = (h: TestHosts) => h.run(1, 'ip', ['link', 'set', h.hosts[1]!.ifname, 'down']);
  // "during a save": every rank's writer of iteration 8's save stalls before its last file
  // (WEBTRON_FAULT_STALL_SAVE), and the fault comes once iter_0000008.tmp exists: always mid-save.
  it.each([
    ['the link set down', linkDown],
    ['the link set down during a save', linkDown],
    ['node 1 frozen (SIGSTOP)', (h: TestHosts) => h.signalAll(1, 'SIGSTOP')],
    ['node 1 killed', (h: TestHosts) => h.signalAll(1, 'SIGKILL')],
  ] as const)(
    '%s: every surviving rank stops within the op timeout naming op, bytes, itself and the peer; the last checkpoint resumes',
    async (name, fault) => {
      const h = hosts!;
      h.run(1, 'ip', ['link', 'set', h.hosts[1]!.ifname, 'up']);
      const base = dir();
      const save = join(base, 'ckpt');
      const duringSave = name.endsWith('during a save');
      const env = {
        WEBTRON_JOB_TOKEN: 'token-of-the-failing-job',
        WEBTRON_TIMEOUT_MS: '4000',
        WEBTRON_STOP_GRACE_MS: '2000',
        ...(duringSave ? { WEBTRON_FAULT_STALL_SAVE: '8' } : {}),
      };
      const nodes = [0, 1].map((i) =>
        h.spawn(
          i,
          'node',
          [
            BIN,
            'train',
            ...TINY,
            '--train-iters',
            '100000',
            '--global-batch-size',
            '4',
            ...nodeFlags(i),
            '--save',
            save,
            '--save-interval',
            '4',
            '--run-dir',
            join(base, 'run'),
          ],
          env,
        ),
      );
      const ends = nodes.map(finished);
      await waitFor('the first checkpoint', () => existsSync(join(save, 'iter_0000004', 'index.json')), 60_000);
      if (duringSave) await waitFor('the save of iteration 8 under way', () => existsSync(join(save, 'iter_0000008.tmp')), 60_000);
      const t0 = Date.now();
      fault(h);
      const node0 = await ends[0]!;
      const stoppedMs = Date.now() - t0;
      h.signalAll(1, 'SIGCONT'); // a frozen node wakes to a job that is gone
      const node1 = await ends[1]!;
      expect(node0.code).not.toBe(0);
      expect(node1.code).not.toBe(0);
      expect(stoppedMs).toBeLessThan(4000 + 2000 + 5000); // op timeout + grace + start of the stop
      const failed = (rank: number, peer: number) =>
        new RegExp(`(allReduce|reduceScatter|allGather|broadcast|barrier) of \\d+ B failed on rank ${rank} \\(peer rank ${peer}\\)`);
      expect(node0.stderr).toMatch(failed(0, 1));
      if (name.startsWith('the link set down')) expect(node1.stderr).toMatch(failed(1, 0)); // the other side of the link survives too
      if (duringSave)
        expect(node0.stderr).toMatch(
          /saving iteration 8 to \S+: allReduce of 8 B failed on rank 0 \(peer rank 1\): timed out after 4000 ms/,
        ); // the save's heartbeat
      console.log(`${name}: stopped in ${stoppedMs} ms\nnode 0:\n${node0.stderr.trim()}\nnode 1:\n${node1.stderr.trim()}`);
      for (const i of [0, 1]) expect(h.pids(i), `processes left in host ${i}`).toEqual([]);
      // The last complete checkpoint loads, and training goes on from it.
      const last = Number(readFileSync(join(save, 'latest_checkpointed_iteration.txt'), 'utf8'));
      const resumed = await train([
        ...TINY,
        '--global-batch-size',
        '4',
        '--use-distributed-optimizer',
        '--nproc-per-node',
        '2',
        '--load',
        save,
        '--train-iters',
        String(last + 2),
        '--override-opt_param-scheduler', // a shorter run than the checkpoint's 100000 iterations
        '--run-dir',
        join(base, 'resumed'),
      ]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stdout).toContain(`: iteration ${last}, ${last * 4} samples consumed`);
      expect([...losses(join(base, 'resumed')).keys()]).toEqual([last + 1, last + 2]);
    },
  );
});
