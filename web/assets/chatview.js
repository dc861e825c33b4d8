// The conversation screen: messages (streamed answers render as they arrive),
// the composer (Enter sends, Shift+Enter is a newline, Escape stops), the model
// picker, stop and retry. Talks to the server only through the socket and REST.
// Rendering is batched per animation frame, and the view follows the bottom
// only while the reader is there, so streaming never yanks the page around.

import { request } from './api.js';
import { Conversation } from './conversation.js';
import { formatMicros, h, toast, uuid } from './dom.js';

let md = null; // render.js, loaded on first use
const mdReady = import('./render.js').then((m) => (md = m));
let models = null;
const PAGE = 200;

/** Mounts the chat `chat` into `root`; returns a function that unmounts it. */
export function mountChat(root, chat, socket, { onTitle }) {
  const view = new ChatView(root, chat, socket, onTitle);
  view.start();
  return () => view.stop();
}

class ChatView {
  constructor(root, chat, socket, onTitle) {
    this.chat = chat;
    this.socket = socket;
    this.onTitle = onTitle;
    this.conv = new Conversation(chat.id);
    this.els = new Map(); // message id -> article
    this.dirty = new Set();
    this.frameQueued = false;
    this.stuck = true; // follow the bottom while the reader is there
    this.alive = true;
    this.build(root);
  }

  build(root) {
    this.list = h('div', { class: 'messages', role: 'log', 'aria-label': 'Messages', 'aria-live': 'off' });
    this.scroller = h('div', { class: 'scroller' }, this.list);
    this.input = h('textarea', {
      id: 'composer-input', rows: 1, placeholder: 'Message Switchboard…', autocomplete: 'off',
      'aria-describedby': 'composer-hint', maxlength: 32000,
    });
    this.modelSelect = h('select', { id: 'model-select', class: 'model-select' },
      h('option', { value: '' }, 'Default route'));
    this.stopBtn = h('button', { type: 'button', class: 'danger', id: 'stop-btn', hidden: true }, 'Stop');
    this.form = h('form', { class: 'composer', 'aria-label': 'Send a message' },
      h('label', { for: 'composer-input', class: 'sr-only' }, 'Message'),
      this.input,
      h('div', { class: 'composer-row' },
        h('label', { for: 'model-select', class: 'sr-only' }, 'Model or route'),
        this.modelSelect,
        h('span', { id: 'composer-hint', class: 'hint' }, 'Enter to send · Shift+Enter for a new line · Esc to stop'),
        this.stopBtn,
        h('button', { type: 'submit', class: 'primary', id: 'send-btn' }, 'Send')));
    this.title = h('h1', { class: 'chat-title', id: 'chat-title' }, this.chat.title);
    root.replaceChildren(h('section', { class: 'chat', 'aria-labelledby': 'chat-title' },
      h('div', { class: 'chat-head' }, this.title), this.scroller, this.form));
  }

  start() {
    this.bindInput();
    this.bindFrames();
    loadModels(this.modelSelect);
    this.loadHistory();
    mdReady.then(() => this.repaintAll(), () => {});
    this.input.focus();
  }

  stop() {
    this.alive = false;
    this.socket.unsubscribe(this.chat.id);
    for (const [type, l] of this.listeners) this.socket.removeEventListener(type, l);
    document.removeEventListener('keydown', this.onEscape);
  }

