/**
 * Set up for every file that runs beside another (vitest.config.ts): the jobs it starts without a
 * port of their own (the examples, the docs' commands) meet at a store port of this file's own, taken
 * from the kernel's free ports, instead of both files' jobs at the default 29500 at once.
 */
import { freePort } from './job.js';

process.env.MASTER_PORT ??= String(await freePort());
