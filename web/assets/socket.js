// The WebSocket connection of docs/PROTOCOL.md, kept alive for the whole session.
//
// - authenticates with an `auth` frame (browsers cannot set headers on upgrade);
// - reconnects with jittered exponential backoff (0.5 s doubling to 30 s), at once
//   when the browser comes back online or the tab becomes visible;
// - on every (re)connect re-subscribes each followed chat with the resume point the
//   view gives (`since_seq`), so the server replays what was missed;
// - keeps every `send` until its `ack` and resends it (same client_msg_id, so the
//   server answers with the same ack and starts no second answer) after a
//   reconnect or when no ack came within ACK_TIMEOUT_MS;
// - pings every PING_MS and treats a socket silent for DEAD_MS as dead (a laptop
//   that slept, a NAT that forgot us), closing it and reconnecting.
// Frames are re-dispatched as DOM events named by their `type`.

const PING_MS = 15_000;
const DEAD_MS = 40_000;
const ACK_TIMEOUT_MS = 10_000;
const MAX_BACKOFF_MS = 30_000;
/** Error codes that mean "try the same send again later". */
const TRANSIENT = new Set(['rate_limited', 'unavailable']);
/** Error codes a send can get back (the frame does not name the send: see docs/WEB.md). */
const SEND_ERRORS = new Set([
  'rate_limited', 'unavailable', 'budget_exceeded', 'payload_too_large', 'invalid_request', 'forbidden',
]);

export class ChatSocket extends EventTarget {
  constructor({ getToken, refreshToken }) {
    super();
    this.getToken = getToken;
    this.refreshToken = refreshToken;
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = true;
    this.gen = 0; // bumped by stop() and each connect(): a stale attempt gives up
    this.subs = new Map(); // chat_id -> () => since_seq | null
    this.outbox = new Map(); // client_msg_id -> {frame, sentAt}
    this.queued = []; // other frames (cancel) waiting for a socket
    this.retryTimer = null;
    this.tick = null;
    this.lastRx = 0;
    this.retryAt = 0;
    addEventListener('online', () => this.kick());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') {
        this.kick();
        this.checkAlive();
      }
    });
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.gen += 1;
    clearTimeout(this.retryTimer);
    clearInterval(this.tick);
    this.outbox.clear();
    this.queued = [];
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'signed out');
      this.ws = null;
    }
    this.setState('idle');
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, retryAt: this.retryAt } }));
  }

  /** Reconnects now if waiting to retry. */
  kick() {
    if (this.stopped || this.state !== 'offline') return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  async connect() {
    if (this.stopped) return;
    const gen = ++this.gen;
    this.setState('connecting');
    let token;
    try {
      token = await this.getToken();
    } catch (e) {
      if (gen !== this.gen) return;
      if (e.status === 401) return this.stop();
      return this.scheduleReconnect();
    }
    if (this.stopped || gen !== this.gen) return;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.lastRx = Date.now();
      ws.send(JSON.stringify({ type: 'auth', token }));
      for (const [chatId, since] of this.subs) this.sendSubscribe(chatId, since);
      for (const entry of this.outbox.values()) this.transmit(entry);
      for (const frame of this.queued.splice(0)) ws.send(JSON.stringify(frame));
      this.setState('online');
      clearInterval(this.tick);
      this.tick = setInterval(() => this.checkAlive(), PING_MS / 3);
    };
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = (e) => this.closed(ws, e.code);
    ws.onerror = () => {}; // onclose follows and does the work
  }

  closed(ws, code) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.tick);
    if (this.stopped) return;
    if (code === 4001) {
      // The token was refused: get a fresh one before the next attempt.
      this.refreshToken().catch(() => {});
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState('offline');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Heartbeat, dead-peer detection, and resending sends whose ack is late. */
  checkAlive() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (now - this.lastRx > DEAD_MS) {
      ws.onclose = null;
      ws.close(4000, 'no answer');
      this.closed(ws, 1006);
      return;
    }
    if (now - this.lastRx > PING_MS) ws.send('{"type":"ping"}');
    for (const entry of this.outbox.values()) {
      if (now - entry.sentAt > ACK_TIMEOUT_MS && now >= (entry.notBefore || 0)) this.transmit(entry);
    }
  }

  receive(data) {
    this.lastRx = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    // A working exchange: the next drop starts the backoff from the bottom again.
    if (frame.type !== 'error') this.attempt = 0;
    if (frame.type === 'ack') this.outbox.delete(frame.client_msg_id);
    if (frame.type === 'error' && !frame.chat_id) this.sendFailed(frame);
    this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
  }

  /**
   * An error frame without a chat: if it answers a send, it answers the oldest
   * one not yet acknowledged (the socket answers in order). Transient ones are
   * retried after retry_after; others end the send and are reported.
   */
  sendFailed(frame) {
    if (!SEND_ERRORS.has(frame.code)) return;
    const oldest = [...this.outbox.values()].sort((a, b) => a.sentAt - b.sentAt)[0];
    if (!oldest) return;
    if (TRANSIENT.has(frame.code)) {
      oldest.notBefore = Date.now() + (frame.retry_after ?? 2) * 1000;
      oldest.sentAt = 0;
      return;
    }
    this.outbox.delete(oldest.frame.client_msg_id);
    frame.client_msg_id = oldest.frame.client_msg_id;
    this.dispatchEvent(new CustomEvent('sendfailed', { detail: frame }));
  }

  transmit(entry) {
    entry.sentAt = Date.now();
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(entry.frame));
  }

  sendSubscribe(chatId, since) {
    const sinceSeq = since();
    const frame = { type: 'subscribe', chat_id: chatId };
    if (sinceSeq != null) frame.since_seq = sinceSeq;
    this.ws.send(JSON.stringify(frame));
  }

  /** Follows a chat; `since` returns the seq to resume after, asked at each (re)connect. */
  subscribe(chatId, since) {
    this.subs.set(chatId, since);
    if (this.ws?.readyState === WebSocket.OPEN) this.sendSubscribe(chatId, since);
  }

  unsubscribe(chatId) {
    if (!this.subs.delete(chatId)) return;
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: 'unsubscribe', chat_id: chatId }));
    }
  }

  /** Posts a message; kept and resent until acknowledged. */
  send(chatId, clientMsgId, content, model) {
    const frame = { type: 'send', chat_id: chatId, client_msg_id: clientMsgId, content };
    if (model) frame.model = model;
    const entry = { frame, sentAt: 0 };
    this.outbox.set(clientMsgId, entry);
    this.transmit(entry);
  }

  cancel(chatId, messageId) {
    const frame = { type: 'cancel', chat_id: chatId, message_id: messageId };
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
    else this.queued.push(frame);
  }
}