  bindInput() {
    this.scroller.addEventListener('scroll', () => {
      const s = this.scroller;
      this.stuck = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    });
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.send(this.input.value);
      this.input.value = '';
      this.autosize();
    });
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.input.addEventListener('input', () => this.autosize());
    this.onEscape = (e) => {
      if (e.key === 'Escape' && !this.stopBtn.hidden) {
        e.preventDefault();
        this.stopAnswer();
      }
    };
    document.addEventListener('keydown', this.onEscape);
    this.stopBtn.addEventListener('click', () => this.stopAnswer());
    this.modelSelect.addEventListener('change', () => localStorage.setItem('sb.model', this.modelSelect.value));
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 240)}px`;
  }

  // --- frames -------------------------------------------------------------------

  bindFrames() {
    const mine = (f) => f.chat_id === this.chat.id;
    const handlers = {
      message: (f) => mine(f) && this.onMessage(f),
      delta: (f) => mine(f) && this.onDelta(f),
      done: (f) => mine(f) && this.schedule(this.conv.done(f)?.id),
      error: (f) => mine(f) && f.message_id && this.schedule(this.conv.failed(f)?.id),
      sendfailed: (f) => this.onSendFailed(f),
    };
    this.listeners = Object.entries(handlers).map(([type, fn]) => {
      const l = (e) => fn(e.detail);
      this.socket.addEventListener(type, l);
      return [type, l];
    });
  }

  onMessage(f) {
    const m = this.conv.upsert(f.message, f.deltas_included);
    if (m.status === 'streaming' && m.role === 'assistant' && this.conv.cancelWanted) {
      this.conv.cancelWanted = false;
      this.socket.cancel(this.chat.id, m.id);
    }
    this.schedule(m.id);
  }

  onDelta(f) {
    const r = this.conv.delta(f);
    if (r === 'applied') this.schedule(f.message_id);
    // Lost frames: ask for a replay from before this answer.
    if (r === 'gap') this.subscribe();
  }

  onSendFailed(f) {
    const m = this.conv.pending.get(f.client_msg_id);
    if (!m) return;
    m.failed = f.message;
    this.schedule(m.id);
  }

  subscribe() {
    this.socket.subscribe(this.chat.id, () => this.conv.resumeSeq());
  }

  /** History over REST first, then the live socket from where the history ends. */
  async loadHistory() {
    try {
      for (let after = 0; ;) {
        const page = await request('GET', `/api/chats/${this.chat.id}/messages?after_seq=${after}&limit=${PAGE}`);
        // REST gives a streaming answer's text without its delta count: the
        // subscribe replays it with `deltas_included`, and deltas wait for that.
        for (const m of page.messages) {
          this.conv.upsert(m);
          this.conv.next.delete(m.id);
        }
        if (page.messages.length < PAGE) break;
        after = page.messages[page.messages.length - 1].seq;
      }
    } catch (e) {
      toast(`Could not load the messages: ${e.message}`, 'error');
    }
    if (!this.alive) return;
    this.subscribe();
    this.repaintAll();
  }

  // --- actions ------------------------------------------------------------------

  send(content) {
    const text = content.trim();
    if (!text) return;
    const cmid = uuid();
    this.schedule(this.conv.addPending(cmid, text).id);
    this.socket.send(this.chat.id, cmid, text, this.modelSelect.value || undefined);
    this.stuck = true;
    if (this.chat.title === 'New chat') this.nameChat(text);
  }

  resend(m) {
    this.conv.pending.delete(m.client_msg_id);
    this.schedule(m.id);
    this.send(m.content);
  }

  retry(answer) {
    const prompt = this.conv.prompt(answer);
    if (prompt) this.send(prompt.content);
    else toast('The question of this answer is no longer in the chat', 'error');
  }

  stopAnswer() {
    const answer = this.conv.streamingAnswer();
    if (answer) this.socket.cancel(this.chat.id, answer.id);
    else if (this.conv.awaitingAnswer()) this.conv.cancelWanted = true;
  }

  async nameChat(text) {
    try {
      const title = text.replace(/\s+/g, ' ').trim().slice(0, 60);
      const renamed = await request('PATCH', `/api/chats/${this.chat.id}`, { title });
      this.chat.title = renamed.title;
      this.title.textContent = renamed.title;
      this.onTitle(renamed);
    } catch {
      /* the default title stays */
    }
  }

  // --- rendering ----------------------------------------------------------------

  schedule(id) {
    if (id == null) return;
    this.dirty.add(id);
    if (this.frameQueued) return;
    this.frameQueued = true;
    requestAnimationFrame(() => this.flush());
  }

  repaintAll() {
    for (const m of this.conv.ordered()) this.schedule(m.id);
  }

  flush() {
    this.frameQueued = false;
    for (const id of this.dirty) this.paint(id);
    this.dirty.clear();
    this.stopBtn.hidden = !(this.conv.streamingAnswer() || this.conv.awaitingAnswer());
    if (this.stuck) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  paint(id) {
    const m = this.conv.byId.get(id) ?? [...this.conv.pending.values()].find((p) => p.id === id);
    let el = this.els.get(id);
    if (!m) {
      el?.remove();
      this.els.delete(id);
      return;
    }
    // The stored message replaces its local "Sending…" copy, whichever way it
    // arrived (a live frame, a replay, or the REST history).
    const local = !m.pending && m.client_msg_id && this.els.get(`pending:${m.client_msg_id}`);
    if (local) {
      local.remove();
      this.els.delete(`pending:${m.client_msg_id}`);
    }
    if (!el) {
      el = h('article', { class: `msg ${m.role}` },
        h('div', { class: 'who' }, m.role === 'user' ? 'You' : 'Assistant'),
        h('div', { class: 'body' }), h('div', { class: 'meta' }));
      this.els.set(id, el);
      this.placeInOrder(el, m);
    }
    el.dataset.id = m.id;
    el.dataset.seq = Number.isFinite(m.seq) ? m.seq : '';
    el.dataset.status = m.status;
    el.setAttribute('aria-busy', m.status === 'streaming' ? 'true' : 'false');
    const body = el.querySelector('.body');
    if (m.role === 'assistant' && md) renderBody(body, m);
    else if (body.textContent !== m.content) body.textContent = m.content; // never interpreted
    el.querySelector('.meta').replaceChildren(...this.metaParts(m));
  }

  placeInOrder(el, m) {
    const after = [...this.list.children].find((c) => c.dataset.seq && Number(c.dataset.seq) > m.seq);
    if (after && Number.isFinite(m.seq)) this.list.insertBefore(el, after);
    else this.list.append(el);
  }

  metaParts(m) {
    const parts = [];
    if (m.role !== 'assistant') {
      if (m.status !== 'pending') return parts;
      parts.push(h('span', { class: 'badge' }, m.failed ? `Not sent: ${m.failed}` : 'Sending…'));
      if (m.failed) parts.push(h('button', { type: 'button', class: 'link-btn', onclick: () => this.resend(m) }, 'Retry'));
      return parts;
    }
    if (m.status === 'streaming') parts.push(h('span', { class: 'badge live' }, 'Answering…'));
    if (m.status === 'cancelled') parts.push(h('span', { class: 'badge warn' }, 'Stopped'));
    if (m.status === 'failed') parts.push(h('span', { class: 'badge error' }, `Failed${m.error ? `: ${m.error}` : ''}`));
    if (m.provider) parts.push(h('span', {}, `${m.provider} · ${m.model}`));
    if (m.output_tokens != null) parts.push(h('span', {}, `${m.input_tokens ?? 0} in / ${m.output_tokens} out tokens`));
    if (m.cost_micros != null && m.status !== 'streaming') parts.push(h('span', { class: 'cost' }, formatMicros(m.cost_micros)));
    if (m.status === 'failed' || m.status === 'cancelled') {
      parts.push(h('button', { type: 'button', class: 'link-btn retry-btn', onclick: () => this.retry(m) }, 'Retry'));
    }
    return parts;
  }
}

/** Markdown for answers; re-rendered only when the text or status changed. */
function renderBody(body, m) {
  const key = `${m.content.length}:${m.status}`;
  if (body.dataset.rendered === key) return;
  body.dataset.rendered = key;
  md.renderMarkdown(body, m.content, m.status !== 'streaming');
}

async function loadModels(select) {
  try {
    models ??= await request('GET', '/api/models');
  } catch {
    return; // the default route still works
  }
  const saved = localStorage.getItem('sb.model') || '';
  const label = (m) => (m.kind === 'model'
    ? `${m.id} (${m.provider}, ${formatMicros(m.output_micros_per_mtok)}/M out)` : m.id);
  for (const [name, kind] of [['Routes', 'route'], ['Models', 'model']]) {
    const items = models.models.filter((m) => m.kind === kind);
    if (items.length) select.append(h('optgroup', { label: name }, items.map((m) => h('option', { value: m.id }, label(m)))));
  }
  if ([...select.options].some((o) => o.value === saved)) select.value = saved;
}
