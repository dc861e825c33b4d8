//! [`ChatRegistry`]: how transports reach chat actors. A `send` is validated,
//! de-duplicated, checked for membership, planned and admitted (limits and
//! the budget reservation, under the plan of the workspace that owns the
//! chat, read fresh) in the caller's task; only then does it hop to the actor.

use std::sync::{Arc, Mutex};

use ractor::{ActorRef, rpc::CallResult};
use uuid::Uuid;

use super::{Ack, Admitted, ChatError, ChatMsg, SendRequest, supervisor::ChatSupervisorMsg};
use crate::{
    actors::{
        hub::{ChatHub, ConnId, Subscriber},
        registry::{CALL_TIMEOUT, Registry},
    },
    admission::Payer,
    config::ChatConfig,
    generation::Generations,
    providers::PromptMessage,
    store::{self, messages},
};

/// What every chat actor and the registry share.
pub struct ChatDeps {
    pub db: sqlx::PgPool,
    /// Messages stored, alone or with their answer opened: batched across chats.
    pub turns: super::TurnWriter,
    /// The read before each send's admission, batched across sends.
    pub send_reads: super::SendReader,
    /// Answers' final writes, batched across chats.
    pub finals: super::FinalWriter,
    /// Retrieval for sends that ask for the workspace's documents.
    pub documents: crate::documents::Library,
    pub hub: ChatHub,
    pub gens: Generations,
    pub config: ChatConfig,
    /// Chats with an answer streaming now (operations views).
    pub streaming: dashmap::DashSet<Uuid>,
    /// This node's name and the chat leases.
    pub cluster: crate::cluster::Cluster,
    /// `accounts.unverified_may_spend`: whether a send needs a verified address.
    pub unverified_may_spend: bool,
}

/// Finds a chat's actor, starting it on first use; never two per chat.
#[derive(Clone)]
pub struct ChatRegistry {
    pub(super) actors: Registry<Uuid, ChatMsg, ChatError>,
    deps: Arc<ChatDeps>,
}

pub(super) fn to_prompt(rows: Vec<(String, String)>) -> Vec<PromptMessage> {
    rows.into_iter()
        .map(|(role, content)| PromptMessage {
            role,
            content,
            ..PromptMessage::default()
        })
        .collect()
}

fn storage_error(chat_id: Uuid, e: &sqlx::Error) -> ChatError {
    tracing::error!(%chat_id, error = %e, "chat storage failed");
    ChatError::Unavailable
}

impl ChatRegistry {
    pub(crate) fn new(mailbox_limit: usize, deps: Arc<ChatDeps>) -> Self {
        Self {
            actors: Registry::new("chat", Some(mailbox_limit)),
            deps,
        }
    }

    pub(crate) fn deps(&self) -> &Arc<ChatDeps> {
        &self.deps
    }

    pub(crate) fn set_supervisor(&self, sup: ActorRef<ChatSupervisorMsg>) {
        self.actors.set_supervisor(sup);
    }

    fn validate(&self, req: &SendRequest) -> Result<(), ChatError> {
        if req.client_msg_id.is_empty() || req.client_msg_id.len() > 128 {
            return Err(ChatError::Invalid(
                "client_msg_id: must be 1 to 128 characters".into(),
            ));
        }
        if req.content.trim().is_empty() {
            return Err(ChatError::Invalid("content: must not be empty".into()));
        }
        let max = self.deps.config.max_message_chars;
        if req.content.chars().count() > max {
            return Err(ChatError::Invalid(format!(
                "content: longer than {max} characters"
            )));
        }
        Ok(())
    }

    /// Stores the user's message and queues its answer; a resend of a
    /// `client_msg_id` answers the first ack before any limit is counted.
    pub async fn send(&self, chat_id: Uuid, req: SendRequest) -> Result<Ack, ChatError> {
        let span = crate::trace_span!("chat.send", %chat_id);
        tracing::Instrument::instrument(self.send_admitted(chat_id, req), span).await
    }

