//! The chat's queue, answered one at a time across the cluster: the next
//! message is the chat's oldest user message without an answer row, read from
//! Postgres whichever node accepted it; only the holder of the chat's lease
//! (`crate::cluster::lease`) opens its answer. A message this node accepted is
//! answered with the admission made before the hop; one taken over (its node
//! died, or a crash lost the queue) is admitted again here, or ended visibly
//! with a failed answer row and an error naming its `client_msg_id`.

use std::time::Instant;

use ractor::ActorRef;

use super::{
    ChatDeps, ChatError, ChatMsg, SendRequest,
    actor::{ChatState, Queued},
    sink::ChatSink,
};
use crate::{
    cluster::lease::Acquired,
    error::ApiError,
    generation::BillTo,
    protocol::ServerFrame,
    providers::ChatRequest,
    store::{
        self,
        messages::{self, Message},
    },
};

/// Starts the chat's next answer if none is running here: the oldest user
/// message without one (`known_head` when the caller knows it), under the
/// chat's lease.
pub(super) async fn start_next(
    me: &ActorRef<ChatMsg>,
    s: &mut ChatState,
    mut known_head: Option<Message>,
) {
    // A draining node starts nothing new: what waits stays awaiting its
    // answer in Postgres, for a survivor (or this node once restarted).
    if s.turns.current().is_some() || s.deps.gens.draining.is_cancelled() {
        return;
    }
    let deps = s.deps.clone();
    let window = deps.cluster.config.requeue_window_secs;
    loop {
        let head = match known_head.take() {
            Some(m) => Ok(Some(m)),
            None => messages::next_unanswered(&deps.db, s.chat_id, window).await,
        };
        let head = match head {
            Ok(Some(m)) => m,
            Ok(None) => {
                queue_empty(s).await;
                return;
            }
            Err(e) => {
                tracing::warn!(chat_id = %s.chat_id, error = %e, "cannot read the chat's queue; retrying");
                return;
            }
        };
        // Turns held here for earlier messages were answered by another node:
        // dropping them releases their reservations.
        drop(s.turns.retain(|q| q.user_message.seq >= head.seq));
        let local = s.turns.take_where(|q| q.user_message.id == head.id);
        if local.is_none() && !s.adopt_any && !adoptable(&deps, &head) {
            // Its node is alive and answers it with its own admission.
            release_lease(s).await;
            return;
        }
        let fence = match lease(s).await {
            Some(f) => f,
            None => {
                if let Some(q) = local {
                    s.turns.push_front(q);
                }
                return;
            }
        };
        let q = match local {
            Some(q) => q,
            None => match adopt(s, head).await {
                Ok(Some(q)) => q,
                // Ended visibly: on to the next.
                Ok(None) => continue,
                // Storage is down: retried on a later kick or send.
                Err(()) => return,
            },
        };
        open(me, s, q, fence).await;
        return;
    }
}

/// Nothing in the chat awaits an answer: whatever waits here was answered
/// by another node, and the lease goes back.
pub(super) async fn queue_empty(s: &mut ChatState) {
    s.adopt_any = false;
    drop(s.turns.drain());
    release_lease(s).await;
}

/// Whether this node answers a message another node accepted: when that
/// node is this one (a crash lost the queue), unknown, or had its chance.
fn adoptable(deps: &ChatDeps, m: &Message) -> bool {
    let handoff = chrono::Duration::milliseconds(
        i64::try_from(deps.cluster.config.node_ttl_ms).unwrap_or(i64::MAX),
    );
    match m.node_id.as_deref() {
        None => true,
        Some(n) if n == &*deps.cluster.node_id => true,
        Some(_) => chrono::Utc::now() - m.created_at > handoff,
    }
}

/// The chat's fencing token: `Some(Some(t))` held, `Some(None)` Redis is down
/// (this node carries on alone), `None` another node holds the chat.
pub(super) async fn lease(s: &mut ChatState) -> Option<Option<i64>> {
    let leases = &s.deps.cluster.leases;
    let now = Instant::now();
    if let Some(t) = s.lease.token(now, leases.ttl) {
        return Some(Some(t));
    }
    match leases.acquire(s.chat_id).await {
        Acquired::Held(t) => {
            s.lease.acquired(t, now);
            Some(Some(t))
        }
        Acquired::Elsewhere => None,
        Acquired::Unavailable => Some(None),
    }
}

async fn release_lease(s: &mut ChatState) {
    if let Some(t) = s.lease.release() {
        s.deps.cluster.leases.release(s.chat_id, t).await;
    }
}

/// Renews the lease off the actor while an answer runs; the outcome comes back as [`ChatMsg::Lease`].
pub(super) fn renew_lease(me: &ActorRef<ChatMsg>, s: &ChatState) {
    let now = Instant::now();
    let Some(token) = s.lease.renew_due(now, s.deps.cluster.leases.ttl) else {
        return;
    };
    let (me, leases, chat_id) = (me.clone(), s.deps.cluster.leases.clone(), s.chat_id);
    s.deps.gens.tasks.spawn(async move {
        let ours = leases.renew(chat_id, token).await;
        let _ = me.cast(ChatMsg::Lease {
            token,
            at: now,
            ours,
        });
    });
}

