/**
 * Bundles the browser worker (src/browser/worker.ts) and its page (src/browser/page.ts) into
 * dist/browser/ with esbuild, at build time. Node's modules become the shims in src/browser/shims/:
 * files over the launcher, WebGPU from the browser, WebSockets from the browser, hashes from
 * @noble/hashes, Buffer and EventEmitter from their browser packages.
 */
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const shim = (name) => `${root}src/browser/shims/${name}.ts`;
const unavailable = shim('unavailable');
const alias = {
  fs: shim('fs'),
  'node:fs': shim('fs'),
  'node:fs/promises': shim('fs-promises'),
  path: 'pathe',
  'node:path': 'pathe',
  crypto: shim('crypto'),
  'node:crypto': shim('crypto'),
  os: shim('os'),
  'node:os': shim('os'),
  url: shim('url'),
  'node:url': shim('url'),
  util: shim('util'),
  'node:util': shim('util'),
  'node:zlib': shim('zlib'),
  'node:module': shim('module'),
  events: 'events',
  'node:events': 'events',
  'node:net': unavailable,
  'node:http': unavailable,
  'node:dgram': unavailable,
  'node:dns/promises': unavailable,
  'node:child_process': unavailable,
  worker_threads: unavailable,
  'node:worker_threads': unavailable,
  ws: shim('ws'),
  webgpu: shim('webgpu'),
  'write-file-atomic': shim('write-file-atomic'),
};

await build({
  entryPoints: { worker: `${root}src/browser/worker.ts`, page: `${root}src/browser/page.ts` },
  outdir: `${root}dist/browser`,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: false,
  alias,
  inject: [shim('process')],
  define: { 'import.meta.url': '"file:///@webtron/dist/browser/worker.js"' },
  logLevel: 'warning',
  legalComments: 'none',
});