    async fn send_admitted(&self, chat_id: Uuid, req: SendRequest) -> Result<Ack, ChatError> {
        self.validate(&req)?;
        let db = &self.deps.db;
        let err = |e: sqlx::Error| storage_error(chat_id, &e);
        let cfg = &self.deps.config;
        let read = store::chats::SendRead {
            user_id: req.author,
            chat_id,
            client_msg_id: req.client_msg_id.clone(),
        };
        let mut ctx = self
            .deps
            .send_reads
            .read(read)
            .await
            .map_err(err)?
            .ok_or(ChatError::NotFound)?;
        if let Some(id) = ctx.resent {
            let m = messages::by_id(db, id)
                .await
                .map_err(err)?
                .ok_or(ChatError::Unavailable)?;
            let ack = Ack::resent(req, &m)?;
            // A message stranded without an answer (its node crashed) is
            // revived by its resend: the chat looks at its queue again.
            if m.role == "user" && messages::unanswered(db, m.id).await.unwrap_or(false) {
                self.kick(chat_id).await;
            }
            return Ok(ack);
        }
        if !ctx.email_verified && !self.deps.unverified_may_spend {
            return Err(ChatError::Unverified);
        }
        let mut prompt = to_prompt(ctx.history());
        prompt.push(PromptMessage {
            role: "user".to_owned(),
            content: req.content.clone(),
            ..PromptMessage::default()
        });
        let keep = usize::try_from(cfg.history_messages).unwrap_or(usize::MAX);
        let mut prompt = prompt.split_off(prompt.len().saturating_sub(keep));
        let payer = Payer {
            workspace_id: ctx.workspace_id,
            user_id: Some(req.author),
            api_key: None,
            plan: ctx.plan,
        };
        let context = super::sources::retrieve(&self.deps.documents, &payer, &req).await?;
        if let Some(c) = &context {
            // The sources go just before the question they are for.
            prompt.insert(prompt.len().saturating_sub(1), c.message.clone());
        }
        let planned = self
            .deps
            .gens
            .plan(payer, &prompt, req.model.as_deref(), cfg.max_output_tokens)
            .await?;
        let slot = Arc::new(Mutex::new(Some(Admitted {
            planned,
            prompt,
            read_at_seq: ctx.last_seq,
            queue_was_empty: !ctx.queued,
            context,
            span: crate::traces::current_span(),
        })));
        self.actors
            .call(chat_id, |reply| ChatMsg::Send {
                req: Box::new(req.clone()),
                admitted: slot.clone(),
                reply,
            })
            .await
    }

    pub async fn subscribe(
        &self,
        chat_id: Uuid,
        sub: Subscriber,
        since: Option<crate::protocol::Resume>,
    ) -> Result<(), ChatError> {
        self.actors
            .call(chat_id, |reply| ChatMsg::Subscribe {
                sub: sub.clone(),
                since,
                reply,
            })
            .await
    }

    pub fn unsubscribe(&self, chat_id: Uuid, conn: ConnId, cancel_if_origin: bool) {
        self.deps.hub.remove(chat_id, conn);
        if let Some(h) = self.actors.get(&chat_id) {
            let _ = h.actor.cast(ChatMsg::Unsubscribe {
                conn,
                cancel_if_origin,
            });
        }
    }

    /// Cancels the answer `message_id` wherever in the cluster it streams:
    /// here, or through the node whose id is on its row.
    pub async fn cancel(&self, chat_id: Uuid, message_id: Uuid) -> Result<(), ChatError> {
        match self.cancel_here(chat_id, message_id).await {
            Err(ChatError::NoSuchGeneration) => {}
            done => return done,
        }
        let streaming_on: Option<Option<String>> = sqlx::query_scalar(
            "select node_id from messages
             where id = $1 and chat_id = $2 and role = 'assistant' and status = 'streaming'",
        )
        .bind(message_id)
        .bind(chat_id)
        .fetch_optional(&self.deps.db)
        .await
        .map_err(|_| ChatError::Unavailable)?;
        let cluster = &self.deps.cluster;
        match streaming_on.flatten() {
            Some(node) if *node != *cluster.node_id => {
                if cluster.request_cancel(&node, chat_id, message_id).await {
                    Ok(())
                } else {
                    Err(ChatError::Unavailable)
                }
            }
            _ => Err(ChatError::NoSuchGeneration),
        }
    }

