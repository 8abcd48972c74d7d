/**
 * Preloaded into every worker `webtron launch` starts (`node --import …/lifeline.js`): the launcher
 * passes one end of a socket pair as fd WEBTRON_LIFELINE_FD and never writes to it. When the
 * launcher dies, however it dies (SIGKILL included), the kernel closes its end and this worker reads
 * end-of-file: it stops at once instead of running on without anyone to stop it.
 *
 * The same socket carries the worker's status back to a launcher that asks for it
 * (WEBTRON_LIFELINE_STATUS=1): one JSON object per line, the iteration reached and the checkpoints
 * loaded and committed, so that a restart can say what it resumes and what it trains again.
 */
import net from 'node:net';

/** What a worker tells its launcher. */
export type WorkerStatus = { iteration: number } | { checkpoint: string; iteration: number };

let status: net.Socket | null = null;

const fd = Number(process.env.WEBTRON_LIFELINE_FD);
if (Number.isInteger(fd) && fd > 2) {
  const reports = process.env.WEBTRON_LIFELINE_STATUS === '1';
  delete process.env.WEBTRON_LIFELINE_FD; // not for grandchildren
  delete process.env.WEBTRON_LIFELINE_STATUS;
  const lifeline = new net.Socket({ fd, readable: true, writable: reports });
  const stop = () => {
    process.stderr.write(`webtron: rank ${process.env.RANK ?? '?'} stops: its launcher (pid ${process.ppid}) is gone\n`);
    process.exit(1);
  };
  lifeline.on('end', stop);
  lifeline.on('error', stop);
  lifeline.on('data', () => undefined);
  lifeline.unref(); // never what keeps a finished worker alive
  if (reports) status = lifeline;
}

/** This process is a worker of webtron's launcher, which reads its status and its failures. */
export function reportsToLauncher(): boolean {
  return status !== null;
}

/** Tell the launcher where this worker stands (nothing when no launcher asked). */
export function tellLauncher(report: WorkerStatus): void {
  status?.write(`${JSON.stringify(report)}\n`);
}
