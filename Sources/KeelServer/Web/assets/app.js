// The app page: a session, resumable uploads that become documents, and chat
// over them with streamed answers that survive reconnects and reloads.
import {
  API, request, requestJSON, ApiError, NetworkError, followEvents, record, onDebug, clearDebug, describeEntry,
  sleep, uuid, el, fmtBytes, fmtTime,
} from './common.js';

const $ = (selector) => document.querySelector(selector);
const CHUNK = 1024 * 1024; // bytes per tus PATCH
const STORE = `keel:${API || location.origin}`; // localStorage keys, per API
window.keelTimings = []; // {asked, firstToken, done} per question, in performance.now() ms

const state = {
  documents: new Map(), // id -> document, as GET /api/documents shows it
  watching: new Set(), // documents whose ingest is being followed
  chatId: null,
  chats: [],
  reply: null, // the ReplyView streaming now (Stop acts on it)
};

// ---- Notices and the session --------------------------------------------

function notice(text) {
  const box = $('#notice');
  box.textContent = text;
  box.hidden = !text;
}

function setSession(stateName, text) {
  const out = $('#session-status');
  out.dataset.state = stateName;
  out.textContent = text;
}

// GET /api/session; on 401, POST one (which sets the keel_session cookie).
async function ensureSession() {
  setSession('busy', 'Connecting…');
  let response = await request('GET', '/api/session');
  let created = false;
  if (response.status === 401) {
    response = await request('POST', '/api/session', { json: {} });
    created = true;
  }
  if (!response.ok) throw await ApiError.from(response);
  const session = await response.json(); // holds the token when created: never shown
  setSession('ready', `${created ? 'New session' : 'Session'} · expires ${new Date(session.expires_at).toLocaleString()}`);
  return created;
}

// ---- Uploads (tus 1.0) --------------------------------------------------------

// Unfinished uploads, remembered across reloads: fingerprint -> {url, name, size, type, lastModified}.
function savedUploads() {
  try { return JSON.parse(localStorage.getItem(`${STORE}:uploads`)) || {}; } catch { return {}; }
}

function saveUpload(fp, entry) {
  const all = savedUploads();
  if (entry) all[fp] = entry; else delete all[fp];
  localStorage.setItem(`${STORE}:uploads`, JSON.stringify(all));
  renderUnfinished();
}

const fingerprint = (file) => `${file.name}|${file.size}|${file.lastModified}`;
const b64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
const tus = { 'Tus-Resumable': '1.0.0' };

// One file's upload, with its row in #uploads.
class Upload {
  constructor(file) {
    this.file = file;
    this.fp = fingerprint(file);
    this.url = null;
    this.offset = 0;
    this.progress = el('progress', { max: file.size || 1, value: 0, 'aria-label': `Upload of ${file.name}` });
    this.status = el('output', { class: 'upload-status', 'aria-live': 'polite' }, 'Starting…');
    this.button = el('button', { type: 'button', onclick: () => this.toggle() }, 'Pause');
    this.row = el('li', { class: 'upload', 'data-state': 'uploading' },
      el('span', { class: 'name' }, file.name), ` ${fmtBytes(file.size)}`, this.progress, this.status, this.button);
    $('#uploads').append(this.row);
  }

  show(text, stateName) {
    this.status.textContent = text;
    if (stateName) this.row.dataset.state = stateName;
  }

  toggle() {
    if (this.controller) { this.controller.abort(); return; }
    this.start();
  }

  // The server's offset for a remembered upload, or null when it is gone
  // (404, 410: expired, deleted). Any other failure (a passing 5xx or 429)
  // throws, and the upload stays remembered for the next try.
  async head(url) {
    const response = await request('HEAD', url, { headers: tus, signal: this.controller.signal });
    if (uploadGone(response.status)) return null;
    if (!response.ok) throw new ApiError(response.status, `http_${response.status}`, `The server answered ${response.status}; try again.`);
    return Number(response.headers.get('Upload-Offset'));
  }

