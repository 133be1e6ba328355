// The admin dashboard: GET /api/admin/overview every 2 s with the admin
// token (kept in sessionStorage), drawn as cards, tables and SVG charts.
import { request, ApiError, el, fmtBytes, fmtTime } from './common.js';

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = 'keel-admin-token';
const REFRESH_MS = 2000;
const LIVE_SAMPLES = 900; // 30 minutes of 2 s polls
const SVG = 'http://www.w3.org/2000/svg';

let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;
let busy = false;
let last = null; // the last overview shown, kept through errors
const live = []; // {t, queued, running, queue, streams} per poll

// ---- Signing in and out ----------------------------------------------------

function showSignIn(message) {
  $('#signin').hidden = false;
  $('#dashboard').hidden = true;
  $('#signout').hidden = true;
  $('#signin-error').textContent = message || '';
  $('#updated').textContent = '';
  $('#admin-token').focus();
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  showSignIn(message);
}

// ---- Polling -------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  if (!token || busy) return;
  if (document.hidden) { $('#updated').textContent = 'paused while hidden'; return; }
  busy = true;
  try {
    const response = await request('GET', '/api/admin/overview?minutes=60', {
      headers: { Authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10000),
    });
    if (response.status === 401 || response.status === 403) { signOut('Wrong token.'); return; }
    if (response.status === 404) throw new Error('the admin endpoint is off: start Keel with --admin-token');
    if (!response.ok) throw await ApiError.from(response);
    const data = await response.json();
    $('#signin').hidden = true;
    $('#dashboard').hidden = false;
    $('#signout').hidden = false;
    render(data);
    last = data;
    $('#admin-error').hidden = true;
    $('#updated').textContent = `updated ${fmtTime(new Date())} · answered by ${data.instance}`;
  } catch (error) {
    if (!last) {
      showSignIn(`Could not load the dashboard: ${error.message}`);
      return;
    }
    const box = $('#admin-error');
    box.textContent = `Could not refresh (${error.name === 'TimeoutError' ? 'timed out' : error.message}); showing the data of ${fmtTime(last.generated_at)}.`;
    box.hidden = false;
  } finally {
    busy = false;
    if (token && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
  }
}

// ---- Rendering -------------------------------------------------------------------

