/**
 * Headless Chromium for the tests that load a page: Debian's `chromium` package, installed with apt
 * when missing (root only), driven by playwright-core.
 */
import { existsSync } from 'node:fs';
import { aptInstall } from './apt.js';

export const CHROMIUM = '/usr/bin/chromium';

/** Why Chromium cannot run here (after trying to install it), or null when it can. */
export function chromiumUnavailable(): string | null {
  if (existsSync(CHROMIUM)) return null;
  if (process.getuid?.() !== 0) return "not root, so Debian's chromium cannot be installed";
  console.log("installing Debian's chromium with apt-get for the dashboard test");
  const problem = aptInstall(['chromium']);
  if (problem) return problem;
  return existsSync(CHROMIUM) ? null : `apt-get installed chromium but ${CHROMIUM} is missing`;
}