  async create() {
    const type = this.file.type || 'application/octet-stream';
    const response = await request('POST', '/api/uploads', {
      signal: this.controller.signal,
      headers: {
        ...tus, 'Upload-Length': String(this.file.size),
        // `document` makes Keel ingest it on completion even if this page is gone by then.
        'Upload-Metadata': `filename ${b64(this.file.name)},filetype ${b64(type)},document ${b64('1')}`,
      },
    });
    if (response.status !== 201) throw await ApiError.from(response);
    this.url = new URL(response.headers.get('Location'), API ? API + '/' : location.href).href;
    this.offset = 0;
    saveUpload(this.fp, { url: this.url, name: this.file.name, size: this.file.size, lastModified: this.file.lastModified });
  }

  // One PATCH of up to CHUNK bytes at the current offset.
  async patch() {
    const response = await request('PATCH', this.url, {
      signal: this.controller.signal,
      headers: { ...tus, 'Upload-Offset': String(this.offset), 'Content-Type': 'application/offset+octet-stream' },
      body: this.file.slice(this.offset, this.offset + CHUNK),
    });
    if (response.status === 204) {
      this.offset = Number(response.headers.get('Upload-Offset'));
      return;
    }
    const error = await ApiError.from(response);
    if (response.status === 409 || response.status === 423 || response.status >= 500) {
      // Offset mismatch, another PATCH holds it, or a passing server error: ask where we are and go on.
      await sleep((error.retryAfter || 1) * 1000, this.controller.signal);
      const offset = await this.head(this.url);
      if (offset === null) throw error;
      this.offset = offset;
      return;
    }
    throw error;
  }

  async start() {
    this.controller = new AbortController();
    this.button.textContent = 'Pause';
    this.row.dataset.state = 'uploading';
    try {
      const saved = savedUploads()[this.fp];
      if (!this.url && saved) {
        const offset = await this.head(saved.url);
        if (offset === null) saveUpload(this.fp, null);
        else {
          this.url = saved.url;
          this.offset = offset;
          this.show(`Resuming from ${fmtBytes(offset)} (the server's offset)`);
          this.row.append(el('span', { class: 'hint resumed' }, ` Resumed at ${fmtBytes(offset)}, where the server stopped.`));
          record({ kind: 'resume', path: new URL(saved.url).pathname, offset });
        }
      } else if (this.url) {
        const offset = await this.head(this.url);
        if (offset !== null) this.offset = offset;
        else { this.url = null; saveUpload(this.fp, null); } // gone (expired, deleted): start over
      }
      if (!this.url) await this.create();
      let failures = 0;
      while (this.offset < this.file.size) {
        this.progress.value = this.offset;
        if (!failures) this.show(`${fmtBytes(this.offset)} of ${fmtBytes(this.file.size)}`);
        try {
          await this.patch();
          failures = 0;
        } catch (error) {
          if (!(error instanceof NetworkError) || ++failures > 8) throw error;
          // Lost connection: wait, then ask the server how much it kept.
          this.show(`Connection lost; retrying (${failures})…`);
          await sleep(Math.min(15000, 500 * 2 ** failures), this.controller.signal);
          const offset = await this.head(this.url).catch(() => null);
          if (offset !== null) this.offset = offset;
        }
        if (this.controller.signal.aborted) throw new DOMException('paused', 'AbortError');
      }
      this.progress.value = this.file.size;
      this.controller = null;
      this.button.remove();
      this.show('Uploaded; making it a document…', 'complete');
      const document = await makeDocument(this.url);
      saveUpload(this.fp, null);
      // The document itself is listed under "Your documents", with its progress.
      this.show(document.status === 'processing' ? 'Uploaded · reading it below' : `Uploaded · ${document.status}`, 'done');
      setTimeout(() => this.row.remove(), 4000);
    } catch (error) {
      this.controller = null;
      if (error.name === 'AbortError') {
        this.show(`Paused at ${fmtBytes(this.offset)}`, 'paused');
        this.button.textContent = 'Resume';
      } else {
        if (error.status === 415) saveUpload(this.fp, null); // stored, but not a document: nothing to resume
        this.show(`Failed: ${error.message}`, 'failed');
        this.button.textContent = 'Retry';
      }
    }
  }
}

