//! The generation's side of a chat: forwards its events to the chat actor and,
//! at the end, stores the answer's final state itself (retrying until it
//! lands), so a deleted chat, a stopped actor or a shutdown still leaves the
//! row final and the usage billed.
//!
//! An answer whose actor died (a crash or a kill cancels it) is stored as
//! `failed`/`interrupted` and its subscribers are told here, since no actor
//! will; if the restarted actor got to the row first, it told them instead.

use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use uuid::Uuid;

use super::{
    ChatMsg, Finished, GenUpdate,
    group_writes::{FinalError, FinalWriter},
};
use crate::{
    actors::hub::{ChatHub, Outbound},
    error::{ApiError, ErrorCode},
    generation::{Ending, GenEvent, Sink, Status},
    protocol::ServerFrame,
    store::messages::{self, Message},
};

/// When a final write still failing is worth an error in the log.
const LONG_OUTAGE: Duration = Duration::from_secs(30);

pub(super) struct ChatSink {
    pub actor: ActorRef<ChatMsg>,
    pub gen_id: u64,
    pub finals: FinalWriter,
    pub hub: ChatHub,
    pub chat_id: Uuid,
    pub message_id: Uuid,
    /// The answer so far, for the final write.
    pub text: String,
}

impl ChatSink {
    fn tell(&self, update: GenUpdate) -> bool {
        self.actor
            .cast(ChatMsg::Gen {
                gen_id: self.gen_id,
                update,
            })
            .is_ok()
    }
}

/// What subscribers are told of an answer cut off by its actor's death.
pub(super) fn interrupted() -> ApiError {
    ApiError::new(
        ErrorCode::ProviderUnavailable,
        "the answer was interrupted; send again to retry",
    )
}

impl ChatSink {
    /// The answer is failed and no actor is left to say so.
    fn tell_subscribers(&self, m: Message) {
        let id = m.id;
        let seq = m.seq;
        let update = ServerFrame::Message {
            chat_id: self.chat_id,
            seq,
            message: m,
            deltas_included: None,
        };
        let end = ServerFrame::from_error(&interrupted()).about(self.chat_id, id);
        self.hub
            .publish(self.chat_id, &Outbound::new(&update, Some(seq.to_string())));
        self.hub.publish(
            self.chat_id,
            &Outbound::new(&end, Some(format!("{seq}:done"))),
        );
    }
}

impl Sink for ChatSink {
    async fn deliver(&mut self, event: GenEvent) -> bool {
        match event {
            GenEvent::Started {
                provider, model, ..
            } => self.tell(GenUpdate::Started { provider, model }),
            GenEvent::Tokens(tokens) => {
                let text = tokens.concat();
                self.text.push_str(&text);
                self.tell(GenUpdate::Delta { text })
            }
            // Chats offer no tools, so no provider calls one.
            GenEvent::ToolCalls(_) => true,
            GenEvent::Ended(mut ending) => {
                let orphaned = matches!(
                    self.actor.get_status(),
                    ActorStatus::Stopping | ActorStatus::Stopped
                );
                if orphaned && ending.status == Status::Cancelled {
                    ending.status = Status::Failed;
                    "interrupted".clone_into(&mut ending.finish_reason);
                }
                let text = std::mem::take(&mut self.text);
                let stored = finalize(&self.finals, self.message_id, &ending, text).await;
                if orphaned {
                    if let Some(f) = stored {
                        self.tell_subscribers(f.message);
                    }
                    return false;
                }
                // Unknown (the row was gone): the chat reads its queue.
                let next_awaiting = stored.as_ref().map(|f| f.next_awaiting);
                let stored = stored.map(|f| f.message);
                self.tell(GenUpdate::Ended(Box::new(Finished {
                    ending,
                    stored,
                    next_awaiting,
                })))
            }
        }
    }
}

/// Writes the answer's final state, with backoff, until it lands: subscribers
/// get `done` only once the row says so. Only an error that retrying cannot
/// cure (the database refusing this row) gives up; the start-up sweep then
/// fails the row (the usage is billed either way).
async fn finalize(
    finals: &FinalWriter,
    id: Uuid,
    e: &Ending,
    mut text: String,
) -> Option<messages::Finalized> {
    // Postgres text cannot hold NUL, which a provider may well send.
    if text.contains('\0') {
        text = text.replace('\0', "\u{FFFD}");
    }
    let outcome = messages::Outcome {
        status: e.status.as_str(),
        provider: e.provider.clone(),
        model: e.model.clone(),
        content: text,
        finish_reason: e.finish_reason.clone(),
        input_tokens: i32::try_from(e.usage.input_tokens).unwrap_or(i32::MAX),
        output_tokens: i32::try_from(e.usage.output_tokens).unwrap_or(i32::MAX),
        cost_micros: e.cost_micros,
    };
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(50);
    let mut told = false;
    loop {
        match finals.finalize(id, outcome.clone()).await {
            Ok(m) => return Some(m),
            // Deleted with its chat, or already failed by a restarted actor.
            Err(FinalError::Gone) => return None,
            Err(FinalError::Refused(err)) => {
                tracing::error!(message_id = %id, error = %err, "the database refused the answer's final state");
                return None;
            }
            Err(FinalError::Unavailable(err)) => {
                if !told && started.elapsed() >= LONG_OUTAGE {
                    told = true;
                    tracing::error!(message_id = %id, error = %err, "cannot finalize answer for a while; still retrying");
                } else {
                    tracing::warn!(message_id = %id, error = %err, "cannot finalize answer; retrying");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
