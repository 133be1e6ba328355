// Shared by the app page and the admin dashboard: where the API is, a fetch
// that logs every request, a Server-Sent Events reader over fetch that
// resumes by Last-Event-ID, and small DOM helpers. No dependencies.

// The API base: ?api=URL when the page is served from another origin than
// Keel (it must be in Keel's --cors-origins), else this page's origin.
export const API = (new URLSearchParams(location.search).get('api') || '').replace(/\/+$/, '');

export function apiURL(path) {
  return /^https?:/i.test(path) ? path : API + path;
}

// What the debug log shows of a URL: its path and query, without the base.
function shortPath(url) {
  try {
    const u = new URL(url, location.href);
    return u.pathname + u.search;
  } catch {
    return String(url);
  }
}

// ---- The debug log ---------------------------------------------------------
// Plain objects {kind: 'request'|'event'|'reconnect'|'error', t, ...}, newest
// last, also readable as window.keelDebug (the browser tests read it).

const LOG_CAP = 1000;
const debugLog = [];
const listeners = new Set();
window.keelDebug = debugLog;

export function record(entry) {
  entry.t = Math.round(performance.now());
  entry.at = new Date().toISOString();
  debugLog.push(entry);
  if (debugLog.length > LOG_CAP) debugLog.splice(0, debugLog.length - LOG_CAP);
  for (const fn of listeners) fn(entry);
}

export function onDebug(fn) {
  listeners.add(fn);
}

export function clearDebug() {
  debugLog.length = 0;
}

// One line of text for a log entry.
export function describeEntry(e) {
  const time = e.at.slice(11, 23);
  const where = e.instance ? ` @${e.instance}` : '';
  switch (e.kind) {
    case 'request':
      return `${time} ${e.method} ${e.path} → ${e.status} ${e.ms} ms${where}${e.requestId ? ' #' + e.requestId : ''}${e.stream ? ' (stream)' : ''}`;
    case 'event':
      return `${time} event ${e.id ?? '-'} ${e.type} ${e.data}${where}`;
    case 'reconnect':
      return `${time} reconnect ${e.path} in ${e.delay} ms, Last-Event-ID ${e.lastEventId ?? '(none)'} (${e.reason})`;
    default:
      return `${time} ${e.kind} ${e.method ? e.method + ' ' : ''}${e.path ?? ''} ${e.message ?? ''}${e.offset != null ? ` at offset ${e.offset}` : ''}`;
  }
}

// ---- Requests --------------------------------------------------------------

export class NetworkError extends Error {}

// An error answer in Keel's shape {"error": {code, message, hint}}.
export class ApiError extends Error {
  constructor(status, code, message, hint, retryAfter) {
    super(message || `HTTP ${status}`);
    Object.assign(this, { status, code, hint, retryAfter });
  }

  static async from(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: keep the status
    }
    const e = (body && body.error) || {};
    const retry = Number(response.headers.get('Retry-After'));
    return new ApiError(response.status, e.code || `http_${response.status}`, e.message || `HTTP ${response.status}`, e.hint || null,
      Number.isFinite(retry) ? retry : null);
  }
}

// fetch with the session cookie, logged. Returns the Response; throws
// NetworkError when no answer came. Options: headers, json (a body sent as
// JSON), body, signal, stream (log it as an event stream of that job).
export async function request(method, path, options = {}) {
  const url = apiURL(path);
  const headers = new Headers(options.headers || {});
  let body = options.body;
  if (options.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(options.json);
  }
  const started = performance.now();
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: 'include', cache: 'no-store', signal: options.signal });
  } catch (error) {
    const aborted = error && error.name === 'AbortError';
    record({ kind: 'error', method, path: shortPath(url), message: aborted ? 'aborted' : `network error: ${error.message || error}`,
      ms: Math.round(performance.now() - started) });
    if (aborted) throw error;
    throw new NetworkError(error.message || String(error));
  }
  const entry = {
    kind: 'request', method, path: shortPath(url), status: response.status, ms: Math.round(performance.now() - started),
    instance: response.headers.get('Keel-Instance'), requestId: response.headers.get('X-Request-Id'),
  };
  if (options.stream) entry.stream = options.stream;
  record(entry);
  return response;
}

// request() for a JSON answer: the parsed body, null for 204, ApiError otherwise.
export async function requestJSON(method, path, options = {}) {
  const response = await request(method, path, options);
  if (!response.ok) throw await ApiError.from(response);
  if (response.status === 204) return null;
  return response.json();
}

// ---- Server-Sent Events over fetch ------------------------------------------