// A finished upload becomes a document (idempotent: asking again returns it).
async function makeDocument(uploadURL) {
  const uploadID = new URL(uploadURL).pathname.split('/').pop();
  try {
    const document = await requestJSON('POST', '/api/documents', { json: { upload_id: uploadID } });
    upsertDocument(document);
    return document;
  } catch (error) {
    if (error.status === 415) error.message = 'Keel cannot read this type of file as a document.';
    throw error;
  }
}

const uploads = new Map(); // fingerprint -> Upload on this page
function chooseFiles(files) {
  for (const file of files) {
    const known = uploads.get(fingerprint(file));
    if (known && known.row.isConnected) {
      if (!known.controller && known.row.dataset.state !== 'done') known.start(); // paused or failed: go on
      continue;
    }
    const upload = new Upload(file);
    uploads.set(upload.fp, upload);
    upload.start();
  }
  $('#file-input').value = '';
}

// Remembered uploads: list them; finish the ones whose bytes all arrived.
async function renderUnfinished() {
  const all = savedUploads();
  const list = $('#unfinished-list');
  list.replaceChildren(...Object.entries(all).map(([fp, entry]) => el('li', { 'data-fp': fp },
    `${entry.name} (${fmtBytes(entry.size)}) `,
    el('button', { type: 'button', onclick: () => forgetUpload(fp, entry) }, 'Forget'))));
  $('#unfinished').hidden = list.children.length === 0;
}

// The server no longer has the upload: nothing to resume.
function uploadGone(status) {
  return status === 404 || status === 410;
}

async function checkUnfinished() {
  for (const [fp, entry] of Object.entries(savedUploads())) {
    if ([...document.querySelectorAll('.upload .name')].some((n) => n.textContent === entry.name)) continue;
    const response = await request('HEAD', entry.url, { headers: tus }).catch(() => null);
    if (!response) continue;
    if (uploadGone(response.status)) { saveUpload(fp, null); continue; }
    if (!response.ok) continue; // a passing failure: keep it, ask again next time
    const offset = Number(response.headers.get('Upload-Offset'));
    const item = $('#unfinished-list').querySelector(`[data-fp="${CSS.escape(fp)}"]`);
    if (offset >= entry.size) {
      await makeDocument(entry.url).catch(() => {});
      saveUpload(fp, null);
    } else if (item) {
      item.prepend(el('progress', { max: entry.size || 1, value: offset, 'aria-label': `${entry.name}: ${fmtBytes(offset)} stored` }), ' ');
      item.append(` ${fmtBytes(offset)} of ${fmtBytes(entry.size)} on the server`);
    }
  }
}

async function forgetUpload(fp, entry) {
  await request('DELETE', entry.url, { headers: tus }).catch(() => {});
  saveUpload(fp, null);
}

// ---- Documents ------------------------------------------------------------

async function loadDocuments() {
  const page = await requestJSON('GET', '/api/documents?limit=100');
  for (const document of page.documents.reverse()) upsertDocument(document);
}

function upsertDocument(document) {
  const known = state.documents.get(document.id) || {};
  const merged = { ...known, ...document };
  state.documents.set(document.id, merged);
  renderDocument(merged);
  renderScope();
  if (merged.status === 'processing') watchIngest(merged);
}

