// Formatting and DOM building. Text from the API (model names, app titles, key names)
// only ever reaches the page through textContent or attribute setters, never as HTML.

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const pctFmt = new Intl.NumberFormat('en-US', { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });

export const DASH = '—';

/** 1234567 -> "1,234,567"; null/undefined -> "—" (not reported). */
export function fmtInt(n) {
  return n === null || n === undefined ? DASH : intFmt.format(n);
}

/** 0.1234 -> "12.3%". */
export function fmtPct(x) {
  return x === null || x === undefined ? DASH : pctFmt.format(x);
}

/**
 * US dollars: 2 decimals from $1 up, else 4 significant digits ("$0.0001234"); 0 -> "$0.00".
 */
export function fmtUsd(x) {
  if (x === null || x === undefined) return DASH;
  if (x === 0) return '$0.00';
  const abs = Math.abs(x);
  const text = abs >= 1
    ? abs.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    : abs.toLocaleString('en-US', { maximumSignificantDigits: 4, minimumSignificantDigits: 1 });
  return `${x < 0 ? '-' : ''}$${text}`;
}

/** Milliseconds -> "850 ms" / "2.35 s". */
export function fmtMs(ms) {
  if (ms === null || ms === undefined) return DASH;
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** RFC 3339 -> local "2026-12-05 09:14:03" in the browser's time zone. */
export function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A chart bucket label: "Dec 5 14:00" for hours, "Dec 5" for days (the offset is in the ISO text). */
export function fmtBucket(iso, bucket) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(iso);
  if (!m) return String(iso);
  const month = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][Number(m[2]) - 1];
  const day = `${month} ${Number(m[3])}`;
  return bucket === 'day' ? day : `${day} ${m[4]}:${m[5]}`;
}

/**
 * el('td', {class: 'num', dataset: {value: 3}}, 'text', child) -> an element. String and number
 * children become text nodes; null/undefined/false children are skipped.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) {
        if (dv !== undefined && dv !== null) node.dataset[dk] = String(dv);
      }
    } else if (k === 'class') {
      node.className = v;
    } else {
      node.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** A number cell: formatted text, the raw value in data-value (what the tests compare). */
export function numCell(value, text, extraClass = '') {
  return el('td', { class: `num ${extraClass}`.trim(), dataset: { value: value ?? 'null' } }, text);
}

/** Rank movement: previous_rank - rank (positive = moved up); "new" without a previous rank. */
export function rankMove(rank, previousRank) {
  if (previousRank === null || previousRank === undefined) return { text: 'new', cls: 'new' };
  const d = previousRank - rank;
  if (d > 0) return { text: `▲ ${d}`, cls: 'up' };
  if (d < 0) return { text: `▼ ${-d}`, cls: 'down' };
  return { text: '–', cls: 'same' };
}

/** Token change against the previous window: "▲ 12.5%", "▼ 3.0%", "new" (no previous tokens). */
export function changeText(change) {
  if (change === null || change === undefined) return { text: 'new', cls: 'new' };
  if (change > 0) return { text: `▲ ${pctFmt.format(change)}`, cls: 'up' };
  if (change < 0) return { text: `▼ ${pctFmt.format(-change)}`, cls: 'down' };
  return { text: '0.0%', cls: 'same' };
}
