/**
 * A browser tab's rank, in a dedicated worker (no main-thread throttling when the tab is in the
 * background, and synchronous requests for the file shim are allowed). It runs the same
 * `runTraining` as every Node rank, with the browser's WebGPU, its files at the launcher, the
 * store through a WebSocket and its incoming connections relayed by the launcher.
 */
import { WebSocket } from 'ws';
import type { ByteStream } from '../collectives/auth.js';
import { type TransportListener, WsStream } from '../collectives/transport.js';
import { runTraining } from '../train/trainer.js';
import type { AcceptRequest, ExitReport, StartMessage, WorkerReport } from '../train/browser-protocol.js';
import { useLauncher } from './remote.js';
import { onOutput, process } from './shims/process.js';

const post = (report: WorkerReport) => (self as unknown as { postMessage(m: unknown): void }).postMessage(report);

/** A WebSocket to the launcher, once open, as the transport's byte stream. */
function openStream(url: string): Promise<WsStream> {
  const ws = new WebSocket(url);
  const stream = new WsStream(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(stream));
    ws.once('error', reject);
    ws.once('close', () => reject(new Error(`${url.replace(/\?.*/, '')} closed before it opened`)));
  });
}

async function start({ base, join }: StartMessage): Promise<void> {
  const wsBase = base.replace(/^http/, 'ws');
  const session = encodeURIComponent(join.session);
  useLauncher(base, join.session);
  Object.assign(process.env, join.env);
  onOutput((text) => {
    for (const line of text.split('\n')) if (line.trim()) post({ kind: 'log', line });
  });
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: 'high-performance' });
  const i = adapter?.info;
  const description = i ? [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ') || 'unnamed adapter' : 'no adapter';
  post({ kind: 'adapter', description });
  const restart = join.env.WEBTRON_RESTART_COUNT ?? '0';
  post({
    kind: 'log',
    line: `rank ${join.rank} of ${join.worldSize} on ${description}: joining the job at ${base}${restart !== '0' ? ` (restart ${restart})` : ''}`,
  });
  const control = await openStream(`${wsBase}/webtron/control?session=${session}`);
  let accept: ((stream: ByteStream, from: string) => void) | null = null;
  let controlText = '';
  control.on('data', (chunk: Uint8Array) => {
    controlText += new TextDecoder().decode(chunk);
    const lines = controlText.split('\n');
    controlText = lines.pop()!;
    for (const line of lines) {
      let request: AcceptRequest;
      try {
        request = JSON.parse(line) as AcceptRequest;
      } catch {
        continue; // not a request: the launcher speaks JSON lines only
      }
      openStream(`${wsBase}/webtron/accept/${encodeURIComponent(request.accept)}?session=${session}`).then(
        (stream) => accept?.(stream, `${request.from} (relayed by the launcher)`),
        () => undefined, // the dialer gave up; it retries or fails on its side
      );
    }
  });
  const listener: TransportListener = {
    url: `${wsBase}/webtron/relay/${join.rank}`,
    start: (handler) => {
      accept = handler;
    },
    dialUrl: (peer) => `${wsBase}/webtron/dial/${peer}?session=${session}`,
    close: () => {
      accept = null;
    },
  };
  let reported = false;
  const report = (r: ExitReport) => {
    reported = true;
    control.write(new TextEncoder().encode(`${JSON.stringify(r)}\n`));
    control.end();
  };
  // The launcher let this rank go (another rank failed, or the job ended): the page ends this worker.
  control.on('close', () => {
    if (!reported) post({ kind: 'done', ok: false, message: `rank ${join.rank} was stopped by the launcher` });
  });
  try {
    await runTraining(join.config, {
      init: { browser: { openStore: () => openStream(`${wsBase}/webtron/store?session=${session}`), listener } },
      log: (line) => post({ kind: 'log', line }),
      onIteration: (iteration, loss, rankLoss) => {
        const { trainIters, logInterval } = join.config;
        post({ kind: 'iteration', iteration, trainIters, loss, rankLoss });
        if (iteration % logInterval === 0 || iteration === trainIters)
          post({
            kind: 'log',
            line: `iteration ${iteration}/${trainIters}: lm loss ${rankLoss.toFixed(4)} on this rank, ${loss.toFixed(4)} over all ranks`,
          });
      },
    });
    report({ exit: 0, message: 'finished' });
    post({ kind: 'log', line: `rank ${join.rank} finished` });
    post({ kind: 'done', ok: true, message: `rank ${join.rank} finished` });
  } catch (error) {
    const e = error as Error & { exitCode?: number };
    const message = `${e.name}: ${e.message}`;
    report({ exit: e.exitCode ?? 1, message });
    post({ kind: 'done', ok: false, message });
  }
}

self.onmessage = (event: MessageEvent<StartMessage>) =>
  void start(event.data).catch((error: Error) => post({ kind: 'done', ok: false, message: `${error.name}: ${error.message}` }));