function renderDocument(document) {
  const list = $('#documents');
  let item = list.querySelector(`[data-id="${CSS.escape(document.id)}"]`);
  if (!item) {
    item = el('li', { class: 'document', 'data-id': document.id });
    list.prepend(item);
  }
  item.dataset.status = document.status;
  const status = el('output', { class: 'doc-status', 'aria-live': 'polite' });
  if (document.status === 'processing') {
    const stage = document.stage ? `${document.stage.replace(/_/g, ' ')} ` : 'queued ';
    status.append(`Processing: ${stage}`, el('progress', { max: 100, value: document.percent ?? null, 'aria-label': 'Ingestion' }));
  } else if (document.status === 'failed') {
    status.textContent = `Failed: ${(document.error && document.error.message) || 'could not be read'}`;
  } else {
    status.textContent = `Ready · ${document.section_count} sections · ${document.chars} characters${document.pages ? ` · ${document.pages} pages` : ''}`;
  }
  const children = [
    el('h4', { class: 'doc-name' }, document.title || document.filename),
    el('p', { class: 'hint' }, `${document.filename} · ${document.format} · ${fmtBytes(document.bytes)}`),
    status,
  ];
  if (document.sections && document.sections.length) {
    const sections = el('ol', { class: 'sections' }, document.sections.map((s) => {
      const link = el('a', {
        class: 'section-link', href: `#section-${document.id}-${s.index}`, 'data-doc': document.id, 'data-index': s.index,
        onclick: (event) => { event.preventDefault(); openSection(document.id, s.index, link); },
      }, s.title || `Section ${s.index + 1}`);
      const row = el('li', { class: 'section' }, link, el('span', { class: 'hint' }, ` ${s.chars} chars`));
      row.style.paddingInlineStart = `${(s.level - 1) * 0.9}em`;
      return row;
    }));
    const open = item.querySelector('details.doc-sections')?.open;
    children.push(el('details', { class: 'doc-sections', open: open !== false },
      el('summary', {}, `${document.sections.length} sections`), sections));
  }
  children.push(el('button', { type: 'button', class: 'link', onclick: () => deleteDocument(document) }, 'Delete'));
  item.replaceChildren(...children);
  $('#documents-empty').hidden = state.documents.size > 0;
}

// Follows a processing document's ingest job, then reads its sections.
async function watchIngest(document) {
  if (state.watching.has(document.id)) return;
  state.watching.add(document.id);
  try {
    if (document.job_id) {
      await followEvents(`/api/jobs/${document.job_id}/events`, {
        job: document.job_id,
        onEvent: (event) => {
          if (event.type === 'progress' && state.documents.has(document.id)) {
            Object.assign(state.documents.get(document.id), { stage: event.data.stage, percent: event.data.percent });
            renderDocument(state.documents.get(document.id));
          }
        },
      }).catch(() => {}); // fall back to polling below
    }
    for (let i = 0; i < 120; i++) {
      if (!state.documents.has(document.id)) return; // deleted meanwhile
      const fresh = await requestJSON('GET', `/api/documents/${document.id}`);
      state.documents.set(document.id, { ...state.documents.get(document.id), ...fresh });
      renderDocument(state.documents.get(document.id));
      renderScope();
      if (fresh.status !== 'processing') return;
      await sleep(1000);
    }
  } catch (error) {
    notice(`Could not follow ${document.filename}: ${error.message}`);
  } finally {
    state.watching.delete(document.id);
  }
}

// The outline of a ready document seen in the list (the list has no sections).
async function loadOutline(id) {
  const fresh = await requestJSON('GET', `/api/documents/${id}`);
  state.documents.set(id, { ...state.documents.get(id), ...fresh });
  renderDocument(state.documents.get(id));
}

async function deleteDocument(document) {
  if (!confirm(`Delete ${document.title || document.filename}?`)) return;
  try {
    await requestJSON('DELETE', `/api/documents/${document.id}`);
    state.documents.delete(document.id);
    $('#documents').querySelector(`[data-id="${CSS.escape(document.id)}"]`)?.remove();
    $('#documents-empty').hidden = state.documents.size > 0;
    renderScope();
  } catch (error) {
    notice(`Could not delete: ${error.message}`);
  }
}

