/** A worker that ignores SIGTERM and SIGINT and runs until killed (test/train/launcher.test.ts). */
process.on('SIGTERM', () => process.stdout.write(`${JSON.stringify({ ignored: 'SIGTERM', pid: process.pid })}\n`));
process.on('SIGINT', () => process.stdout.write(`${JSON.stringify({ ignored: 'SIGINT', pid: process.pid })}\n`));
process.stdout.write(`${JSON.stringify({ started: true, rank: Number(process.env.RANK), pid: process.pid })}\n`);
if (process.argv[2] === 'segv' && process.env.RANK === '1') {
  process.stderr.write('rank 1 about to crash\n');
  setTimeout(() => process.kill(process.pid, 'SIGSEGV'), 300);
}
// 'peer-dies': rank 1 is killed; rank 0 exits with code 1 just before, as a rank whose peer's
// connection went away might when the launcher is slow to reap them (both are dead when it looks).
if (process.argv[2] === 'peer-dies') {
  if (process.env.RANK === '1') setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300);
  else
    setTimeout(() => {
      process.stderr.write('rank 0: connection to rank 1 lost\n');
      process.exit(1);
    }, 280);
}
setInterval(() => undefined, 1000);
