/** Small SVG charts: a line chart for benchmarks, stacked bars for `webtron memory --plot`, curves (a loss against iteration); every value axis has round ticks from d3-scale. */
import { scaleLinear } from 'd3-scale';

export interface Series {
  name: string;
  color: string;
  points: { x: number; y: number }[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Format a y value for tick labels. */
  yFormat?: (y: number) => string;
  /** Bytes: ticks at round multiples of the binary unit the values need (KiB, MiB, GiB, …). */
  yBinary?: boolean;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A chart's first lines: the svg element, a white background, and the title centred at x. */
function svgOpen(width: number, height: number, titleX: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${titleX}" y="24" text-anchor="middle" font-size="15">${esc(title)}</text>`,
  ];
}

const W = 640,
  H = 400,
  L = 90,
  R = 170,
  T = 50,
  B = 60;

/**
 * Round y ticks from 0 to at least `yMax` (d3-scale's nice() and ticks()); for bytes, round in the
 * binary unit the largest value needs.
 */
export function yTicks(yMax: number, binary = false, count = 5): { top: number; ticks: number[]; label: (y: number) => string | null } {
  const max = yMax > 0 && Number.isFinite(yMax) ? yMax : 1;
  const power = binary ? Math.min(BINARY_UNITS.length - 1, Math.max(0, Math.floor(Math.log(max) / Math.log(1024)))) : 0;
  const unit = 1024 ** power;
  const scale = scaleLinear()
    .domain([0, max / unit])
    .nice(count);
  const label = (y: number) => (binary ? `${Number((y / unit).toPrecision(6))} ${BINARY_UNITS[power]}` : null);
  return { top: scale.domain()[1]! * unit, ticks: scale.ticks(count).map((t) => t * unit), label };
}

const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Title, axes, y grid with round ticks up to at least `yMax`, axis labels; `py` maps a y value to pixels. */
function frame(o: ChartOptions, yMax: number, xTicks: { x: number; label: string }[]): { out: string[]; py: (y: number) => number } {
  const { top: y1, ticks, label } = yTicks(yMax, o.yBinary);
  const py = (y: number) => H - B - (y / y1) * (H - T - B);
  const fmt = o.yFormat ?? ((y: number) => y.toPrecision(3));
  const out: string[] = [
    ...svgOpen(W, H, W / 2 - R / 2 + L / 2, o.title),
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
  ];
  for (const y of ticks) {
    out.push(
      `<line x1="${L - 4}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${L - 8}" y="${py(y) + 4}" text-anchor="end">${esc(label(y) ?? fmt(y))}</text>`,
    );
  }
  for (const t of xTicks) {
    // A label may have several lines.
    const lines = t.label.split('\n').map((line, k) => `<tspan x="${t.x}" dy="${k === 0 ? 0 : 14}">${esc(line)}</tspan>`);
    out.push(`<text x="${t.x}" y="${H - B + 18}" text-anchor="middle">${lines.join('')}</text>`);
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(22 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  return { out, py };
}

function legend(out: string[], items: { name: string; color: string }[]): void {
  items.forEach((item, i) => {
    out.push(
      `<rect x="${W - R + 16}" y="${T + i * 22}" width="14" height="10" fill="${item.color}"/>`,
      `<text x="${W - R + 36}" y="${T + i * 22 + 9}">${esc(item.name)}</text>`,
    );
  });
}

export function lineChartSvg(series: Series[], o: ChartOptions): string {
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const y1 = Math.max(...ys);
  const px = (x: number) => L + ((x - x0) / Math.max(1e-9, x1 - x0)) * (W - L - R);
  const fmt = o.yFormat ?? ((y: number) => y.toPrecision(3));
  const { out, py } = frame(
    o,
    y1,
    [...new Set(xs)].sort((a, b) => a - b).map((x) => ({ x: px(x), label: String(x) })),
  );
  for (const s of series) {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`);
    for (const p of pts)
      out.push(
        `<circle cx="${px(p.x)}" cy="${py(p.y)}" r="4" fill="${s.color}"><title>${esc(`${s.name}, ${p.x}: ${fmt(p.y)}`)}</title></circle>`,
      );
  }
  legend(out, series);
  out.push('</svg>');
  return out.join('\n');
}

export interface StackedBar {
  label: string;
  /** One value per segment, in the order of `segments`. */
  values: number[];
}

/** Bars of stacked segments (bottom first), e.g. bytes per rank by category for each configuration. */
export function stackedBarSvg(bars: StackedBar[], segments: { name: string; color: string }[], o: ChartOptions): string {
  const fmt = o.yFormat ?? ((y: number) => y.toPrecision(3));
  const y1 = Math.max(...bars.map((b) => b.values.reduce((a, v) => a + v, 0)));
  const slot = (W - L - R) / bars.length;
  const barWidth = Math.min(48, slot * 0.7);
  const cx = (i: number) => L + slot * (i + 0.5);
  const { out, py } = frame(
    o,
    y1,
    bars.map((b, i) => ({ x: cx(i), label: b.label })),
  );
  bars.forEach((bar, i) => {
    let base = 0;
    bar.values.forEach((v, k) => {
      if (v <= 0) return;
      const seg = segments[k]!;
      out.push(
        `<rect x="${cx(i) - barWidth / 2}" y="${py(base + v)}" width="${barWidth}" height="${py(base) - py(base + v)}" fill="${seg.color}"><title>${esc(`${bar.label}, ${seg.name}: ${fmt(v)}`)}</title></rect>`,
      );
      base += v;
    });
  });
  legend(out, segments);
  out.push('</svg>');
  return out.join('\n');
}

/** Bars side by side per group (one per series, in the order of `series`), e.g. GFLOP/s per shape per implementation. */
export function groupedBarSvg(groups: StackedBar[], series: { name: string; color: string }[], o: ChartOptions): string {
  const fmt = o.yFormat ?? ((y: number) => y.toPrecision(3));
  const y1 = Math.max(...groups.flatMap((g) => g.values));
  const slot = (W - L - R) / groups.length;
  const barWidth = Math.min(24, (slot * 0.8) / series.length);
  const cx = (i: number) => L + slot * (i + 0.5);
  const { out, py } = frame(
    o,
    y1,
    groups.map((g, i) => ({ x: cx(i), label: g.label })),
  );
  groups.forEach((group, i) => {
    group.values.forEach((v, k) => {
      const s = series[k]!;
      const x = cx(i) - (barWidth * series.length) / 2 + k * barWidth;
      out.push(
        `<rect x="${x}" y="${py(v)}" width="${barWidth}" height="${py(0) - py(v)}" fill="${s.color}"><title>${esc(`${group.label}, ${s.name}: ${fmt(v)}`)}</title></rect>`,
      );
    });
  });
  legend(out, series);
  out.push('</svg>');
  return out.join('\n');
}

export interface CurveSeries extends Series {
  /** A horizontal reference line (drawn dashed, across the whole x range). */
  reference?: boolean;
  /** Mark each point (sparse series such as validation losses). */
  markers?: boolean;
}

/**
 * A curve chart for many points (a loss against iteration): numeric axes with round ticks
 * (d3-scale's nice() and ticks()), plain lines, markers only where asked, dashed reference lines.
 */
export function curveChartSvg(series: CurveSeries[], o: ChartOptions & { yMin?: number }): string {
  const data = series.filter((s) => !s.reference);
  const xs = data.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const x = scaleLinear()
    .domain([Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)])
    .range([L, W - R])
    .nice();
  const y = scaleLinear()
    .domain([o.yMin ?? Math.min(...ys), Math.max(...ys)])
    .range([H - B, T])
    .nice();
  const fmt = o.yFormat ?? ((v: number) => String(v));
  const out: string[] = [...svgOpen(W, H, W / 2 - R / 2 + L / 2, o.title)];
  for (const t of y.ticks(6))
    out.push(
      `<line x1="${L - 4}" y1="${y(t)}" x2="${W - R}" y2="${y(t)}" stroke="#ddd"/>`,
      `<text x="${L - 8}" y="${y(t) + 4}" text-anchor="end">${esc(fmt(t))}</text>`,
    );
  for (const t of x.ticks(8))
    out.push(
      `<line x1="${x(t)}" y1="${H - B}" x2="${x(t)}" y2="${H - B + 4}" stroke="black"/>`,
      `<text x="${x(t)}" y="${H - B + 18}" text-anchor="middle">${esc(String(t))}</text>`,
    );
  out.push(
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(22 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  const [x0, x1] = x.domain() as [number, number];
  for (const s of series) {
    if (s.reference) {
      const v = s.points[0]!.y;
      out.push(
        `<line x1="${x(x0)}" y1="${y(v)}" x2="${x(x1)}" y2="${y(v)}" stroke="${s.color}" stroke-width="1.5" stroke-dasharray="6 4"><title>${esc(`${s.name}: ${fmt(v)}`)}</title></line>`,
      );
      continue;
    }
    const pts = [...s.points].filter((p) => Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    out.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')}"/>`,
    );
    if (s.markers)
      for (const p of pts)
        out.push(
          `<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3.5" fill="${s.color}"><title>${esc(`${s.name}, ${p.x}: ${fmt(p.y)}`)}</title></circle>`,
        );
  }
  legend(out, series);
  out.push('</svg>');
  return out.join('\n');
}

export interface TimelineLane {
  label: string;
  spans: { phase: string; start: number; end: number }[];
}

/** Greedy rows: each span goes to the first row whose last span ended by its start (nested or overlapping spans stack). */
export function packRows<S extends { start: number; end: number }>(spans: readonly S[]): S[][] {
  const rows: S[][] = [];
  for (const s of [...spans].sort((a, b) => a.start - b.start || b.end - a.end)) {
    const row = rows.find((r) => r.at(-1)!.end <= s.start);
    if (row) row.push(s);
    else rows.push([s]);
  }
  return rows;
}

/**
 * A timeline: one lane per rank, each phase call a bar from its start to its end on a shared time
 * axis (round ticks from d3-scale); calls that overlap (a phase inside another, communication
 * during the backward pass) stack in rows within the lane.
 */
export function timelineSvg(lanes: TimelineLane[], colors: Record<string, string>, o: { title: string; xLabel: string }): string {
  const rowH = 14;
  const gap = 12;
  const packed = lanes.map((lane) => packRows(lane.spans));
  const phases = [...new Set(lanes.flatMap((l) => l.spans.map((s) => s.phase)))];
  const color = (p: string) => colors[p] ?? '#999';
  const width = 900;
  const right = 200;
  const left = 70;
  const top = 50;
  const laneH = packed.map((rows) => Math.max(1, rows.length) * rowH + gap);
  const bottom = top + laneH.reduce((a, b) => a + b, 0);
  const legendH = phases.length * 20 + top;
  const height = Math.max(bottom + 50, legendH + 20);
  const ends = lanes.flatMap((l) => l.spans.map((s) => s.end));
  const x = scaleLinear()
    .domain([0, Math.max(1, ...ends)])
    .range([left, width - right])
    .nice();
  const out: string[] = [...svgOpen(width, height, (left + width - right) / 2, o.title)];
  for (const t of x.ticks(10))
    out.push(
      `<line x1="${x(t)}" y1="${top}" x2="${x(t)}" y2="${bottom}" stroke="#eee"/>`,
      `<text x="${x(t)}" y="${bottom + 16}" text-anchor="middle">${esc(String(t))}</text>`,
    );
  out.push(`<text x="${(left + width - right) / 2}" y="${bottom + 36}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  let y = top;
  packed.forEach((rows, i) => {
    out.push(`<text x="${left - 8}" y="${y + rowH}" text-anchor="end">${esc(lanes[i]!.label)}</text>`);
    rows.forEach((row, k) => {
      for (const s of row) {
        const w = Math.max(0.5, x(s.end) - x(s.start));
        out.push(
          `<rect x="${x(s.start).toFixed(2)}" y="${y + k * rowH + 1}" width="${w.toFixed(2)}" height="${rowH - 2}" fill="${color(s.phase)}"><title>${esc(`${lanes[i]!.label}, ${s.phase}: ${s.start.toFixed(1)} – ${s.end.toFixed(1)} ms (${(s.end - s.start).toFixed(1)} ms)`)}</title></rect>`,
        );
      }
    });
    y += laneH[i]!;
  });
  phases.forEach((p, i) => {
    out.push(
      `<rect x="${width - right + 16}" y="${top + i * 20}" width="14" height="10" fill="${color(p)}"/>`,
      `<text x="${width - right + 36}" y="${top + i * 20 + 9}">${esc(p)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}
