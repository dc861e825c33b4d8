//! The chat writes that go through group commit (`actors::group_commit`), so
//! that many chats' rows cost one statement and one commit:
//!
//! - [`TurnWriter`]: a message and its opened answer, on a chat where nothing
//!   waits (`messages::insert_turns`), or a message alone (`messages::insert_users`;
//!   both from accept.rs);
//! - [`FinalWriter`]: an answer's final state (`messages::finalize`; sink.rs).
//!
//! A batch the database refuses is written again row by row
//! (`group_commit::whole_or_each`; for final writes, unless the database is
//! unreachable, when retrying each row would only multiply the failures), so
//! one bad row (a repeated `client_msg_id`, a check) fails only its own write.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    actors::group_commit::{GroupCommit, whole_or_each},
    store::{
        self,
        messages::{self, Finalized, Message, NewTurn, NewUserMessage, Outcome},
    },
};

/// A turn stored (the message and its answer), or `None` when its chat moved
/// on since the sender read it (nothing was written).
type Opened = Result<Option<(Message, Message)>, sqlx::Error>;

/// A message stored alone; `RowNotFound` when its chat is gone.
type Stored = Result<Message, sqlx::Error>;

/// Stores this node's accepted messages, with their answers opened or alone, in batches.
#[derive(Clone)]
pub struct TurnWriter {
    turns: GroupCommit<NewTurn, Opened>,
    messages: GroupCommit<NewUserMessage, Stored>,
}

impl TurnWriter {
    pub fn start(db: PgPool, node_id: std::sync::Arc<str>) -> Self {
        let (db2, node_id2) = (db.clone(), node_id.clone());
        Self {
            turns: GroupCommit::start("turns", move |turns| {
                let (db, node_id) = (db.clone(), node_id.clone());
                async move { open_turns(&db, &node_id, turns).await }
            }),
            messages: GroupCommit::start("messages", move |new| {
                let (db, node_id) = (db2.clone(), node_id2.clone());
                async move { store_messages(&db, &node_id, new).await }
            }),
        }
    }

    /// Stores the message with its answer opened, in the next batch.
    pub async fn open(&self, turn: NewTurn) -> Opened {
        self.turns
            .submit(turn)
            .await
            .unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    /// Stores the message alone (its answer waits), in the next batch.
    pub async fn store(&self, message: NewUserMessage) -> Stored {
        self.messages
            .submit(message)
            .await
            .unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

async fn store_messages(db: &PgPool, node_id: &str, new: Vec<NewUserMessage>) -> Vec<Stored> {
    whole_or_each("messages", &new, |new| async move {
        let mut stored = messages::insert_users(db, node_id, new).await?;
        Ok(new
            .iter()
            .map(|m| stored.remove(&m.chat_id).ok_or(sqlx::Error::RowNotFound))
            .collect())
    })
    .await
}

async fn open_turns(db: &PgPool, node_id: &str, turns: Vec<NewTurn>) -> Vec<Opened> {
    whole_or_each("turns", &turns, |turns| async move {
        let mut opened = messages::insert_turns(db, node_id, turns).await?;
        Ok(turns
            .iter()
            .map(|t| Ok(opened.remove(&t.message.chat_id)))
            .collect())
    })
    .await
}

/// Why a final write did not land.
#[derive(Debug)]
pub enum FinalError {
    /// The answer is gone (its chat was deleted) or already ended (a restarted actor failed it).
    Gone,
    /// The database refused this row: retrying cannot help.
    Refused(String),
    /// The database could not take it now: worth retrying.
    Unavailable(String),
}

type Written = Result<Finalized, FinalError>;

/// Ends answers, of any chats, in batches.
#[derive(Clone)]
pub struct FinalWriter(GroupCommit<(Uuid, Outcome), Written>);

impl FinalWriter {
    pub fn start(db: PgPool) -> Self {
        Self(GroupCommit::start("finals", move |ends| {
            let db = db.clone();
            async move { finalize(&db, ends).await }
        }))
    }

    /// Ends answer `id` as `outcome` says, in the next batch.
    pub async fn finalize(&self, id: Uuid, outcome: Outcome) -> Written {
        self.0
            .submit((id, outcome))
            .await
            .unwrap_or_else(|| Err(FinalError::Unavailable("the final writer stopped".into())))
    }
}

async fn finalize(db: &PgPool, ends: Vec<(Uuid, Outcome)>) -> Vec<Written> {
    match messages::finalize(db, &ends).await {
        Ok(rows) => {
            let mut rows: HashMap<Uuid, Finalized> =
                rows.into_iter().map(|f| (f.message.id, f)).collect();
            ends.iter()
                .map(|(id, _)| rows.remove(id).ok_or(FinalError::Gone))
                .collect()
        }
        Err(e) if ends.len() > 1 && !store::is_transient(&e) => {
            tracing::warn!(error = %e, answers = ends.len(), "final writes refused together; writing them one by one");
            let mut written = Vec::with_capacity(ends.len());
            for end in ends {
                written.push(match messages::finalize(db, &[end]).await {
                    Ok(rows) => rows.into_iter().next().ok_or(FinalError::Gone),
                    Err(e) => Err(failure(&e)),
                });
            }
            written
        }
        Err(e) => ends.iter().map(|_| Err(failure(&e))).collect(),
    }
}

fn failure(e: &sqlx::Error) -> FinalError {
    if store::is_transient(e) {
        FinalError::Unavailable(e.to_string())
    } else {
        FinalError::Refused(e.to_string())
    }
}
