/** The life of one benchmark rank: join the job, run, wait for the others, leave; any error exits 1 with its stack. */
import { type Distributed, initProcessGroup } from '../src/collectives/init.js';

export function runRank(timeoutMs: number, body: (dist: Distributed) => Promise<void>): void {
  (async () => {
    const dist = await initProcessGroup({ timeoutMs });
    await body(dist);
    await dist.group.barrier();
    await dist.close();
  })().then(
    () => process.exit(0),
    (error: Error) => {
      process.stderr.write(`${error.stack ?? error.message}\n`);
      process.exit(1);
    },
  );
}