const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en'));
const ms = (n) => (n === null || n === undefined ? '–' : `${Math.round(n)}`);

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago` : `${Math.floor(s / 3600)} h ago`;
}

// A <dl> of cards: [label, value, id?].
function cards(dl, items) {
  dl.replaceChildren(...items.map(([label, value, id]) => el('div', { class: 'card', id },
    el('dt', {}, label), el('dd', {}, String(value)))));
}

function cell(text, cls) {
  return el('td', { class: cls }, text);
}

function render(d) {
  const jobs = d.jobs || {};
  const status = jobs.by_status || {};
  const uploads = d.uploads || {};
  cards($('#cards'), [
    ['Instances', (d.instances || []).length, 'card-instances'],
    ['Queue depth', num(jobs.queue_depth), 'card-queue'],
    ['Running jobs', num(status.running), 'card-running'],
    ['Open streams', num(d.streams && d.streams.open), 'card-streams'],
    ['Active uploads', num(uploads.active), 'card-uploads'],
    ['Models cooling', (d.models || []).filter((m) => m.cooling).length, 'card-cooling'],
  ]);

  $('#instances-caption').textContent = `Instances seen in the last ${d.window_minutes} minutes (this answer from ${d.instance})`;
  $('#instances tbody').replaceChildren(...(d.instances || []).map((i) => el('tr', { 'data-id': i.id },
    el('th', { scope: 'row' }, i.id + (i.id === d.instance ? ' (answering)' : '')),
    cell(i.role || 'server'), cell(i.version), cell(fmtTime(i.started_at)), cell(ago(i.seen_at)),
    cell(i.draining ? 'draining' : 'no', i.draining ? 'warn' : null),
    cell(num(i.open_streams), 'num'), cell(num(i.open_connections), 'num'),
    cell(`${num(i.busy_workers)} / ${num(i.workers)} + ${num(i.model_workers ?? 0)}`, 'num'))));

  cards($('#job-status'), ['queued', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => [s, num(status[s] ?? 0), `jobs-${s}`]));
  $('#job-types tbody').replaceChildren(...(jobs.by_type || []).map((r) => el('tr', { 'data-type': r.type, 'data-status': r.status },
    el('th', { scope: 'row' }, r.type), cell(r.status, r.status === 'failed' ? 'bad' : null), cell(num(r.count), 'num count'))));

  const rate = uploads.success_rate;
  const byStatus = uploads.by_status || {};
  cards($('#uploads'), [
    ['Active', num(uploads.active), 'uploads-active'],
    ...['uploading', 'complete', 'terminated', 'expired'].map((s) => [s, num(byStatus[s] ?? 0), `uploads-${s}`]),
    ['Success rate', rate === null || rate === undefined ? '–' : `${(rate * 100).toFixed(1)} %`, 'uploads-rate'],
    ['Bytes received', fmtBytes(uploads.bytes_received), 'uploads-bytes'],
  ]);

  $('#models tbody').replaceChildren(...(d.models || []).map((m) => {
    const t = m.time_to_first_token_ms || {};
    const failures = Object.entries(m.failures || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
    const health = m.cooling
      ? `cooling until ${fmtTime(m.cooldown_until)}${m.cooldown_reason ? ` (${m.cooldown_reason})` : ''}`
      : m.consecutive_failures ? `ok, ${m.consecutive_failures} failures in a row` : 'ok';
    return el('tr', { 'data-model': m.name },
      el('th', { scope: 'row' }, m.name), cell(m.provider),
      cell(health, m.cooling ? 'bad' : m.consecutive_failures ? 'warn' : 'good'),
      cell(num(m.attempts), 'num'), cell(failures), cell(num(m.fallbacks_from), 'num'),
      cell(`${ms(t.mean)} / ${ms(t.p50)} / ${ms(t.p95)} (n=${num(t.count ?? 0)})`, 'num'),
      cell(`${num(m.tokens && m.tokens.input)} / ${num(m.tokens && m.tokens.output)}`, 'num'));
  }));

  drawTimeline(jobs);
  live.push({ t: Date.parse(d.generated_at) || Date.now(), queued: status.queued || 0, running: status.running || 0,
    queue: jobs.queue_depth || 0, streams: (d.streams && d.streams.open) || 0 });
  if (live.length > LIVE_SAMPLES) live.shift();
  drawLive();
  drawTTFT(d.models || []);
}

// ---- Charts (SVG built with DOM calls; colours from the stylesheet's k1…k5) ----

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function legend(box, names) {
  box.replaceChildren(...names.map((name, i) => el('span', {}, el('span', { class: `swatch k${i + 1}`, 'aria-hidden': 'true' }), name)));
}

// A round number at or above n, for the y axis.
function niceMax(n) {
  if (n <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(n));
  return [1, 2, 2.5, 5, 10].map((f) => f * p).find((v) => v >= n);
}

// The chart's width in CSS pixels: the viewBox matches it, so text stays 11 px at any width.
const widthOf = (target) => Math.max(300, Math.round(target.getBoundingClientRect().width) || 640);

// Lines over x positions 0…n-1: series [{name, values}], x labels, axis titles.
// Later series are drawn thinner, so a line hidden under another still shows.
function lineChart(target, series, labels, xTitle, yTitle) {
  const W = widthOf(target), H = 220, L = 46, R = 16, T = 10, B = 40;
  const n = labels.length;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const nodes = [];
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    nodes.push(svg('line', { class: k ? 'grid' : 'axis', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor((W - L - R) / 90))));
  labels.forEach((label, i) => {
    const anchor = i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle';
    if (i % every === 0 || (i === n - 1 && i % every >= every / 2)) nodes.push(svg('text', { x: x(i), y: H - B + 16, 'text-anchor': anchor }, label));
  });
  nodes.push(svg('text', { x: (L + W - R) / 2, y: H - 4, 'text-anchor': 'middle' }, xTitle),
    svg('text', { x: 12, y: (T + H - B) / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yTitle));
  series.forEach((s, i) => {
    const points = s.values.map((v, j) => `${x(j).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    if (n > 1) nodes.push(svg('polyline', { class: `line k${i + 1}`, points, 'stroke-width': [6, 3.5, 2, 1.5][i] || 1.5 }));
    else if (n === 1) nodes.push(svg('circle', { class: `k${i + 1}`, cx: x(0), cy: y(s.values[0]), r: 3 }));
  });
  target.setAttribute('viewBox', `0 0 ${W} ${H}`);
  target.setAttribute('height', H);
  target.replaceChildren(...nodes);
}

