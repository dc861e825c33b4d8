// One chat's messages as the protocol describes them: history from REST, then
// the live frames of the socket. Keyed by message id, ordered by seq, with the
// delta index of every streaming answer, so a replay after a reconnect (the
// streaming message with `deltas_included`, then live deltas) lands exactly once.
// Holds no DOM: the chat view renders what this reports as changed.

export class Conversation {
  constructor(chatId) {
    this.chatId = chatId;
    this.byId = new Map(); // id -> message (REST shape, plus `pending` for local ones)
    this.next = new Map(); // streaming answer id -> next delta index expected
    this.pending = new Map(); // client_msg_id -> local user message awaiting its ack/message
    this.cancelWanted = false; // stop pressed before the answer's message arrived
  }

  /** The seq to resume after: just before the oldest answer still streaming (so it is replayed whole), else the last seen. */
  resumeSeq() {
    let last = 0;
    let streaming = Infinity;
    for (const m of this.byId.values()) {
      last = Math.max(last, m.seq);
      if (m.status === 'streaming') streaming = Math.min(streaming, m.seq);
    }
    return streaming === Infinity ? last : streaming - 1;
  }

  ordered() {
    const list = [...this.byId.values()].sort((a, b) => a.seq - b.seq);
    return list.concat([...this.pending.values()]);
  }

  streamingAnswer() {
    for (const m of this.byId.values()) if (m.role === 'assistant' && m.status === 'streaming') return m;
    return null;
  }

  /** Waiting for an answer: a local send not yet stored, or a user message with no answer yet. */
  awaitingAnswer() {
    if (this.pending.size > 0) return true;
    const list = [...this.byId.values()].sort((a, b) => a.seq - b.seq);
    const last = list[list.length - 1];
    if (!last || last.role !== 'user') return false;
    // Answered messages are followed by their answer; a fresh one is not (yet).
    return Date.now() - new Date(last.created_at).getTime() < 120_000;
  }

  addPending(clientMsgId, content) {
    const m = {
      id: `pending:${clientMsgId}`,
      client_msg_id: clientMsgId,
      role: 'user',
      content,
      status: 'pending',
      seq: Infinity,
      pending: true,
    };
    this.pending.set(clientMsgId, m);
    return m;
  }

  /** A `message` frame or a REST message. Returns the stored message. */
  upsert(message, deltasIncluded) {
    if (message.client_msg_id) this.pending.delete(message.client_msg_id);
    const prev = this.byId.get(message.id);
    if (message.status === 'streaming') {
      const covered = deltasIncluded ?? 0;
      const known = this.next.get(message.id);
      // A replay covering fewer deltas than we already applied changes nothing.
      if (prev && known != null && covered < known && prev.status === 'streaming') return prev;
      this.next.set(message.id, covered);
    } else {
      this.next.delete(message.id);
    }
    const merged = { ...prev, ...message };
    this.byId.set(message.id, merged);
    return merged;
  }

  /**
   * A `delta`: applied when its index is the next expected one. Returns
   * 'applied', 'duplicate' (already included), 'unknown' (no such streaming
   * answer yet) or 'gap' (frames were lost: resubscribe).
   */
  delta(frame) {
    const expected = this.next.get(frame.message_id);
    const m = this.byId.get(frame.message_id);
    if (expected == null || !m) return 'unknown';
    if (frame.index < expected) return 'duplicate';
    if (frame.index > expected) return 'gap';
    m.content += frame.text;
    this.next.set(frame.message_id, expected + 1);
    return 'applied';
  }

  /** A `done`: the answer is finished (or cancelled) with its cost. */
  done(frame) {
    const m = this.byId.get(frame.message_id);
    if (!m) return null;
    this.next.delete(frame.message_id);
    Object.assign(m, {
      status: frame.finish_reason === 'cancelled' ? 'cancelled' : 'complete',
      provider: frame.provider,
      model: frame.model,
      finish_reason: frame.finish_reason,
      input_tokens: frame.usage?.input_tokens,
      output_tokens: frame.usage?.output_tokens,
      cost_micros: frame.cost_micros,
    });
    return m;
  }

  /** An answer's `error`: failed (a `message` with the partial text follows). */
  failed(frame) {
    const m = this.byId.get(frame.message_id);
    if (!m) return null;
    this.next.delete(frame.message_id);
    m.status = 'failed';
    m.error = frame.message;
    return m;
  }

  /** The user message an answer replies to, for a retry. */
  prompt(answer) {
    return answer.reply_to ? this.byId.get(answer.reply_to) : null;
  }
}