// The "only these documents" choices of the question form.
function renderScope() {
  const box = $('#scope-documents');
  const ticked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
  const ready = [...state.documents.values()].filter((d) => d.status === 'ready');
  box.replaceChildren(...ready.map((d) => el('label', {},
    el('input', { type: 'checkbox', value: d.id, checked: ticked.has(d.id) }), ` ${d.title || d.filename}`)));
  if (!ready.length) box.append(el('span', { class: 'hint' }, 'No document is ready yet.'));
}

// A section's text in the dialog.
const sectionCache = new Map();
async function openSection(documentID, index, opener) {
  const dialog = $('#section-dialog');
  const key = `${documentID}/${index}`;
  try {
    let section = sectionCache.get(key);
    if (!section) {
      section = await requestJSON('GET', `/api/documents/${documentID}/sections/${index}`);
      sectionCache.set(key, section);
    }
    $('#section-title').textContent = section.title || `Section ${index + 1}`;
    $('#section-path').textContent = (section.path || []).join(' › ');
    $('#section-text').replaceChildren(...section.text.split(/\n{2,}/).map((p) => el('p', {}, p)));
  } catch (error) {
    $('#section-title').textContent = 'Section unavailable';
    $('#section-path').textContent = '';
    $('#section-text').replaceChildren(el('p', {}, error.message));
  }
  dialog.dataset.section = key;
  if (!dialog.open) dialog.showModal();
  dialog.addEventListener('close', () => opener && opener.focus(), { once: true });
}

// ---- Chats ------------------------------------------------------------------

async function loadChats() {
  const page = await requestJSON('GET', '/api/chats?limit=50');
  state.chats = page.chats;
  renderChats();
}

function renderChats() {
  const current = state.chats.find((c) => c.id === state.chatId);
  if (current && current.title) $('#chat-title').textContent = current.title;
  $('#chats').replaceChildren(...state.chats.map((chat) => el('li', {},
    el('button', {
      type: 'button', class: 'chat-item', 'data-id': chat.id, 'aria-current': chat.id === state.chatId ? 'true' : null,
      onclick: () => openChat(chat.id),
    }, chat.title || 'Untitled', el('span', { class: 'hint' }, ` ${chat.message_count} messages · ${fmtTime(chat.updated_at)}`)))));
}

async function newChat() {
  const chat = await requestJSON('POST', '/api/chats', { json: {} });
  state.chats.unshift(chat);
  showChat(chat, []);
  $('#question').focus();
  return chat;
}

function showChat(chat, messages) {
  if (state.reply) state.reply.detach(); // its stream stops; reopening its chat streams it again
  state.chatId = chat.id;
  localStorage.setItem(`${STORE}:chat`, chat.id);
  $('#chat-title').textContent = chat.title || 'New conversation';
  $('#messages').replaceChildren();
  renderChats();
  const answered = new Set(messages.filter((m) => m.role === 'assistant').map((m) => m.job_id));
  for (const message of messages) {
    if (message.role === 'user') {
      addUserMessage(message.content);
      // A reply still being written (the page was reloaded mid-answer): stream it from the start.
      const job = message.reply_job_id;
      if (job && !answered.has(job)) {
        const view = new ReplyView(job);
        view.follow(null);
      }
    } else {
      new ReplyView(message.job_id).showStored(message);
    }
  }
}

async function openChat(id) {
  try {
    const chat = await requestJSON('GET', `/api/chats/${id}`);
    showChat(chat, chat.messages);
  } catch (error) {
    if (error.status === 404) {
      localStorage.removeItem(`${STORE}:chat`);
      state.chats = state.chats.filter((c) => c.id !== id);
      renderChats();
    }
    notice(`Could not open the conversation: ${error.message}`);
  }
}

function addUserMessage(text) {
  const item = el('li', { class: 'message user' }, el('p', { class: 'who' }, 'You'), el('p', { class: 'text' }, text));
  const box = $('#messages');
  box.append(item);
  box.scrollTop = box.scrollHeight;
  return item;
}