// A byte-stream parser following the HTML spec's rules: lines end in CR, LF
// or CRLF; `:` starts a comment; a blank line dispatches the event (one with
// no data is not dispatched, but its id still counts); an event cut off by
// the end of the stream is dropped.
class SSEParser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.buffer = '';
    this.data = [];
    this.type = '';
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    for (;;) {
      const match = /[\r\n]/.exec(this.buffer);
      if (!match) break;
      const i = match.index;
      // A CR at the very end may be the first half of a CRLF: wait for more.
      if (this.buffer[i] === '\r' && i === this.buffer.length - 1) break;
      const skip = this.buffer[i] === '\r' && this.buffer[i + 1] === '\n' ? 2 : 1;
      const line = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + skip);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line[0] === ':') return; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.type = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.onRetry(Number(value));
  }

  dispatch() {
    const id = this.id;
    const type = this.type || 'message';
    const data = this.data.join('\n');
    const had = this.data.length > 0;
    this.data = [];
    this.type = '';
    this.onEvent(had ? { id, type, data } : null, id);
  }
}

function shorten(text, max = 100) {
  return text.length > max ? text.slice(0, max) + '…' : text;
}

// Sleeps, or ends early (resolving false) when the signal aborts.
export function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve(false);
    const timer = setTimeout(() => resolve(true), ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); resolve(false); }, { once: true });
  });
}

const IDLE_LIMIT_MS = 45000; // no byte at all (not even a keep-alive) for this long: the connection is dead

// Follows a job's event stream until `isTerminal(event)` (by default the
// `done` event). On any break (network error, the stream ending early, a 5xx
// from a balancer) it reconnects after the server's `retry:` delay (doubling
// on repeated failures, at most 30 s) with `Last-Event-ID` set to the last
// event it dispatched, so Keel replays from there and nothing is lost or
// repeated. `onEvent(event, {instance})` gets {id, type, data (parsed JSON,
// or the text when not JSON)}. Resolves with {ended: 'done' | 'no-content'
// | 'aborted', lastEventId}; rejects with ApiError on 4xx.
export async function followEvents(path, options = {}) {
  const isTerminal = options.isTerminal || ((event) => event.type === 'done');
  const job = options.job || null;
  let lastEventId = options.lastEventId ?? null;
  let retry = 2000;
  let failures = 0;
  let reason = null;
  for (let attempt = 0; ; attempt++) {
    if (options.signal && options.signal.aborted) return { ended: 'aborted', lastEventId };
    if (attempt > 0) {
      const delay = Math.min(30000, retry * 2 ** Math.max(0, failures - 1));
      record({ kind: 'reconnect', path, job, lastEventId, delay, attempt, reason });
      if (options.onReconnect) options.onReconnect({ lastEventId, delay, reason });
      if (!(await sleep(delay, options.signal))) return { ended: 'aborted', lastEventId };
    }
    // One controller per connection: aborted by the caller, or by the idle watchdog.
    const connection = new AbortController();
    const stop = () => connection.abort();
    if (options.signal) options.signal.addEventListener('abort', stop, { once: true });
    const headers = { Accept: 'text/event-stream' };
    if (lastEventId !== null) headers['Last-Event-ID'] = lastEventId;
    let terminal = false;
    try {
      const response = await request('GET', path, { headers, signal: connection.signal, stream: job || path });
      if (response.status === 204) return { ended: 'no-content', lastEventId };
      if (!response.ok) {
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) throw await ApiError.from(response);
        failures++;
        reason = `HTTP ${response.status}`;
        continue;
      }
      const instance = response.headers.get('Keel-Instance');
      if (options.onOpen) options.onOpen({ instance, lastEventId });
      const parser = new SSEParser((event, id) => {
        if (id !== null) lastEventId = id;
        if (!event || terminal) return;
        let data = event.data;
        try { data = JSON.parse(event.data); } catch { /* keep the text */ }
        failures = 0;
        record({ kind: 'event', job, id: event.id, type: event.type, data: shorten(event.data), instance });
        options.onEvent({ id: event.id, type: event.type, data }, { instance });
        if (isTerminal({ type: event.type, data })) terminal = true;
      }, (ms) => { retry = ms; });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let watchdog;
      const arm = () => { clearTimeout(watchdog); watchdog = setTimeout(stop, IDLE_LIMIT_MS); };
      arm();
      try {
        while (!terminal) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          parser.push(decoder.decode(value, { stream: true }));
        }
      } finally {
        clearTimeout(watchdog);
        if (terminal) reader.cancel().catch(() => {});
      }
      if (terminal) return { ended: 'done', lastEventId };
      failures++;
      reason = 'the stream ended before the job did';
    } catch (error) {
      if (error instanceof ApiError) throw error;
      if (options.signal && options.signal.aborted) return { ended: 'aborted', lastEventId };
      failures++;
      reason = connection.signal.aborted ? 'no data for 45 s' : `network error: ${error.message || error}`;
    } finally {
      if (options.signal) options.signal.removeEventListener('abort', stop);
    }
  }
}

// ---- Small helpers -------------------------------------------------------

// A random UUID (crypto.randomUUID needs a secure context; this does not).
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Builds an element: attributes (class, data-*, aria-*, …; `on*` functions
// become listeners) and children (strings become text nodes, never HTML).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function fmtTime(date) {
  return new Date(date).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}
