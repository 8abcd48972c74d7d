/**
 * The worker page a browser tab opens from the URL `webtron train --browser-workers` prints: it
 * redeems the one-time join token, starts the rank in a dedicated worker (./worker.ts) and shows
 * the rank, the adapter, progress, the loss and the rank's log.
 */
import { type JoinAnswer, SESSION_HEADER, type StartMessage, type WorkerReport } from '../train/browser-protocol.js';

const $ = (id: string) => document.getElementById(id)!;
const losses: number[] = [];

function drawLoss(): void {
  const svg = $('chart');
  const w = 560;
  const h = 120;
  if (losses.length < 2) return;
  const lo = Math.min(...losses);
  const hi = Math.max(...losses);
  const points = losses.map(
    (l, i) => `${((i / (losses.length - 1)) * w).toFixed(1)},${(h - 6 - ((l - lo) / (hi - lo || 1)) * (h - 12)).toFixed(1)}`,
  );
  svg.innerHTML = `<polyline fill="none" stroke="#2563eb" stroke-width="2" points="${points.join(' ')}"/><text x="4" y="12" font-size="11" fill="#555">${hi.toFixed(3)}</text><text x="4" y="${h - 2}" font-size="11" fill="#555">${lo.toFixed(3)}</text>`;
}

function log(line: string): void {
  const pre = $('log');
  pre.textContent = `${pre.textContent ?? ''}${line}\n`.split('\n').slice(-200).join('\n');
  pre.scrollTop = pre.scrollHeight;
}

/** Rank `join.rank` in a fresh worker thread, until it ends: whether it finished, and its last word. */
function runRank(join: JoinAnswer): Promise<{ ok: boolean; message: string }> {
  document.title = `webtron rank ${join.rank}`;
  $('rank').textContent = `${join.rank} of ${join.worldSize}`;
  $('status').textContent = 'joining the job';
  document.body.dataset.state = 'running';
  losses.length = 0;
  const worker = new Worker('/webtron/worker.js', { type: 'module' });
  return new Promise((resolve) => {
    const end = (ok: boolean, message: string) => {
      worker.terminate();
      resolve({ ok, message });
    };
    worker.onmessage = (event: MessageEvent<WorkerReport>) => {
      const r = event.data;
      if (r.kind === 'adapter') $('adapter').textContent = r.description;
      else if (r.kind === 'log') log(r.line);
      else if (r.kind === 'iteration') {
        $('status').textContent = 'training';
        ($('progress') as HTMLProgressElement).max = r.trainIters;
        ($('progress') as HTMLProgressElement).value = r.iteration;
        $('iteration').textContent = `${r.iteration} / ${r.trainIters}`;
        $('loss').textContent = `${r.rankLoss.toFixed(4)} on this rank, ${r.loss.toFixed(4)} over all ranks`;
        losses.push(r.rankLoss);
        drawLoss();
      } else end(r.ok, r.message);
    };
    worker.onerror = (event) => end(false, `the worker failed: ${event.message}`);
    const start: StartMessage = { base: location.origin, join };
    worker.postMessage(start);
  });
}

async function main(): Promise<void> {
  const token = new URLSearchParams(location.search).get('join') ?? '';
  const response = await fetch('/webtron/join', { method: 'POST', body: JSON.stringify({ join: token }) });
  if (!response.ok) {
    $('status').textContent = `refused: ${await response.text()}`;
    document.body.dataset.state = 'refused';
    return;
  }
  let join = (await response.json()) as JoinAnswer;
  for (;;) {
    const { ok, message } = await runRank(join);
    $('status').textContent = ok ? message : `${message}; waiting for the job to restart`;
    if (ok) {
      document.body.dataset.state = 'done';
      return;
    }
    // --max-restarts: the launcher answers when it starts the job again, with this tab's seat.
    const again = await fetch('/webtron/rejoin', { method: 'POST', headers: { [SESSION_HEADER]: join.session } }).catch(() => null);
    if (!again?.ok) {
      $('status').textContent = message;
      document.body.dataset.state = 'failed';
      return;
    }
    join = (await again.json()) as JoinAnswer;
  }
}

void main();
