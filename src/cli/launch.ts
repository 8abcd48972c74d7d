/** `webtron launch`: this node's worker processes, torchrun style (src/train/launcher.ts). */
import { launch } from '../train/launcher.js';
import { ExitCode, type Command } from './command.js';

export const launchCommand: Command = {
  summary: "start this node's worker processes (torchrun style): webtron launch [flags] -- program.js [args]",
  flags: {
    'nproc-per-node': { kind: 'int', default: 1, help: 'workers on this node', underscored: true },
    nnodes: { kind: 'int', default: 1, env: 'WEBTRON_NNODES', help: 'nodes in the job' },
    'node-rank': {
      kind: 'int',
      default: 0,
      env: 'WEBTRON_NODE_RANK',
      help: "this node's index; node 0 serves the store",
      underscored: true,
    },
    'master-addr': { kind: 'string', default: '127.0.0.1', env: 'MASTER_ADDR', help: 'address of node 0 (the store)', underscored: true },
    'master-port': { kind: 'int', default: 29500, env: 'MASTER_PORT', help: 'store port on node 0', underscored: true },
    'max-restarts': {
      kind: 'int',
      default: 0,
      help: "torchrun's --max-restarts: when a worker fails, stop the others and start them all again (on every node, agreed through node 0's store)",
      underscored: true,
    },
    'stop-grace-ms': {
      kind: 'int',
      default: 10_000,
      env: 'WEBTRON_STOP_GRACE_MS',
      help: 'after Ctrl-C, SIGTERM or a failed worker, how long workers get before SIGKILL',
    },
  },
  async run(values, positional) {
    const code = await launch({
      nprocPerNode: values['nproc-per-node'] as number,
      nnodes: values.nnodes as number,
      nodeRank: values['node-rank'] as number,
      masterAddr: values['master-addr'] as string,
      masterPort: values['master-port'] as number,
      token: process.env.WEBTRON_JOB_TOKEN,
      command: positional,
      graceMs: values['stop-grace-ms'] as number,
      maxRestarts: values['max-restarts'] as number,
    });
    if (code !== 0) throw new ExitCode(code);
  },
};
