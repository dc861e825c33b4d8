//! The chat actor: its handlers drive [`Turns`] and publish to the hub. A
//! handler awaits only short Postgres statements (store a message, open an
//! answer, replay to a subscriber) and the chat lease's Redis calls;
//! generations, their billing and their final write run in tracked tasks that
//! report back as [`ChatMsg::Gen`].
//!
//! The queue is durable and answered one at a time across the cluster
//! (queue.rs: which message next, the chat's lease, opening its answer;
//! accept.rs: storing a sent message).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{
    ChatDeps, ChatError, ChatMsg, Finished, GenUpdate, SendRequest,
    accept::accept,
    queue::{queue_empty, renew_lease, start_next},
    turns::Turns,
};
use crate::{
    actors::{
        hub::{Outbound, ReplaySeen, Subscriber},
        registry::Pending,
    },
    cluster::lease::LeaseState,
    config::pricing::micros_to_usd,
    error::ApiError,
    generation::{Ending, Planned},
    protocol::{Resume, ServerFrame},
    providers::{PromptMessage, ProviderError},
    store::{
        self,
        messages::{self, Message},
    },
};

/// Most messages replayed on one subscribe; older history is paged over REST.
const REPLAY_LIMIT: i64 = 1000;
/// How long a subscribe waits for the node to receive the chat's events from
/// other nodes before replaying (Redis slow or down: it replays anyway).
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

pub struct ChatActor;

pub struct ChatArgs {
    pub chat_id: Uuid,
    pub deps: Arc<ChatDeps>,
    pub pending: Pending,
    /// A previous actor of this chat crashed: answers it left streaming must be failed.
    pub recovering: bool,
}

/// An accepted message waiting for its answer.
pub(super) struct Queued {
    pub(super) user_message: Message,
    pub(super) req: SendRequest,
    pub(super) planned: Planned,
    /// The prompt read before the hop, when it is known to be still exact.
    pub(super) prompt: Option<Vec<PromptMessage>>,
    /// Sources retrieved before the hop (in `prompt`, when it is still exact).
    pub(super) context: Option<crate::documents::retrieval::Context>,
    /// `chat.accept` of this message: its generation's parent span.
    pub(super) span: tracing::Span,
}

pub struct ChatState {
    pub(super) chat_id: Uuid,
    pub(super) deps: Arc<ChatDeps>,
    pub(super) pending: Pending,
    pub(super) turns: Turns<Queued>,
    pub(super) last_active: Instant,
    /// Parent of every generation's token: dropping the state (stop, kill,
    /// panic) cancels whatever is still generating, which then bills itself.
    pub(super) generations: CancellationToken,
    _cancel_on_drop: DropGuard,
    /// The chat's generation lease, as this node holds it.
    pub(super) lease: LeaseState,
    /// Answer every waiting message, whichever node accepted it, until the queue is empty.
    pub(super) adopt_any: bool,
}

impl ChatState {
    pub(super) fn publish(&self, frame: &ServerFrame) {
        let event_id = frame.event_id(|id| {
            self.turns
                .current()
                .filter(|r| r.message.id == id)
                .map(|r| r.message.seq)
        });
        self.deps
            .hub
            .publish(self.chat_id, &Outbound::new(frame, event_id));
    }

    pub(super) fn message_frame(&self, message: Message) -> ServerFrame {
        ServerFrame::Message {
            chat_id: self.chat_id,
            seq: message.seq,
            message,
            deltas_included: None,
        }
    }

