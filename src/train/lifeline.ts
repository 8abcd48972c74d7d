/**
 * Preloaded into every worker `webtron launch` starts (`node --import …/lifeline.js`): the launcher
 * passes the read end of a pipe as fd WEBTRON_LIFELINE_FD and never writes to it. When the launcher
 * dies, however it dies (SIGKILL included), the kernel closes the write end and this worker reads
 * end-of-file: it stops at once instead of running on without anyone to stop it.
 */
import net from 'node:net';

const fd = Number(process.env.WEBTRON_LIFELINE_FD);
if (Number.isInteger(fd) && fd > 2) {
  delete process.env.WEBTRON_LIFELINE_FD; // not for grandchildren
  const lifeline = new net.Socket({ fd, readable: true, writable: false });
  const stop = () => {
    process.stderr.write(`webtron: rank ${process.env.RANK ?? '?'} stops: its launcher (pid ${process.ppid}) is gone\n`);
    process.exit(1);
  };
  lifeline.on('end', stop);
  lifeline.on('error', stop);
  lifeline.on('data', () => undefined);
  lifeline.unref(); // never what keeps a finished worker alive
}
