/**
 * The dashboard's one page: plain HTML and JavaScript, no build step. Charts are uPlot's (served
 * by the dashboard from node_modules); the data comes from /api/events: the state, then new lines.
 * `window.webtronDashboard` tells a test what each chart shows.
 */
export const DASHBOARD_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>webtron dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/uplot.css">
<script src="/uplot.js"></script>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
  header { padding: 10px 16px; background: #fff; border-bottom: 1px solid #ddd; display: flex; gap: 16px; align-items: baseline; }
  h1 { font-size: 18px; margin: 0; }
  #status { color: #777; font-size: 12px; }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 12px; padding: 12px; }
  .chart { background: #fff; border: 1px solid #e3e3e3; border-radius: 4px; padding: 6px; }
  .chart.empty { display: none; }
  section { margin: 0 12px 12px; background: #fff; border: 1px solid #e3e3e3; border-radius: 4px; padding: 8px; }
  h2 { font-size: 14px; margin: 0 0 6px; }
  .lane text { font-size: 11px; fill: #444; }
</style>
</head>
<body>
<header><h1>webtron dashboard</h1><span id="runs"></span><span id="status">connecting…</span></header>
<main id="charts"></main>
<section id="lanes-section" hidden><h2 id="lanes-title">phases of the last timed iteration, one lane per rank</h2><svg id="lanes" width="100%" height="0"></svg></section>
<script>
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const PHASE_COLORS = { data: '#bcbd22', forward: '#1f77b4', backward: '#2ca02c', 'forward+backward': '#1f77b4', 'grad readback': '#9467bd', 'reduce-scatter': '#d62728', 'all-reduce': '#d62728', 'grad upload': '#8c564b', 'grad sync wait': '#ff9896', 'grad norm': '#e377c2', adam: '#ff7f0e', sgd: '#ff7f0e', lion: '#ff7f0e', 'optimizer step': '#ffbb78', 'param readback': '#c5b0d5', 'all-gather': '#17becf', 'param upload': '#c49c94' };
const runs = [];
const name = (run, what) => (runs.length > 1 ? run.name + ': ' : '') + what;
const finite = (x) => typeof x === 'number' && Number.isFinite(x);
const from = (run, key, scale = 1) => run.metrics.filter((m) => finite(m[key])).map((m) => [m.iteration, m[key] * scale]);

// Each chart: its title and y label, and its series from the runs.
const CHARTS = [
  { id: 'loss', title: 'lm loss (train, validation; unigram and bigram entropy of the first run)', series() {
    const out = runs.flatMap((run) => [
      { label: name(run, 'train'), pts: from(run, 'loss') },
      { label: name(run, 'validation'), pts: from(run, 'val_loss'), dots: true },
    ]);
    const first = runs[0];
    if (first && finite(first.unigram)) out.push({ label: 'unigram entropy', constant: first.unigram, dash: true });
    if (first && finite(first.bigram)) out.push({ label: 'bigram entropy', constant: first.bigram, dash: true });
    return out;
  } },
  { id: 'lr', title: 'learning rate', series: () => runs.map((run) => ({ label: name(run, 'lr'), pts: from(run, 'lr') })) },
  { id: 'grad_norm', title: 'grad norm', series: () => runs.map((run) => ({ label: name(run, 'grad norm'), pts: from(run, 'grad_norm') })) },
  { id: 'tokens_per_s', title: 'tokens/s', series: () => runs.map((run) => ({ label: name(run, 'tokens/s'), pts: from(run, 'tokens_per_s') })) },
  { id: 'mfu', title: 'MFU (%)', series: () => runs.map((run) => ({ label: name(run, 'MFU'), pts: from(run, 'mfu', 100) })) },
  { id: 'memory', title: 'GPU memory per category (MiB, rank 0)', series: () => runs.flatMap((run) => {
    const categories = [...new Set(run.metrics.flatMap((m) => Object.keys(m.memory_bytes || {})))];
    return categories.map((c) => ({ label: name(run, c), pts: run.metrics.filter((m) => m.memory_bytes && finite(m.memory_bytes[c])).map((m) => [m.iteration, m.memory_bytes[c] / 2 ** 20]) }));
  }) },
  { id: 'step_ms', title: 'step time per rank (ms, --timing)', series: () => runs.flatMap((run) => {
    const ranks = [...new Set(run.timing.map((t) => t.rank))].sort((a, b) => a - b);
    return ranks.map((r) => ({ label: name(run, 'rank ' + r), pts: run.timing.filter((t) => t.rank === r).map((t) => [t.iteration, t.step_ms]) }));
  }) },
];

// uPlot wants one x array: the union of the series' x, with nulls where a series has no point.
function aligned(series) {
  const xs = [...new Set(series.flatMap((s) => (s.pts || []).map((p) => p[0])))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  return [xs, ...series.map((s) => {
    if (s.constant !== undefined) return xs.map(() => s.constant);
    const ys = new Array(xs.length).fill(null);
    for (const [x, y] of s.pts) ys[at.get(x)] = y;
    return ys;
  })];
}

const plots = {};
function draw() {
  for (const chart of CHARTS) {
    const series = chart.series();
    const data = aligned(series);
    const shown = series.some((s) => s.pts && s.pts.length > 0);
    let entry = plots[chart.id];
    if (!entry) {
      const el = document.createElement('div');
      el.className = 'chart';
      el.id = 'chart-' + chart.id;
      document.getElementById('charts').appendChild(el);
      entry = plots[chart.id] = { el, plot: null, labels: '', series: [] };
    }
    entry.el.classList.toggle('empty', !shown);
    entry.series = series;
    const labels = series.map((s) => s.label).join('|');
    if (!entry.plot || entry.labels !== labels) {
      entry.plot?.destroy();
      entry.labels = labels;
      entry.plot = new uPlot({
        title: chart.title,
        width: Math.max(420, entry.el.clientWidth - 12 || 460),
        height: 240,
        scales: { x: { time: false } },
        axes: [{ label: 'iteration' }, { size: 64 }],
        series: [{ label: 'iteration' }, ...series.map((s, i) => ({
          label: s.label,
          stroke: s.dash ? '#999' : COLORS[i % COLORS.length],
          dash: s.dash ? [6, 4] : undefined,
          width: s.dots ? 0 : 1.5,
          spanGaps: true,
          points: { show: !!s.dots, size: 6, fill: COLORS[i % COLORS.length] },
        }))],
      }, data, entry.el);
    } else {
      entry.plot.setData(data);
    }
  }
  drawLanes();
  document.getElementById('runs').textContent = runs.map((r) => r.name + ' (' + r.metrics.length + ' lines)').join(', ');
}

// The last iteration that every rank of the first timed run has timed: a lane of phase bars per rank.
function drawLanes() {
  const run = runs.find((r) => r.timing.length > 0);
  const svg = document.getElementById('lanes');
  document.getElementById('lanes-section').hidden = !run;
  if (!run) return;
  const ranks = [...new Set(run.timing.map((t) => t.rank))].sort((a, b) => a - b);
  const last = Math.min(...ranks.map((r) => Math.max(...run.timing.filter((t) => t.rank === r).map((t) => t.iteration))));
  const rows = ranks.map((r) => run.timing.find((t) => t.rank === r && t.iteration === last)).filter(Boolean);
  const longest = Math.max(...rows.map((t) => t.step_ms), 1);
  const width = svg.clientWidth || 900;
  const scale = (width - 70) / longest;
  const lane = 22;
  svg.setAttribute('height', String(rows.length * lane + 20));
  document.getElementById('lanes-title').textContent = run.name + ': phases of iteration ' + last + ', one lane per rank (' + longest.toFixed(1) + ' ms)';
  svg.innerHTML = rows.map((t, k) => '<g class="lane" transform="translate(0,' + (k * lane) + ')"><text x="0" y="14">rank ' + t.rank + '</text>' +
    (t.spans || []).map((s) => '<rect x="' + (60 + s.start * scale).toFixed(1) + '" y="3" width="' + Math.max(0.5, (s.end - s.start) * scale).toFixed(1) + '" height="14" fill="' + (PHASE_COLORS[s.phase] || '#999') + '"><title>' + s.phase + ' ' + (s.end - s.start).toFixed(1) + ' ms</title></rect>').join('') + '</g>').join('');
}

window.webtronDashboard = {
  ready: false,
  updates: 0,
  charts: () => Object.keys(plots).filter((id) => !plots[id].el.classList.contains('empty')),
  // The points a chart's series shows (a series by its label).
  points(id, label) {
    const entry = plots[id];
    if (!entry || !entry.plot) return 0;
    const k = entry.series.findIndex((s) => s.label === label);
    return k < 0 ? 0 : entry.plot.data[k + 1].filter((y) => y !== null && y !== undefined).length;
  },
  lastX: (id) => { const d = plots[id]?.plot?.data[0]; return d && d.length ? d[d.length - 1] : null; },
};

{
  const status = document.getElementById('status');
  const events = new EventSource('/api/events');
  events.onopen = () => { status.textContent = 'live'; };
  events.onerror = () => { status.textContent = 'reconnecting…'; };
  // On (re)connecting the whole state, then each run's new lines.
  events.addEventListener('state', (e) => {
    runs.length = 0;
    runs.push(...JSON.parse(e.data).runs);
    draw();
    window.webtronDashboard.ready = true;
  });
  events.onmessage = (e) => {
    const update = JSON.parse(e.data);
    const run = runs.find((r) => r.id === update.run);
    if (!run) return;
    run.metrics.push(...update.metrics);
    run.timing.push(...update.timing);
    window.webtronDashboard.updates += 1;
    draw();
  };
}
</script>
</body>
</html>
`;
