// Exit 0 when Dawn finds a WebGPU adapter (and print which), 1 when it does not.
// Used by scripts/setup.sh; Dawn's own "Couldn't load Vulkan" warnings go to stderr untouched.
import { findAdapter } from '../src/gpu/adapter.js';

const found = await findAdapter({}).catch(() => null);
if (found) {
  process.stderr.write(`webtron setup: WebGPU adapter: ${found.description}\n`);
  process.exit(0);
}
process.exit(1);
