//! ChatSupervisor → ChatActor per active chat.
//!
//! A chat actor is the one place a chat's events are ordered: it commits user
//! messages (seq from Postgres), acks them, runs one generation at a time (the
//! rest queue), and publishes every event to the chat's subscribers through the
//! [`ChatHub`](super::hub::ChatHub).
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the message vocabulary: [`ChatMsg`], [`SendRequest`], [`Ack`] |
//! | `error.rs` | [`ChatError`] and how it reaches clients |
//! | `turns.rs` | the pure state machine: the queue, the running answer, deltas |
//! | `actor.rs` | the actor: handlers over `Turns`, publishing, idle stop |
//! | `sink.rs` | the generation's side: forwards events, stores the final answer |
//! | `send_reads.rs` | the read before a send's admission, batched across sends |
//! | `group_writes.rs` | group commit: many chats' turns opened, or answers ended, in one statement |
//! | `handle.rs` | [`ChatRegistry`]: validation and admission before the hop, calls |
//! | `sources.rs` | retrieval from the workspace's documents for a send that asks |
//! | `supervisor.rs` | starting and restarting chat actors |
//!
//! Admission (limits and the budget reservation, in Redis) happens in the
//! caller's task before the hop to the actor, so a Redis stall never freezes
//! a chat. Generations run in their own tasks (`crate::generation`), bill
//! themselves and report back as [`ChatMsg::Gen`]; handlers await only short
//! Postgres statements.
//!
//! Transports must check that the caller may see the chat before calling the
//! registry for anything but `send` (which checks membership itself).

mod accept;
mod actor;
mod error;
mod group_writes;
mod handle;
mod queue;
mod send_reads;
mod sink;
mod sources;
mod supervisor;
mod turns;

use std::sync::{Arc, Mutex};

use ractor::RpcReplyPort;
use uuid::Uuid;

pub(crate) use self::handle::ChatDeps;
pub use self::{
    error::ChatError,
    group_writes::{FinalError, FinalWriter, TurnWriter},
    handle::ChatRegistry,
    send_reads::SendReader,
    supervisor::ChatSupervisor,
};
use super::hub::{ConnId, Subscriber};
use crate::{
    generation::{Ending, Planned},
    providers::PromptMessage,
    store::messages::Message,
};

/// The answer to `send`: where the user's message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub client_msg_id: String,
    pub message_id: Uuid,
    pub seq: i64,
    /// The `client_msg_id` had been seen: nothing new was stored or generated.
    pub duplicate: bool,
}

/// A user's message as a transport hands it over.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub author: Uuid,
    pub client_msg_id: String,
    pub content: String,
    pub model: Option<String>,
    /// The connection that asked, for cancel-on-disconnect.
    pub origin: Option<ConnId>,
    /// Answer from the workspace's documents (all, or some), with citations.
    pub documents: Option<crate::documents::retrieval::Scope>,
}

/// What the caller's task prepared before the hop: the admitted generation
/// and the prompt it read (still exact if nothing was stored since `read_at_seq`).
pub struct Admitted {
    planned: Planned,
    prompt: Vec<PromptMessage>,
    read_at_seq: i64,
    /// No message of the chat awaited an answer when `read_at_seq` was read.
    queue_was_empty: bool,
    /// Sources retrieved for this send (already in `prompt`).
    context: Option<crate::documents::retrieval::Context>,
    /// The sender's trace span, parent of the actor's (none when traces are off).
    span: tracing::Span,
}

/// Taken by the actor; left in place when the call has to be retried.
type AdmittedSlot = Arc<Mutex<Option<Admitted>>>;

pub enum ChatMsg {
    Subscribe {
        sub: Subscriber,
        since: Option<crate::protocol::Resume>,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Unsubscribe {
        conn: ConnId,
        /// Cancel the running answer if this connection asked for it.
        cancel_if_origin: bool,
    },
    Send {
        req: Box<SendRequest>,
        admitted: AdmittedSlot,
        reply: RpcReplyPort<Result<Ack, ChatError>>,
    },
    Cancel {
        message_id: Uuid,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    /// From a generation's task.
    Gen {
        gen_id: u64,
        update: GenUpdate,
    },
    /// Look at the chat's durable queue: messages may wait without an answer.
    /// With `adopt`, answer them whichever node accepted them (a takeover, a
    /// resend): their node is known dead or the client asked again.
    Kick {
        adopt: bool,
    },
    /// A lease renewal started at `at` came back: still `ours`, or lost.
    Lease {
        token: i64,
        at: std::time::Instant,
        ours: bool,
    },
    Tick,
}

#[derive(Debug)]
pub enum GenUpdate {
    Started { provider: String, model: String },
    Delta { text: String },
    Ended(Box<Finished>),
}

/// A generation billed and stored: `stored` is the final row, `None` if
/// storage kept failing or the chat was deleted.
#[derive(Debug)]
pub struct Finished {
    pub ending: Ending,
    pub stored: Option<Message>,
    /// When the row was stored: the chat's oldest message awaiting an answer
    /// (`Some(None)`: none did); `None` when that is unknown (not stored).
    pub next_awaiting: Option<Option<Uuid>>,
}