// One assistant answer: streamed from the reply job's events, or shown as stored.
class ReplyView {
  constructor(jobID) {
    this.job = jobID;
    this.text = document.createTextNode(''); // the answer; model text only ever goes into this text node
    this.attempts = ['']; // the text since each `reset` (a retried attempt replays the answer so far)
    this.models = [];
    this.stage = el('span', { class: 'stage' });
    this.modelNote = el('span', { class: 'model-note' });
    this.notes = el('ul', { class: 'notes' });
    this.sources = el('ol', { class: 'sources', 'aria-label': 'Sources' });
    this.answer = el('div', { class: 'answer', 'aria-live': 'polite', 'aria-busy': 'true' }, this.text);
    this.reasoning = null;
    this.item = el('li', { class: 'message assistant', 'data-job': jobID, 'data-state': 'waiting' },
      el('p', { class: 'who' }, 'Keel ', this.modelNote, ' ', this.stage), this.answer, this.notes, this.sources);
    $('#messages').append(this.item);
  }

  setState(name, label) {
    this.item.dataset.state = name;
    this.stage.textContent = label || '';
  }

  // Appends a piece of the answer. After a `reset`, the new attempt's text
  // (which starts with the whole answer so far) takes over once it has any,
  // appending only what is new, so the screen neither blinks nor repeats.
  token(piece) {
    const current = this.attempts.length - 1;
    this.attempts[current] += piece;
    const next = this.attempts[current];
    const shown = this.text.data;
    const box = $('#messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 48; // follow the answer unless the reader scrolled up
    if (next.startsWith(shown)) this.text.appendData(next.slice(shown.length));
    else if (!shown.startsWith(next)) this.text.data = next; // replay differs: show the server's text
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  setSources(sources) {
    this.sources.replaceChildren(...sources.map((s) => {
      const link = el('a', {
        class: 'source-link', href: `#section-${s.document_id}-${s.section_index}`, 'data-doc': s.document_id, 'data-index': s.section_index,
        title: s.text, onclick: (event) => { event.preventDefault(); openSection(s.document_id, s.section_index, link); },
      }, `[${s.number}] ${s.document} › ${s.section_title}`);
      return el('li', {}, link);
    }));
  }

  addModel(name, provider) {
    if (this.models[this.models.length - 1] !== name) this.models.push(name);
    this.modelNote.textContent = `· ${this.models.join(' → ')}${provider ? ` (${provider})` : ''}`;
    this.modelNote.dataset.model = name;
  }

  note(cls, text) {
    this.notes.append(el('li', { class: cls }, text));
  }

  fallback(f) {
    this.note('fallback-note', `Fallback: ${f.from} → ${f.to} (${f.reason}${f.after_first_token ? ', continued the answer' : ''})`);
  }

  usage(u) {
    const existing = this.notes.querySelector(`[data-usage="${CSS.escape(u.model)}"]`);
    const text = `${u.model}: ${u.input_tokens} tokens in, ${u.output_tokens} out`;
    if (existing) existing.textContent = text;
    else this.notes.append(el('li', { class: 'usage-note', 'data-usage': u.model }, text));
  }

  reason(piece) {
    if (!this.reasoning) {
      this.reasoningText = document.createTextNode('');
      this.reasoning = el('details', { class: 'reasoning' }, el('summary', {}, 'Thinking'), el('p', {}, this.reasoningText));
      this.item.insertBefore(this.reasoning, this.answer);
    }
    this.reasoningText.appendData(piece);
  }

  // A stored message (a reopened chat).
  showStored(message) {
    this.text.data = message.content;
    this.answer.setAttribute('aria-busy', 'false');
    for (const name of message.models || []) this.addModel(name);
    for (const f of message.fallbacks || []) this.fallback(f);
    for (const u of message.usage || []) this.usage(u);
    this.setSources(message.sources || []);
    if (message.status === 'stopped') this.setState('stopped', '· stopped');
    else if (message.status === 'failed') {
      this.setState('failed', '· failed');
      this.note('error-note', (message.error && message.error.message) || 'The answer failed.');
    } else this.setState('done', message.retrieval_only ? '· passages only (no models configured)' : '');
  }

  // Streams the reply job's events; `timing` is this question's keelTimings entry.
  async follow(timing) {
    state.reply = this;
    this.controller = new AbortController();
    $('#stop').disabled = false;
    $('#send').disabled = true;
    this.setState('waiting', '· waiting');
    try {
      const end = await followEvents(`/api/jobs/${this.job}/events`, {
        job: this.job,
        signal: this.controller.signal,
        onEvent: (event) => this.handle(event, timing),
        onReconnect: ({ lastEventId }) => { $('#answer-status').textContent = `Reconnecting (from event ${lastEventId ?? 0})…`; },
        onOpen: () => { $('#answer-status').textContent = ''; },
      });
      if (end.ended === 'no-content' && !['done', 'stopped', 'failed'].includes(this.item.dataset.state)) {
        // Ended before we saw its end: read the job instead.
        this.finish(await requestJSON('GET', `/api/jobs/${this.job}`));
      }
    } catch (error) {
      this.setState('failed', '· could not be followed');
      this.note('error-note', error.message);
    } finally {
      if (timing && !timing.done) timing.done = performance.now();
      this.answer.setAttribute('aria-busy', 'false');
      if (state.reply === this) {
        state.reply = null;
        $('#stop').disabled = true;
        $('#send').disabled = false;
      }
    }
  }

  detach() {
    if (this.controller) this.controller.abort();
  }

  handle(event, timing) {
    const d = event.data || {};
    switch (event.type) {
      case 'progress':
        if (this.item.dataset.state === 'waiting') this.stage.textContent = `· ${String(d.stage || '').replace(/_/g, ' ')}`;
        break;
      case 'sources': this.setSources(d.sources || []); break;
      case 'model': this.pending = d; break; // shown once it writes (a model may fail before its first token)
      case 'fallback': this.fallback(d); break;
      case 'reasoning': this.reason(d.text || ''); break;
      case 'usage': this.usage(d); break;
      case 'reset': this.attempts.push(''); break;
      case 'token':
        if (this.item.dataset.state !== 'streaming') this.setState('streaming', '· answering');
        if (this.pending) { this.addModel(this.pending.name, this.pending.provider); this.pending = null; }
        this.token(d.text || '');
        if (timing && !timing.firstToken) timing.firstToken = performance.now();
        break;
      case 'done': this.finish(d); break;
      default: break; // logged only
    }
  }

  // The job's end: its `done` data (the final job).
  finish(job) {
    if (job.status === 'succeeded') {
      const stored = job.result && job.result.content;
      if (typeof stored === 'string' && stored !== this.text.data) {
        record({ kind: 'error', job: this.job, message: `streamed text (${this.text.data.length} chars) differs from the stored answer (${stored.length}); showing the stored one` });
        this.text.data = stored;
      }
      if (this.pending) this.addModel(this.pending.name, this.pending.provider); // answered with no text
      this.setState('done', job.result && job.result.retrieval_only ? '· passages only (no models configured)' : '');
    } else if (job.status === 'cancelled') {
      this.setState('stopped', '· stopped');
    } else {
      this.setState('failed', '· failed');
      this.note('error-note', (job.error && job.error.message) || 'The answer failed.');
    }
    $('#answer-status').textContent = '';
    loadChats().catch(() => {});
  }
}

// Sends the question; the same Idempotency-Key on every retry of this send,
// so a retried request never asks twice.
async function postMessage(chatID, body, key) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await request('POST', `/api/chats/${chatID}/messages`, {
        json: body, headers: { 'Idempotency-Key': key, Accept: 'application/json' },
      });
    } catch (error) {
      if (error instanceof NetworkError && attempt < 5) { await sleep(500 * 2 ** attempt); continue; }
      throw error;
    }
    if ([429, 502, 503, 504].includes(response.status) && attempt < 5) {
      const wait = Number(response.headers.get('Retry-After'));
      await sleep(wait > 0 ? wait * 1000 : 500 * 2 ** attempt);
      continue;
    }
    if (!response.ok) throw await ApiError.from(response);
    return response.json();
  }
}

