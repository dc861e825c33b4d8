//! Taking a user's message into a chat: stored under the chat's next seq
//! and acked. On a chat where nothing waits and nothing was stored since the
//! send read it, the message and its answer are stored in one statement and
//! the answer starts at once; otherwise the message is stored alone and the
//! queue (queue.rs) decides when it is answered.

use ractor::ActorRef;

use super::{
    Ack, Admitted, ChatError, ChatMsg, SendRequest,
    actor::{ChatState, Queued},
    queue::{launch, lease, start_next},
};
use crate::store::{
    self,
    messages::{self, Message},
};

/// Stores the user's message under the next seq, acks it and queues its answer.
pub(super) async fn accept(
    me: &ActorRef<ChatMsg>,
    s: &mut ChatState,
    req: SendRequest,
    admitted: Admitted,
) -> Result<Ack, ChatError> {
    // Nothing waits, here or in the chat: the message and its answer are
    // stored together (one statement, one commit) when nothing is stored in
    // between; otherwise the message alone, and the queue decides.
    let (req, admitted) =
        if s.turns.is_idle() && admitted.queue_was_empty && !s.deps.gens.draining.is_cancelled() {
            match accept_and_open(me, s, req, admitted).await {
                Ok(done) => return done,
                Err(back) => *back,
            }
        } else {
            (req, admitted)
        };
    // With other chats' messages: one statement and one commit (group_writes.rs).
    let stored = s.deps.turns.store(new_message(s, &req)).await;
    let user_message = match stored {
        Ok(m) => m,
        Err(e) => return not_stored(s, req, e).await,
    };
    let ack = Ack::stored(&req, &user_message);
    // The prompt read before the hop is exact only if nothing was stored in between.
    let exact = s.turns.is_idle() && user_message.seq == admitted.read_at_seq + 1;
    // Nothing waited and nothing was stored in between: this message heads
    // the chat's queue, no need to read the queue back.
    let head = (exact && admitted.queue_was_empty).then(|| user_message.clone());
    s.publish(&s.message_frame(user_message.clone()));
    s.turns.push(Queued {
        user_message,
        req,
        planned: admitted.planned,
        prompt: exact.then_some(admitted.prompt),
        context: admitted.context,
        span: crate::traces::current_span(),
    });
    start_next(me, s, head).await;
    Ok(ack)
}

/// Why a user's message was not stored, as its sender is told: a
/// `client_msg_id` stored first (by another node, or an earlier call) is
/// answered with that message's ack; the admitted generation is dropped and
/// its reservation released.
async fn not_stored(s: &ChatState, req: SendRequest, e: sqlx::Error) -> Result<Ack, ChatError> {
    match e {
        e if store::is_unique_violation(&e, "messages_chat_id_client_msg_id_key") => {
            match messages::by_client_msg_id(&s.deps.db, s.chat_id, &req.client_msg_id).await {
                Ok(Some(m)) => Ack::resent(req, &m),
                _ => Err(ChatError::Unavailable),
            }
        }
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => Err(ChatError::NotFound),
        e => {
            tracing::error!(chat_id = %s.chat_id, error = %e, "cannot store user message");
            Err(ChatError::Unavailable)
        }
    }
}

/// Stores the message with its answer opened and starts the answer, under
/// the chat's lease; hands the send back when another node holds the chat or
/// something was stored since the send read the chat.
async fn accept_and_open(
    me: &ActorRef<ChatMsg>,
    s: &mut ChatState,
    req: SendRequest,
    admitted: Admitted,
) -> Result<Result<Ack, ChatError>, Box<(SendRequest, Admitted)>> {
    let Some(fence) = lease(s).await else {
        return Err(Box::new((req, admitted)));
    };
    let first = admitted.planned.first();
    let turn = messages::NewTurn {
        message: new_message(s, &req),
        read_at: admitted.read_at_seq,
        fence,
        provider: first.provider.clone(),
        model: first.model.clone(),
        prompt_tokens: i32::try_from(admitted.planned.prompt_tokens).unwrap_or(i32::MAX),
    };
    // With other chats' turns: one statement and one commit (group_writes.rs).
    let stored = s.deps.turns.open(turn).await;
    let (user_message, assistant) = match stored {
        Ok(Some(rows)) => rows,
        Ok(None) => return Err(Box::new((req, admitted))),
        Err(e) => return Ok(not_stored(s, req, e).await),
    };
    let ack = Ack::stored(&req, &user_message);
    s.publish(&s.message_frame(user_message.clone()));
    let q = Queued {
        user_message,
        req,
        planned: admitted.planned,
        prompt: None,
        context: admitted.context,
        span: crate::traces::current_span(),
    };
    launch(me, s, q, admitted.prompt, assistant).await;
    Ok(Ok(ack))
}

fn new_message(s: &ChatState, req: &SendRequest) -> messages::NewUserMessage {
    messages::NewUserMessage {
        chat_id: s.chat_id,
        author_id: req.author,
        client_msg_id: req.client_msg_id.clone(),
        content: req.content.clone(),
    }
}

impl Ack {
    /// The ack of a message this send has just stored.
    fn stored(req: &SendRequest, m: &Message) -> Self {
        Self {
            client_msg_id: req.client_msg_id.clone(),
            message_id: m.id,
            seq: m.seq,
            duplicate: false,
        }
    }

    /// The ack of a message already stored under this `client_msg_id`; the
    /// same id with other content is a client bug, refused as Stripe refuses
    /// a reused idempotency key, rather than silently answered with the old one.
    pub(super) fn resent(req: SendRequest, m: &Message) -> Result<Self, ChatError> {
        if m.content != req.content {
            return Err(ChatError::IdReused);
        }
        Ok(Self {
            client_msg_id: req.client_msg_id,
            message_id: m.id,
            seq: m.seq,
            duplicate: true,
        })
    }
}
