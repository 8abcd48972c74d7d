#!/usr/bin/env node
// Entry point of the `webtron` command: runs the compiled CLI and always exits (Dawn keeps the
// event loop alive otherwise).
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('webtron: not built yet — run `npm run setup` in the webtron folder first');
  process.exit(1);
}
const { main } = await import(cli.href);
try {
  process.exit(await main(process.argv.slice(2)));
} catch (error) {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
}
