/** A small SVG line chart (no dependencies) for benchmark results. */

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
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function lineChartSvg(series: Series[], o: ChartOptions): string {
  const W = 640, H = 400, L = 90, R = 170, T = 50, B = 60;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const y1 = Math.max(...ys) * 1.1;
  const px = (x: number) => L + ((x - x0) / Math.max(1e-9, x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - (y / y1) * (H - T - B);
  const fmt = o.yFormat ?? ((y: number) => y.toPrecision(3));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - R / 2 + L / 2}" y="24" text-anchor="middle" font-size="15">${esc(o.title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const y = (y1 / 5) * i;
    out.push(`<line x1="${L - 4}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#ddd"/>`, `<text x="${L - 8}" y="${py(y) + 4}" text-anchor="end">${esc(fmt(y))}</text>`);
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) out.push(`<text x="${px(x)}" y="${H - B + 18}" text-anchor="middle">${x}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(22 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${px(p.x)},${py(p.y)}`).join(' ')}"/>`);
    for (const p of pts) out.push(`<circle cx="${px(p.x)}" cy="${py(p.y)}" r="4" fill="${s.color}"><title>${esc(`${s.name}, ${p.x}: ${fmt(p.y)}`)}</title></circle>`);
    out.push(`<rect x="${W - R + 16}" y="${T + i * 22}" width="14" height="4" fill="${s.color}"/>`, `<text x="${W - R + 36}" y="${T + i * 22 + 6}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}