function drawTimeline(jobs) {
  const buckets = jobs.timeline || [];
  const names = ['created', 'succeeded', 'failed', 'cancelled'];
  const series = names.map((name) => ({ name, values: buckets.map((b) => b[name] || 0) }));
  lineChart($('#jobs-chart'), series, buckets.map((b) => fmtTime(b.start).slice(0, 5)), 'time (bucket start)', `jobs per ${jobs.bucket_seconds || 60} s`);
  legend($('#jobs-legend'), names);
  const totals = series.map((s) => `${s.values.reduce((a, b) => a + b, 0)} ${s.name}`).join(', ');
  $('#jobs-chart-caption').textContent = buckets.length
    ? `Jobs per ${jobs.bucket_seconds || 60} s bucket from ${fmtTime(buckets[0].start)} to ${fmtTime(buckets[buckets.length - 1].start)}: ${totals} in all.`
    : 'No jobs in the window.';
}

function drawLive() {
  const names = ['queued', 'running', 'queue depth', 'open streams'];
  const keys = ['queued', 'running', 'queue', 'streams'];
  const series = keys.map((k, i) => ({ name: names[i], values: live.map((s) => s[k]) }));
  lineChart($('#live-chart'), series, live.map((s) => fmtTime(s.t)), 'time (polled every 2 s)', 'count');
  legend($('#live-legend'), names);
  const now = live[live.length - 1];
  $('#live-chart-caption').textContent = `${live.length} samples since ${fmtTime(live[0].t)}; now ${now.queued} queued, ${now.running} running, queue depth ${now.queue}, ${now.streams} open streams.`;
}

// Horizontal bars: p50 and p95 time to first token per model.
function drawTTFT(models) {
  const target = $('#ttft-chart');
  const W = widthOf(target), L = 120, R = 70, row = 34, T = 6;
  const H = T + Math.max(1, models.length) * row + 24;
  const values = models.flatMap((m) => [m.time_to_first_token_ms?.p50 ?? 0, m.time_to_first_token_ms?.p95 ?? 0]);
  const max = niceMax(Math.max(0, ...values));
  const w = (v) => ((W - L - R) * v) / max;
  const nodes = [];
  models.forEach((m, i) => {
    const t = m.time_to_first_token_ms || {};
    const top = T + i * row;
    nodes.push(svg('text', { x: L - 8, y: top + 18, 'text-anchor': 'end' }, m.name));
    if (t.p50 === null || t.p50 === undefined) {
      nodes.push(svg('text', { x: L, y: top + 18 }, 'no samples'));
      return;
    }
    nodes.push(svg('rect', { class: 'k1', x: L, y: top + 3, width: Math.max(1, w(t.p50)), height: 12 }),
      svg('text', { x: L + w(t.p50) + 4, y: top + 13 }, `${ms(t.p50)} ms`),
      svg('rect', { class: 'k2', x: L, y: top + 16, width: Math.max(1, w(t.p95 ?? 0)), height: 12 }),
      svg('text', { x: L + w(t.p95 ?? 0) + 4, y: top + 26 }, `${ms(t.p95)} ms`));
  });
  nodes.push(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - 22 }),
    svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, `milliseconds (scale to ${max})`));
  target.setAttribute('viewBox', `0 0 ${W} ${H}`);
  target.setAttribute('height', H);
  target.replaceChildren(...nodes);
  legend($('#ttft-legend'), ['p50', 'p95']);
  $('#ttft-chart-caption').textContent = models.length
    ? models.map((m) => `${m.name}: ${m.time_to_first_token_ms?.p50 == null ? 'no samples' : `p50 ${ms(m.time_to_first_token_ms.p50)} ms, p95 ${ms(m.time_to_first_token_ms.p95)} ms`}`).join('; ') + '. The table above has the same numbers.'
    : 'No models configured.';
}

// ---- Start -------------------------------------------------------------------

$('#signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  token = $('#admin-token').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#admin-token').value = '';
  $('#signin-error').textContent = '';
  last = null;
  refresh();
});
$('#signout').addEventListener('click', () => signOut('Signed out.'));
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); else clearTimeout(timer); });

if (token) refresh(); else showSignIn();
