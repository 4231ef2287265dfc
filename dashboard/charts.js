// The stacked tokens-per-model chart, drawn by Chart.js (window.Chart, loaded by
// index.html from /dashboard/vendor/ before this module runs). Chart.js draws text on the
// canvas, so series labels from users never become HTML.
import { fmtBucket, fmtInt } from './format.js';

// 20 distinguishable colours (at most 20 series come back) and grey for "other".
const PALETTE = [
  '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f',
  '#393b79', '#e6550d', '#31a354', '#ad494a', '#756bb1', '#637939', '#ce6dbd', '#3182bd', '#fdae6b', '#843c39',
];
const OTHER = '#b8c0cc';

let chart = null;

const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

/**
 * Draws `ts` (a /api/v1/stats/timeseries body) as stacked bars on `canvas`, replacing the
 * previous chart. Null values (no calls in a bucket) draw as 0 for tokens.
 */
export function renderTokensChart(canvas, ts) {
  const Chart = window.Chart;
  if (!Chart) throw new Error('the chart library did not load');
  const labels = ts.buckets.map((b) => fmtBucket(b, ts.bucket));
  let colour = 0;
  const datasets = ts.series.map((s) => ({
    label: s.key === 'other' ? 'other' : String(s.label || s.key || '(none)'),
    data: s.values.map((v) => v ?? 0),
    backgroundColor: s.key === 'other' ? OTHER : PALETTE[colour++ % PALETTE.length],
    stack: 'tokens',
  }));
  clearTokensChart();
  chart = new Chart(canvas, {
    type: 'bar',
    data: { labels, datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      scales: {
        x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
        y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => compact.format(v) } },
      },
      plugins: {
        legend: { position: 'bottom' },
        tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmtInt(c.parsed.y)} tokens` } },
      },
    },
  });
  return chart;
}

export function clearTokensChart() {
  if (chart) {
    chart.destroy();
    chart = null;
  }
}