/// Admits a message this node did not queue (taken over, or its queue was
/// lost in a crash); one that cannot be admitted ends with a failed answer
/// row and an error naming its `client_msg_id`.
async fn adopt(s: &mut ChatState, m: Message) -> Result<Option<Queued>, ()> {
    let deps = s.deps.clone();
    let planned = async {
        let author = m.author_id.ok_or(ChatError::NotFound)?;
        let payer = store::chats::payer_for_member(&deps.db, author, s.chat_id)
            .await
            .map_err(|_| ChatError::Unavailable)?
            .ok_or(ChatError::NotFound)?;
        let payer = crate::admission::Payer {
            workspace_id: payer.workspace_id,
            user_id: Some(author),
            api_key: None,
            plan: payer.plan,
        };
        let history = messages::prompt_history(&deps.db, s.chat_id, deps.config.history_messages)
            .await
            .map_err(|_| ChatError::Unavailable)?;
        let prompt = super::handle::to_prompt(history);
        let planned = deps
            .gens
            .plan(payer, &prompt, None, deps.config.max_output_tokens)
            .await?;
        Ok::<_, ChatError>((author, planned))
    }
    .await;
    match planned {
        Ok((author, planned)) => {
            tracing::info!(chat_id = %s.chat_id, message_id = %m.id, accepted_by = ?m.node_id, "answering a message taken over");
            Ok(Some(Queued {
                req: SendRequest {
                    author,
                    client_msg_id: m.client_msg_id.clone().unwrap_or_default(),
                    content: m.content.clone(),
                    model: None,
                    origin: None,
                    documents: None,
                },
                user_message: m,
                planned,
                prompt: None,
                context: None,
                span: tracing::Span::none(),
            }))
        }
        Err(ChatError::Unavailable) => Err(()),
        Err(e) => {
            let err = ApiError::from(e);
            let reason = serde_json::to_value(err.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "not_admitted".to_owned());
            match messages::insert_unanswerable(
                &deps.db,
                s.chat_id,
                m.id,
                &reason,
                &deps.cluster.node_id,
            )
            .await
            {
                Ok(Some(failed)) => {
                    tracing::warn!(chat_id = %s.chat_id, message_id = %m.id, %reason, "message taken over could not be admitted: failed");
                    let id = failed.id;
                    s.publish(&s.message_frame(failed));
                    s.publish(
                        &ServerFrame::from_error(&err)
                            .about(s.chat_id, id)
                            .for_client_msg(m.client_msg_id.clone()),
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(chat_id = %s.chat_id, error = %e, "cannot end an unadmitted message");
                    return Err(());
                }
            }
            Ok(None)
        }
    }
}

/// Opens the answer to `q` and starts its generation; `q` waits again when
/// storage failed or a newer lease holder fenced this node out.
async fn open(me: &ActorRef<ChatMsg>, s: &mut ChatState, mut q: Queued, fence: Option<i64>) {
    let deps = s.deps.clone();
    let prompt = match q.prompt.take() {
        Some(p) => Ok(p),
        None => messages::prompt_history(&deps.db, s.chat_id, deps.config.history_messages)
            .await
            .map(super::handle::to_prompt)
            .map(|p| super::sources::with_context(p, q.context.as_ref())),
    };
    // The answer row is opened only once its prompt is in hand.
    let first = q.planned.first().clone();
    let opener = messages::Opener {
        node_id: &deps.cluster.node_id,
        fence,
    };
    let opened = match prompt {
        Ok(p) => messages::insert_assistant(
            &deps.db,
            s.chat_id,
            q.user_message.id,
            (&first.provider, &first.model),
            i32::try_from(q.planned.prompt_tokens).unwrap_or(i32::MAX),
            opener,
        )
        .await
        .map(|a| (p, a)),
        Err(e) => Err(e),
    };
    let (prompt, assistant) = match opened {
        Ok(x) => x,
        Err(sqlx::Error::RowNotFound) => {
            tracing::warn!(chat_id = %s.chat_id, ?fence, "answer not opened: fenced out by a newer lease holder (or the chat is gone)");
            s.lease.release();
            s.turns.push_front(q);
            return;
        }
        Err(e) => {
            tracing::error!(chat_id = %s.chat_id, error = %e, "cannot open answer; retrying");
            s.turns.push_front(q);
            return;
        }
    };
    launch(me, s, q, prompt, assistant).await;
}

/// Starts the generation of `assistant`, the answer to `q` just opened.
pub(super) async fn launch(
    me: &ActorRef<ChatMsg>,
    s: &mut ChatState,
    q: Queued,
    prompt: Vec<crate::providers::PromptMessage>,
    mut assistant: Message,
) {
    let deps = s.deps.clone();
    let first = q.planned.first().clone();
    super::sources::record(&deps.db, &mut assistant, q.context.as_ref()).await;
    let request = ChatRequest {
        model: first.model,
        messages: prompt,
        max_tokens: q.planned.max_tokens,
        ..ChatRequest::default()
    };
    let cancel = s.generations.child_token();
    let gen_id = s
        .turns
        .start(assistant.clone(), q.req.origin, cancel.clone());
    s.publish(&s.message_frame(assistant.clone()));
    metrics::gauge!("switchboard_streams_active").increment(1.0);
    s.deps.streaming.insert(s.chat_id);
    let bill_to = BillTo {
        user_id: Some(q.req.author),
        chat_id: Some(s.chat_id),
        message_id: Some(assistant.id),
    };
    let sink = ChatSink {
        actor: me.clone(),
        gen_id,
        finals: deps.finals.clone(),
        hub: deps.hub.clone(),
        chat_id: s.chat_id,
        message_id: assistant.id,
        text: String::new(),
    };
    // Under its message's span even when it waited in the queue.
    q.span
        .in_scope(|| deps.gens.spawn(q.planned, request, bill_to, cancel, sink));
}