    /// A message as it stands now: the running answer carries its text so far
    /// and how many deltas that covers.
    fn snapshot(&self, mut m: Message) -> ServerFrame {
        let mut deltas_included = None;
        if let Some((text, deltas)) = self.turns.progress(m.id) {
            m.content = text.to_owned();
            deltas_included = Some(deltas);
        } else if m.status == "streaming" {
            // Streaming on another node: its text as last saved covers this many deltas.
            deltas_included = Some(
                m.deltas_saved
                    .and_then(|d| u32::try_from(d).ok())
                    .unwrap_or(0),
            );
        }
        ServerFrame::Message {
            chat_id: self.chat_id,
            seq: m.seq,
            message: m,
            deltas_included,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct StartFailure(pub ChatError);

impl Actor for ChatActor {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatArgs;

    async fn pre_start(
        &self,
        me: ActorRef<ChatMsg>,
        args: ChatArgs,
    ) -> Result<ChatState, ActorProcessingErr> {
        let exists = store::chats::exists(&args.deps.db, args.chat_id)
            .await
            .map_err(|_| StartFailure(ChatError::Unavailable))?;
        if !exists {
            return Err(StartFailure(ChatError::NotFound).into());
        }
        let generations = args.deps.gens.cancel_token();
        let state = ChatState {
            chat_id: args.chat_id,
            pending: args.pending,
            turns: Turns::default(),
            last_active: Instant::now(),
            _cancel_on_drop: generations.clone().drop_guard(),
            generations,
            deps: args.deps,
            lease: LeaseState::default(),
            adopt_any: false,
        };
        // Answers a crashed incarnation left streaming end as failed, with the
        // text saved so far; subscribers are told. A first start has none (the
        // server's start-up sweep covered the last run), so it skips the query.
        if args.recovering {
            let interrupted = messages::fail_interrupted(
                &state.deps.db,
                state.chat_id,
                &state.deps.cluster.node_id,
            )
            .await
            .map_err(|_| StartFailure(ChatError::Unavailable))?;
            for m in interrupted {
                tracing::warn!(chat_id = %state.chat_id, message_id = %m.id, "answer interrupted by a restart: marked failed");
                let id = m.id;
                state.publish(&state.message_frame(m));
                let err = super::sink::interrupted();
                state.publish(&ServerFrame::from_error(&err).about(state.chat_id, id));
            }
        }
        me.send_interval(
            Duration::from_millis(state.deps.config.checkpoint_ms.max(50)),
            || ChatMsg::Tick,
        );
        // Messages left without an answer (a crash, a dead node) are picked up.
        let _ = me.cast(ChatMsg::Kick { adopt: false });
        crate::actors::live("chat", 1.0);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ChatMsg>,
        s: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        if s.turns.current().is_some() {
            metrics::gauge!("switchboard_streams_active").decrement(1.0);
            s.deps.streaming.remove(&s.chat_id);
        }
        // The running answer is cancelled by the drop guard and bills itself;
        // answers still waiting release their reservations as they drop.
        let waiting = s.turns.drain();
        if !waiting.is_empty() {
            tracing::info!(chat_id = %s.chat_id, count = waiting.len(), "chat stopped with answers waiting: reservations released");
        }
        if let Some(t) = s.lease.release() {
            s.deps.cluster.leases.release(s.chat_id, t).await;
        }
        crate::actors::live("chat", -1.0);
        Ok(())
    }

    /// ractor keeps an actor's message loop in one allocation for the actor's
    /// whole life, sized for the largest future `handle` can hold. The arms that
    /// await Postgres or Redis box their futures, so an idle chat holds the small
    /// match (about 1 KiB) rather than room for its largest statement (the
    /// loop's allocation was 22 KiB per chat before).
    async fn handle(
        &self,
        me: ActorRef<ChatMsg>,
        msg: ChatMsg,
        s: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        crate::actors::handled("chat");
        match msg {
            ChatMsg::Subscribe { sub, since, reply } => {
                s.pending.dequeued("chat");
                s.last_active = Instant::now();
                let _ = reply.send(Box::pin(subscribe(s, sub, since)).await);
            }
            ChatMsg::Unsubscribe {
                conn,
                cancel_if_origin,
            } => {
                s.deps.hub.remove(s.chat_id, conn);
                if cancel_if_origin {
                    s.turns.cancel_if_origin(conn);
                }
            }
            ChatMsg::Send {
                req,
                admitted,
                reply,
            } => {
                s.pending.dequeued("chat");
                s.last_active = Instant::now();
                let taken = admitted.lock().ok().and_then(|mut a| a.take());
                let Some(admitted) = taken else {
                    let _ = reply.send(Err(ChatError::Unavailable));
                    return Ok(());
                };
                let span =
                    crate::trace_span!(parent: &admitted.span, "chat.accept", chat_id = %s.chat_id);
                let accepted =
                    tracing::Instrument::instrument(accept(&me, s, *req, admitted), span);
                let _ = reply.send(Box::pin(accepted).await);
            }
            ChatMsg::Cancel { message_id, reply } => {
                let r = if s.turns.cancel(message_id) {
                    Ok(())
                } else {
                    Err(ChatError::NoSuchGeneration)
                };
                let _ = reply.send(r);
            }
            ChatMsg::Gen { gen_id, update } => {
                s.last_active = Instant::now();
                match update {
                    GenUpdate::Started { provider, model } => {
                        on_started(s, gen_id, provider, model);
                    }
                    GenUpdate::Delta { text } => on_delta(s, gen_id, text),
                    GenUpdate::Ended(finished) => {
                        Box::pin(on_ended(&me, s, gen_id, *finished)).await;
                    }
                }
            }
            ChatMsg::Kick { adopt } => {
                s.adopt_any |= adopt;
                Box::pin(start_next(&me, s, None)).await;
            }
            ChatMsg::Lease { token, at, ours } => {
                if ours {
                    s.lease.renewed(token, at);
                } else {
                    tracing::warn!(chat_id = %s.chat_id, token, "chat lease lost to another node");
                    s.lease.lost(token);
                }
            }
            ChatMsg::Tick => {
                checkpoint(s);
                renew_lease(&me, s);
                // Waiting for the lease (another node is answering) or for storage.
                if s.turns.current().is_none() && (s.turns.has_waiting() || s.adopt_any) {
                    Box::pin(start_next(&me, s, None)).await;
                }
                stop_if_idle(&me, s);
            }
        }
        Ok(())
    }
}

async fn subscribe(
    s: &mut ChatState,
    sub: Subscriber,
    since: Option<Resume>,
) -> Result<(), ChatError> {
    // Replay and registration happen in one handler, so nothing this node
    // publishes falls in between. Events from other nodes are held from
    // before the replay is read (once this node receives the chat's channel)
    // and sent after it, without what it covered: no gap, no duplicate.
    let conn = sub.conn;
    if let Some(ready) = s.deps.hub.begin(s.chat_id, sub.clone()) {
        let _ = tokio::time::timeout(FOLLOW_WAIT, ready).await;
    }
    let replayed = replay(s, &sub, since).await;
    let seen = match replayed {
        Ok(seen) => seen,
        Err(e) => {
            s.deps.hub.remove(s.chat_id, conn);
            return Err(e);
        }
    };
    if s.deps.hub.complete(s.chat_id, conn, seen) {
        Ok(())
    } else {
        s.deps.hub.remove(s.chat_id, conn);
        Err(ChatError::SlowConsumer)
    }
}

/// Sends `sub` what it missed (or the answer in progress); answers what that covered.
async fn replay(
    s: &ChatState,
    sub: &Subscriber,
    since: Option<Resume>,
) -> Result<ReplaySeen, ChatError> {
    let mut seen = ReplaySeen::default();
    if let Some(since) = since {
        let from = if since.saw_end {
            since.after
        } else {
            since.after - 1
        };
        let missed = messages::list_after(&s.deps.db, s.chat_id, from.max(0), REPLAY_LIMIT)
            .await
            .map_err(|_| ChatError::Unavailable)?;
        for m in missed {
            // The message at the resume point again only if it is an answer.
            if m.seq <= since.after && m.role != "assistant" {
                continue;
            }
            let ended_badly = (m.status == "failed").then(|| (m.id, m.finish_reason.clone()));
            let frame = s.snapshot(m);
            seen.saw(&frame);
            if !sub.push(Outbound::new(&frame, frame.event_id(|_| None))) {
                return Err(ChatError::SlowConsumer);
            }
            // A failed answer is followed by its error, as it was live.
            if let Some((id, reason)) = ended_badly {
                let err = if reason.as_deref() == Some("interrupted") {
                    super::sink::interrupted()
                } else {
                    ApiError::new(
                        crate::error::ErrorCode::ProviderUnavailable,
                        "the answer failed; send again to retry",
                    )
                };
                let frame = ServerFrame::from_error(&err).about(s.chat_id, id);
                if !sub.push(Outbound::new(&frame, None)) {
                    return Err(ChatError::SlowConsumer);
                }
            }
        }
    } else if let Some(r) = s.turns.current() {
        // Joining mid-answer without a seq: the answer so far, then its deltas.
        let frame = s.snapshot(r.message.clone());
        seen.saw(&frame);
        if !sub.push(Outbound::new(&frame, frame.event_id(|_| None))) {
            return Err(ChatError::SlowConsumer);
        }
    }
    Ok(seen)
}

/// The provider and model answering, as the generation learned them.
fn on_started(s: &mut ChatState, gen_id: u64, provider: String, model: String) {
    if let Some(r) = s.turns.running(gen_id) {
        r.message.provider = Some(provider);
        r.message.model = Some(model);
    }
}

/// A chat with nothing to answer, no request waiting and no subscriber stops
/// once it has been quiet for `chat.idle_timeout_secs`.
fn stop_if_idle(me: &ActorRef<ChatMsg>, s: &ChatState) {
    let idle = Duration::from_secs(s.deps.config.idle_timeout_secs);
    if s.turns.is_idle()
        && s.pending.depth() == 0
        && s.deps.hub.subscriber_count(s.chat_id) == 0
        && s.last_active.elapsed() >= idle
    {
        me.stop(Some("idle".into()));
    }
}

/// A delta of the running answer, published to its subscribers.
fn on_delta(s: &mut ChatState, gen_id: u64, text: String) {
    if let Some(d) = s.turns.append(gen_id, &text) {
        s.publish(&ServerFrame::Delta {
            chat_id: s.chat_id,
            message_id: d.message_id,
            index: d.index,
            text,
        });
    }
}

/// A generation ended: tell subscribers, then start the next answer.
async fn on_ended(me: &ActorRef<ChatMsg>, s: &mut ChatState, gen_id: u64, finished: Finished) {
    let Finished {
        ending,
        stored,
        next_awaiting,
    } = finished;
    let Some(run) = s.turns.end(gen_id) else {
        return;
    };
    metrics::gauge!("switchboard_streams_active").decrement(1.0);
    s.deps.streaming.remove(&s.chat_id);
    publish_end(s, &run.message, ending, stored);
    match next_awaiting {
        // Nothing awaited an answer when this one was stored, and
        // nothing was queued here since: the queue is empty without reading it.
        Some(None) if !s.turns.has_waiting() && !s.adopt_any => queue_empty(s).await,
        // The head is a message queued here: no need to read the queue
        // (only later messages can have come since, and this node still
        // holds the chat's lease).
        Some(Some(head)) if !s.adopt_any => {
            let known = s
                .turns
                .find_waiting(|q| q.user_message.id == head)
                .map(|q| q.user_message.clone());
            start_next(me, s, known).await;
        }
        _ => start_next(me, s, None).await,
    }
}

/// Tells subscribers how the answer ended: `done`, or the failed row and an `error`.
fn publish_end(s: &ChatState, answer: &Message, e: Ending, stored: Option<Message>) {
    tracing::info!(chat_id = %s.chat_id, message_id = %answer.id, provider = %e.provider, model = %e.model,
        status = e.status.as_str(), input_tokens = e.usage.input_tokens, output_tokens = e.usage.output_tokens,
        cost_micros = e.cost_micros, "answer finished");
    let frame = match &e.error {
        None => ServerFrame::Done {
            chat_id: s.chat_id,
            message_id: answer.id,
            usage: e.usage,
            cost_micros: e.cost_micros,
            cost_usd: micros_to_usd(e.cost_micros),
            provider: e.provider,
            model: e.model,
            finish_reason: e.finish_reason,
            citations: answer.citations.clone(),
        },
        Some(err) => {
            if let Some(m) = stored {
                s.publish(&s.message_frame(m));
            }
            ServerFrame::from_error(&answer_failed(err)).about(s.chat_id, answer.id)
        }
    };
    // `done` is published after the answer stopped being current: give it the seq explicitly.
    let event_id = Some(format!("{}:done", answer.seq));
    s.deps
        .hub
        .publish(s.chat_id, &Outbound::new(&frame, event_id));
}

fn answer_failed(e: &ProviderError) -> ApiError {
    let mut err = ApiError::new(
        crate::error::ErrorCode::ProviderUnavailable,
        format!("the answer failed: {}", e.public()),
    );
    if let ProviderError::RateLimited { retry_after_secs } = e {
        err.retry_after = retry_after_secs.map(Duration::from_secs);
    }
    err
}

/// Saves the running answer's text if it grew since the last save and is old
/// enough (see [`super::turns::Turns::checkpoint_due`]); off the actor.
fn checkpoint(s: &mut ChatState) {
    let every = Duration::from_millis(s.deps.config.checkpoint_ms.max(50));
    if let Some((id, text, deltas)) = s.turns.checkpoint_due(Instant::now(), every) {
        let db = s.deps.db.clone();
        s.deps.gens.tasks.spawn(async move {
            if let Err(e) = messages::checkpoint(&db, id, &text, deltas).await {
                tracing::warn!(message_id = %id, error = %e, "checkpoint failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(&'a ChatActor, ActorRef<ChatMsg>, ChatMsg, &'a mut ChatState) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The bound keeps what ractor allocates per chat small (see `handle`): the
    /// future is about 1.1 KiB; with the Postgres arms inline the loop took 22 KiB.
    #[test]
    fn the_handler_future_an_idle_chat_keeps_is_small() {
        let size = future_size(<ChatActor as Actor>::handle);
        assert!(size <= 2048, "ChatActor::handle's future is {size} bytes");
    }
}
