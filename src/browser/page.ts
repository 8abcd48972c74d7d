/**
 * The worker page a browser tab opens from the URL `webtron train --browser-workers` prints: it
 * redeems the one-time join token, starts the rank in a dedicated worker (./worker.ts) and shows
 * the rank, the adapter, progress, the loss and the rank's log.
 */
import type { JoinAnswer, StartMessage, WorkerReport } from './protocol.js';

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

async function main(): Promise<void> {
  const token = new URLSearchParams(location.search).get('join') ?? '';
  const response = await fetch('/webtron/join', { method: 'POST', body: JSON.stringify({ join: token }) });
  if (!response.ok) {
    $('status').textContent = `refused: ${await response.text()}`;
    document.body.dataset.state = 'refused';
    return;
  }
  const join = (await response.json()) as JoinAnswer;
  document.title = `webtron rank ${join.rank}`;
  $('rank').textContent = `${join.rank} of ${join.worldSize}`;
  $('status').textContent = 'joining the job';
  const worker = new Worker('/webtron/worker.js', { type: 'module' });
  worker.onmessage = (event: MessageEvent<WorkerReport>) => {
    const r = event.data;
    if (r.kind === 'adapter') $('adapter').textContent = r.description;
    else if (r.kind === 'log') log(r.line);
    else if (r.kind === 'iteration') {
      $('status').textContent = 'training';
      ($('progress') as HTMLProgressElement).max = r.trainIters;
      ($('progress') as HTMLProgressElement).value = r.iteration;
      $('iteration').textContent = `${r.iteration} / ${r.trainIters}`;
      $('loss').textContent = r.loss.toFixed(4);
      losses.push(r.loss);
      drawLoss();
    } else {
      $('status').textContent = r.message;
      document.body.dataset.state = r.ok ? 'done' : 'failed';
    }
  };
  worker.onerror = (event) => {
    $('status').textContent = `the worker failed: ${event.message}`;
    document.body.dataset.state = 'failed';
  };
  const start: StartMessage = { base: location.origin, join };
  worker.postMessage(start);
}

void main();
