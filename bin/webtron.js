#!/usr/bin/env node
// Entry point of the `webtron` command. The CLI runs in a child process whose stderr passes through
// here line by line, less Dawn's two start-up notices about limits it lowers (written by native code
// straight to file descriptor 2, which nothing in-process can filter); every other line, Dawn's real
// errors included, is forwarded unchanged. The child exits when this process dies (the lifeline),
// gets SIGINT, SIGTERM and SIGHUP once each from here (it runs in its own process group, so a
// terminal's Ctrl-C is not delivered twice), and always exits (Dawn keeps the event loop alive).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('webtron: not built yet — run `npm run setup` in the webtron folder first');
  process.exit(1);
}

const { DAWN_NOTICE } = await import(new URL('../dist/src/gpu/dawn-notice.js', import.meta.url).href);

if (process.env.WEBTRON_CLI_CHILD === '1') {
  delete process.env.WEBTRON_CLI_CHILD;
  const { main } = await import(cli.href);
  try {
    process.exit(await main(process.argv.slice(2)));
  } catch (error) {
    // webtron's own errors were printed as one line by main(); anything else is a bug in webtron.
    const trace = error instanceof Error ? (error.stack ?? error.message) : String(error);
    console.error(`webtron: internal error — a bug in webtron, not in what you gave it; please report it with this trace:\n${trace}`);
    process.exit(1);
  }
} else {
  const lifeline = fileURLToPath(new URL('../dist/src/train/lifeline.js', import.meta.url));
  const child = spawn(
    process.execPath,
    [...process.execArgv, '--import', lifeline, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: ['inherit', 'inherit', 'pipe', 'pipe'],
      detached: true,
      env: {
        ...process.env,
        WEBTRON_CLI_CHILD: '1',
        WEBTRON_LIFELINE_FD: '3',
        ...(process.stderr.isTTY ? { WEBTRON_STDERR_TTY: '1' } : {}),
      },
    },
  );
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  let partial = '';
  child.stderr.on('data', (chunk) => {
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop();
    const kept = lines.filter((line) => !DAWN_NOTICE.test(line));
    if (kept.length > 0) process.stderr.write(`${kept.join('\n')}\n`);
  });
  child.on('error', (error) => {
    console.error(`webtron: cannot start the CLI process: ${error.message}`);
    process.exit(1);
  });
  child.on('close', (code, signal) => {
    if (partial && !DAWN_NOTICE.test(partial)) process.stderr.write(partial);
    process.exit(code ?? 128 + (constants.signals[signal] ?? 1));
  });
}