async function ask(event) {
  event.preventDefault();
  const timing = { asked: performance.now() };
  const input = $('#question');
  const text = input.value.trim();
  if (!text || state.reply) return;
  const body = { content: text };
  if (document.querySelector('input[name="scope"]:checked').value === 'some') {
    body.documents = [...$('#scope-documents').querySelectorAll('input:checked')].map((i) => i.value);
    body.auto_documents = false;
  } else {
    body.auto_documents = true;
  }
  $('#send').disabled = true;
  const key = uuid();
  const bubble = addUserMessage(text);
  input.value = '';
  const send = async () => {
    try {
      if (!state.chatId) await newChat();
      const accepted = await postMessage(state.chatId, body, key);
      window.keelTimings.push(timing);
      timing.job = accepted.job.id;
      await new ReplyView(accepted.job.id).follow(timing);
    } catch (error) {
      $('#send').disabled = false;
      const retry = el('button', { type: 'button', onclick: () => { retry.parentElement.remove(); $('#send').disabled = true; send(); } }, 'Retry');
      bubble.append(el('p', { class: 'error-note' }, `Not sent: ${error.message} `, retry));
    }
  };
  await send();
}

async function stop() {
  const reply = state.reply;
  if (!reply) return;
  $('#stop').disabled = true;
  $('#answer-status').textContent = 'Stopping…';
  try {
    await requestJSON('POST', `/api/jobs/${reply.job}/cancel`);
  } catch (error) {
    if (error.code !== 'job_finished') notice(`Could not stop: ${error.message}`);
  }
}

