/** What a browser worker's page, its worker thread and its launcher say to each other. Pure types and names. */
import type { TrainConfig } from './config.js';

/** The launcher's answer to a tab that joined with a valid join token. */
export interface JoinAnswer {
  rank: number;
  worldSize: number;
  /** The secret the tab uses for its own requests to the launcher (header x-webtron-session). */
  session: string;
  /** The run's resolved flags, the same every Node rank trains with. */
  config: TrainConfig;
  /** The worker's environment: RANK, WORLD_SIZE, MASTER_ADDR, WEBTRON_JOB_TOKEN, and the job's WEBTRON_* settings. */
  env: Record<string, string>;
}

/** Page → worker thread: start with this. */
export interface StartMessage {
  base: string;
  join: JoinAnswer;
}

/** Worker thread → page. */
export type WorkerReport =
  | { kind: 'adapter'; description: string }
  | { kind: 'log'; line: string }
  | { kind: 'iteration'; iteration: number; trainIters: number; loss: number; rankLoss: number }
  | { kind: 'done'; ok: boolean; message: string };

/** Worker thread → launcher, on the control WebSocket: how the rank ended. */
export interface ExitReport {
  exit: number;
  message: string;
}

/** Launcher → worker thread, on the control WebSocket: a dialer waits at the relay under this id. */
export interface AcceptRequest {
  accept: string;
  from: string;
}

export const SESSION_HEADER = 'x-webtron-session';
