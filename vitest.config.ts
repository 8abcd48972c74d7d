import { defineConfig } from 'vitest/config';
import './test/helpers/quiet-dawn.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One GPU context per test file (each file runs in its own process); lavapipe is slow.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    globalSetup: ['./test/helpers/global-setup.ts'],
  },
});
