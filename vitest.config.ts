import { defineConfig } from 'vitest/config';
import './test/helpers/quiet-dawn.js';

/**
 * Files whose tests start several worker processes that watch each other with op and join timeouts
 * (collectives, launches, nodes, restarts, browser tabs): they run one at a time, after the rest, so
 * that a second file's load never stretches a healthy op past a timeout the test sets short.
 */
const ONE_AT_A_TIME = [
  'test/train/**/*.test.ts',
  'test/multihost/**/*.test.ts',
  'test/collectives/**/*.test.ts',
  'test/checkpoint/**/*.test.ts',
  'test/browser/**/*.test.ts',
];

export default defineConfig({
  test: {
    // One GPU context per test file (each file runs in its own process); lavapipe is slow.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    globalSetup: ['./test/helpers/global-setup.ts'],
    projects: [
      {
        extends: true,
        // The rest, two files at a time: a file of one process leaves the second core idle half the time.
        test: {
          name: 'two at a time',
          maxWorkers: 2,
          include: ['test/**/*.test.ts'],
          exclude: ONE_AT_A_TIME,
          setupFiles: ['./test/helpers/own-port.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: 'one at a time', include: ONE_AT_A_TIME, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