    /// Takes the cancels other nodes send this one (the node's cancel
    /// channel, `cluster::fanout`) for as long as the node runs.
    pub fn serve_remote_cancels(
        &self,
        mut cancels: tokio::sync::mpsc::UnboundedReceiver<crate::cluster::fanout::Cancel>,
    ) {
        let this = self.clone();
        // On the cluster's tracker: it ends with the fan-out, which holds the sender.
        self.deps.cluster.tasks().spawn(async move {
            while let Some(c) = cancels.recv().await {
                if let Err(e) = this.cancel_here(c.chat_id, c.message_id).await {
                    tracing::debug!(chat_id = %c.chat_id, message_id = %c.message_id, error = %e,
                        "a cancel from another node found nothing running here");
                }
            }
        });
    }

    async fn cancel_here(&self, chat_id: Uuid, message_id: Uuid) -> Result<(), ChatError> {
        // Only a live actor can have a running answer; don't start one to say no.
        let Some(h) = self.actors.get(&chat_id) else {
            return Err(ChatError::NoSuchGeneration);
        };
        match h
            .actor
            .call(
                |reply| ChatMsg::Cancel { message_id, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(ChatError::NoSuchGeneration),
        }
    }

    /// Makes the chat (started if need be) look at its durable queue.
    pub async fn kick(&self, chat_id: Uuid) {
        match self.actors.get_or_spawn(chat_id).await {
            Ok(h) => {
                let _ = h.actor.cast(ChatMsg::Kick { adopt: true });
            }
            Err(e) => tracing::debug!(%chat_id, error = %e, "chat not started for its queue"),
        }
    }

    /// Tells every node's subscribers that these answers were interrupted
    /// (failed by a restart or a takeover): the failed row, then an error.
    pub fn announce_interrupted(&self, failed: &[messages::Message]) {
        for m in failed {
            let (chat_id, id, seq) = (m.chat_id, m.id, m.seq);
            let update = crate::protocol::ServerFrame::Message {
                chat_id,
                seq,
                message: m.clone(),
                deltas_included: None,
            };
            let end = crate::protocol::ServerFrame::from_error(&super::sink::interrupted())
                .about(chat_id, id);
            let hub = &self.deps.hub;
            hub.publish(
                chat_id,
                &crate::actors::hub::Outbound::new(&update, Some(seq.to_string())),
            );
            hub.publish(
                chat_id,
                &crate::actors::hub::Outbound::new(&end, Some(format!("{seq}:done"))),
            );
        }
    }

    /// The live actor of a chat, if any (operations and tests).
    pub fn actor(&self, chat_id: Uuid) -> Option<ActorRef<ChatMsg>> {
        self.actors.get(&chat_id).map(|h| h.actor)
    }

    /// Stops a chat's actor (the chat was deleted); its answer bills itself.
    pub fn stop(&self, chat_id: Uuid) {
        if let Some(h) = self.actors.remove(&chat_id) {
            h.actor.stop(Some("deleted".into()));
        }
    }

    pub fn live_count(&self) -> usize {
        self.actors.len()
    }

    /// Chats with an answer streaming now.
    pub fn streaming_count(&self) -> usize {
        self.deps.streaming.len()
    }

    /// Crash restarts of chat actors since start.
    pub fn restarts(&self) -> u64 {
        self.actors.restarts()
    }

    /// Each live chat: (id, calls queued, answer streaming), a point-in-time copy.
    pub fn live(&self) -> Vec<(Uuid, usize, bool)> {
        self.actors
            .snapshot()
            .into_iter()
            .map(|(id, h)| (id, h.depth(), self.deps.streaming.contains(&id)))
            .collect()
    }
}