// ---- The debug panel --------------------------------------------------------

function setUpDebug() {
  const list = $('#debug-log');
  const count = $('#debug-count');
  const add = (entry) => {
    list.append(el('li', { class: `log-${entry.kind}` }, describeEntry(entry)));
    while (list.children.length > 500) list.firstElementChild.remove();
    count.textContent = String(window.keelDebug.length);
  };
  window.keelDebug.forEach(add);
  onDebug(add);
  // A 401 after the start: the session ended (expired, or signed out elsewhere).
  onDebug((entry) => {
    if (entry.kind === 'request' && entry.status === 401 && !entry.path.startsWith('/api/session') && document.body.dataset.ready) {
      notice('Your session has ended. Reload the page to start a new one.');
    }
  });
  $('#debug-clear').addEventListener('click', () => { clearDebug(); list.replaceChildren(); count.textContent = '0'; });
}

// ---- Start -------------------------------------------------------------------

async function start() {
  setUpDebug();
  $('#file-input').addEventListener('change', (event) => chooseFiles(event.target.files));
  $('#upload-form').addEventListener('submit', (event) => event.preventDefault());
  $('#ask-form').addEventListener('submit', ask);
  $('#question').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('#ask-form').requestSubmit();
    }
  });
  $('#stop').addEventListener('click', stop);
  $('#new-chat').addEventListener('click', () => newChat().catch((e) => notice(e.message)));
  try {
    const created = await ensureSession();
    renderUnfinished();
    await Promise.all([loadDocuments(), loadChats()]);
    // Ready documents listed without their outline: fetch it so sections show.
    for (const d of state.documents.values()) if (d.status === 'ready' && !d.sections) loadOutline(d.id).catch(() => {});
    checkUnfinished().catch(() => {});
    const last = !created && localStorage.getItem(`${STORE}:chat`);
    if (last && state.chats.some((c) => c.id === last)) await openChat(last);
    document.body.dataset.ready = 'true';
  } catch (error) {
    setSession('error', `Could not reach Keel: ${error.message}`);
  }
}

start();
