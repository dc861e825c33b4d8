// The conversation screen: messages (streamed answers render as they arrive),
// the composer (Enter sends, Shift+Enter is a newline, Escape stops), the model
// picker, stop and retry. Talks to the server only through the socket and REST.

import { request } from './api.js';
import { Conversation } from './conversation.js';
import { formatMicros, h, toast, uuid } from './dom.js';

let md = null; // render.js, loaded on first use
const mdReady = import('./render.js').then((m) => (md = m));
let models = null;

/** Mounts the chat `chat` into `root`; returns a function that unmounts it. */
export function mountChat(root, chat, socket, { onTitle }) {
  const conv = new Conversation(chat.id);
  const els = new Map(); // message id -> article
  const list = h('div', { class: 'messages', role: 'log', 'aria-label': 'Messages', 'aria-live': 'off' });
  const scroller = h('div', { class: 'scroller' }, list);
  const input = h('textarea', {
    id: 'composer-input', rows: 1, placeholder: 'Message Switchboard…', autocomplete: 'off',
    'aria-describedby': 'composer-hint', maxlength: 32000,
  });
  const modelSelect = h('select', { id: 'model-select', class: 'model-select' }, h('option', { value: '' }, 'Default route'));
  const sendBtn = h('button', { type: 'submit', class: 'primary', id: 'send-btn' }, 'Send');
  const stopBtn = h('button', { type: 'button', class: 'danger', id: 'stop-btn', hidden: true }, 'Stop');
  const form = h('form', { class: 'composer', 'aria-label': 'Send a message' },
    h('label', { for: 'composer-input', class: 'sr-only' }, 'Message'),
    input,
    h('div', { class: 'composer-row' },
      h('label', { for: 'model-select', class: 'sr-only' }, 'Model or route'),
      modelSelect,
      h('span', { id: 'composer-hint', class: 'hint' }, 'Enter to send · Shift+Enter for a new line · Esc to stop'),
      stopBtn, sendBtn));
  const title = h('h1', { class: 'chat-title', id: 'chat-title' }, chat.title);
  root.replaceChildren(h('section', { class: 'chat', 'aria-labelledby': 'chat-title' },
    h('div', { class: 'chat-head' }, title), scroller, form));

  let stuck = true; // follow the bottom while the reader is there
  scroller.addEventListener('scroll', () => {
    stuck = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  });
  const dirty = new Set();
  let frameQueued = false;
  function schedule(id) {
    dirty.add(id);
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(flush);
  }
  function flush() {
    frameQueued = false;
    for (const id of dirty) paint(id);
    dirty.clear();
    syncButtons();
    if (stuck) scroller.scrollTop = scroller.scrollHeight;
  }

  function paint(id) {
    const m = conv.byId.get(id) ?? [...conv.pending.values()].find((p) => p.id === id);
    let el = els.get(id);
    if (!m) {
      el?.remove();
      els.delete(id);
      return;
    }
    if (!el) {
      el = h('article', { class: `msg ${m.role}` },
        h('div', { class: 'who' }, m.role === 'user' ? 'You' : 'Assistant'),
        h('div', { class: 'body' }), h('div', { class: 'meta' }));
      els.set(id, el);
      placeInOrder(el, m);
    }
    el.dataset.id = m.id;
    el.dataset.seq = Number.isFinite(m.seq) ? m.seq : '';
    el.dataset.status = m.status;
    el.setAttribute('aria-busy', m.status === 'streaming' ? 'true' : 'false');
    const body = el.querySelector('.body');
    if (m.role === 'assistant' && md) {
      renderBody(body, m);
    } else if (body.textContent !== m.content) {
      body.textContent = m.content; // user text is never interpreted
    }
    paintMeta(el.querySelector('.meta'), m);
  }

  function renderBody(body, m) {
    const final = m.status !== 'streaming';
    const key = `${m.content.length}:${m.status}`;
    if (body.dataset.rendered === key) return;
    body.dataset.rendered = key;
    md.renderMarkdown(body, m.content, final);
  }

  function placeInOrder(el, m) {
    const after = [...list.children].find((c) => c.dataset.seq && Number(c.dataset.seq) > m.seq);
    if (after && Number.isFinite(m.seq)) list.insertBefore(el, after);
    else list.append(el);
  }

  function paintMeta(meta, m) {
    const parts = [];
    if (m.role === 'assistant') {
      if (m.status === 'streaming') parts.push(h('span', { class: 'badge live' }, 'Answering…'));
      if (m.status === 'cancelled') parts.push(h('span', { class: 'badge warn' }, 'Stopped'));
      if (m.status === 'failed') parts.push(h('span', { class: 'badge error' }, `Failed${m.error ? `: ${m.error}` : ''}`));
      if (m.provider) parts.push(h('span', {}, `${m.provider} · ${m.model}`));
      if (m.output_tokens != null) parts.push(h('span', {}, `${m.input_tokens ?? 0} in / ${m.output_tokens} out tokens`));
      if (m.cost_micros != null && m.status !== 'streaming') parts.push(h('span', { class: 'cost' }, formatMicros(m.cost_micros)));
      if (m.status === 'failed' || m.status === 'cancelled') {
        parts.push(h('button', { type: 'button', class: 'link-btn retry-btn', onclick: () => retry(m) }, 'Retry'));
      }
    } else if (m.status === 'pending') {
      parts.push(h('span', { class: 'badge' }, m.failed ? `Not sent: ${m.failed}` : 'Sending…'));
      if (m.failed) parts.push(h('button', { type: 'button', class: 'link-btn', onclick: () => resend(m) }, 'Retry'));
    }
    meta.replaceChildren(...parts);
  }

  function syncButtons() {
    const busy = conv.streamingAnswer() != null || conv.awaitingAnswer();
    stopBtn.hidden = !busy;
  }

  function send(content) {
    const text = content.trim();
    if (!text) return;
    const cmid = uuid();
    const m = conv.addPending(cmid, text);
    schedule(m.id);
    socket.send(chat.id, cmid, text, modelSelect.value || undefined);
    stuck = true;
    if (chat.title === 'New chat') nameChat(text);
  }

  function resend(m) {
    conv.pending.delete(m.client_msg_id);
    schedule(m.id);
    send(m.content);
  }

  function retry(answer) {
    const prompt = conv.prompt(answer);
    if (prompt) send(prompt.content);
    else toast('The question of this answer is no longer in the chat', 'error');
  }

  function stop() {
    const answer = conv.streamingAnswer();
    if (answer) socket.cancel(chat.id, answer.id);
    else if (conv.awaitingAnswer()) conv.cancelWanted = true;
  }

  async function nameChat(text) {
    const t = text.replace(/\s+/g, ' ').trim().slice(0, 60);
    try {
      const renamed = await request('PATCH', `/api/chats/${chat.id}`, { title: t });
      chat.title = renamed.title;
      title.textContent = renamed.title;
      onTitle(renamed);
    } catch {
      /* the default title stays */
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    send(input.value);
    input.value = '';
    autosize();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  const onEscape = (e) => {
    if (e.key === 'Escape' && !stopBtn.hidden) {
      e.preventDefault();
      stop();
    }
  };
  document.addEventListener('keydown', onEscape);
  stopBtn.addEventListener('click', stop);
  function autosize() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }
  input.addEventListener('input', autosize);
  modelSelect.addEventListener('change', () => localStorage.setItem('sb.model', modelSelect.value));
  loadModels(modelSelect);

  // --- frames ---------------------------------------------------------------------
  const mine = (f) => f.chat_id === chat.id;
  const handlers = {
    message(f) {
      if (!mine(f)) return;
      const m = conv.upsert(f.message, f.deltas_included);
      if (f.message.client_msg_id) {
        const el = els.get(`pending:${f.message.client_msg_id}`);
        if (el) {
          el.remove();
          els.delete(`pending:${f.message.client_msg_id}`);
        }
      }
      if (m.status === 'streaming' && m.role === 'assistant' && conv.cancelWanted) {
        conv.cancelWanted = false;
        socket.cancel(chat.id, m.id);
      }
      schedule(m.id);
    },
    delta(f) {
      if (!mine(f)) return;
      const r = conv.delta(f);
      if (r === 'applied') schedule(f.message_id);
      // Lost frames: ask for a replay from before this answer.
      if (r === 'gap') socket.subscribe(chat.id, () => conv.resumeSeq());
    },
    done(f) {
      if (!mine(f)) return;
      const m = conv.done(f);
      if (m) schedule(m.id);
    },
    error(f) {
      if (!mine(f) || !f.message_id) return;
      const m = conv.failed(f);
      if (m) schedule(m.id);
    },
    sendfailed(f) {
      const m = conv.pending.get(f.client_msg_id);
      if (!m) return;
      m.failed = f.message;
      schedule(m.id);
    },
  };
  const listeners = Object.entries(handlers).map(([type, fn]) => {
    const l = (e) => fn(e.detail);
    socket.addEventListener(type, l);
    return [type, l];
  });

  // History first, then the live socket from where the history ends.
  let alive = true;
  (async () => {
    try {
      let after = 0;
      for (;;) {
        const page = await request('GET', `/api/chats/${chat.id}/messages?after_seq=${after}&limit=200`);
        for (const m of page.messages) conv.upsert(m, m.status === 'streaming' ? Infinity : undefined);
        if (page.messages.length < 200) break;
        after = page.messages[page.messages.length - 1].seq;
      }
    } catch (e) {
      toast(`Could not load the messages: ${e.message}`, 'error');
    }
    if (!alive) return;
    // REST gives a streaming answer's text without its delta count: let the replay set it.
    for (const [id, n] of conv.next) if (n === Infinity) conv.next.delete(id);
    socket.subscribe(chat.id, () => conv.resumeSeq());
    await mdReady.catch(() => {});
    for (const m of conv.ordered()) schedule(m.id);
  })();
  mdReady.then(() => { for (const id of els.keys()) schedule(id); }, () => {});
  input.focus();

  return function unmount() {
    alive = false;
    socket.unsubscribe(chat.id);
    for (const [type, l] of listeners) socket.removeEventListener(type, l);
    document.removeEventListener('keydown', onEscape);
  };
}

async function loadModels(select) {
  try {
    models ??= await request('GET', '/api/models');
  } catch {
    return; // the default route still works
  }
  const saved = localStorage.getItem('sb.model') || '';
  const routes = models.models.filter((m) => m.kind === 'route');
  const priced = models.models.filter((m) => m.kind === 'model');
  const group = (label, items) => items.length && h('optgroup', { label },
    items.map((m) => h('option', { value: m.id },
      m.kind === 'model' ? `${m.id} (${m.provider}, ${formatMicros(m.output_micros_per_mtok)}/M out)` : m.id)));
  select.append(...[group('Routes', routes), group('Models', priced)].filter(Boolean));
  if ([...select.options].some((o) => o.value === saved)) select.value = saved;
}
