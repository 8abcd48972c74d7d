/** A worker that ignores SIGTERM and SIGINT and runs until killed (test/train/launcher.test.ts). */
process.on('SIGTERM', () => process.stdout.write(`${JSON.stringify({ ignored: 'SIGTERM', pid: process.pid })}\n`));
process.on('SIGINT', () => process.stdout.write(`${JSON.stringify({ ignored: 'SIGINT', pid: process.pid })}\n`));
process.stdout.write(`${JSON.stringify({ started: true, rank: Number(process.env.RANK), pid: process.pid })}\n`);
if (process.argv[2] === 'segv' && process.env.RANK === '1') {
  process.stderr.write('rank 1 about to crash\n');
  setTimeout(() => process.kill(process.pid, 'SIGSEGV'), 300);
}
setInterval(() => undefined, 1000);
