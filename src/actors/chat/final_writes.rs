//! Group commit for answers' final writes. Every chat's sink on this node
//! hands its final write to one [`FinalWriter`]; the writes that arrive while
//! a batch is in Postgres go together in the next one: one statement and one
//! commit for the answers of many chats (`messages::finalize`). There is no
//! timer: a lone write goes at once, and under load a batch takes whatever
//! queued behind the last. A batch the database refuses is written again row
//! by row, so one bad row fails only its own answer.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{
    self,
    messages::{self, Finalized, Outcome},
};

/// Most answers in one statement.
const BATCH: usize = 256;

/// Why a final write did not land.
#[derive(Debug)]
pub(super) enum FinalError {
    /// The answer is gone (its chat was deleted) or already ended (a restarted actor failed it).
    Gone,
    /// The database refused this row: retrying cannot help.
    Refused(String),
    /// The database could not take it now: worth retrying.
    Unavailable(String),
}

type Reply = oneshot::Sender<Result<Finalized, FinalError>>;

/// The handle every sink holds. The writer's task ends with the last handle.
#[derive(Clone)]
pub(crate) struct FinalWriter(mpsc::UnboundedSender<(Uuid, Outcome, Reply)>);

impl FinalWriter {
    pub(crate) fn start(db: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, rx));
        Self(tx)
    }

    /// Ends answer `id` as `outcome` says, in the next batch.
    pub(super) async fn finalize(
        &self,
        id: Uuid,
        outcome: Outcome,
    ) -> Result<Finalized, FinalError> {
        let stopped = || FinalError::Unavailable("the final writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.0.send((id, outcome, reply)).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(db: PgPool, mut rx: mpsc::UnboundedReceiver<(Uuid, Outcome, Reply)>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let (ends, replies): (Vec<_>, Vec<_>) = jobs
            .drain(..)
            .map(|(id, o, reply)| ((id, o), reply))
            .unzip();
        write(&db, ends, replies).await;
    }
}

async fn write(db: &PgPool, ends: Vec<(Uuid, Outcome)>, replies: Vec<Reply>) {
    metrics::counter!("switchboard_final_write_batches_total").increment(1);
    metrics::counter!("switchboard_final_writes_total").increment(ends.len() as u64);
    match messages::finalize(db, &ends).await {
        Ok(rows) => {
            let mut rows: HashMap<Uuid, Finalized> =
                rows.into_iter().map(|f| (f.message.id, f)).collect();
            for ((id, _), reply) in ends.iter().zip(replies) {
                let _ = reply.send(rows.remove(id).ok_or(FinalError::Gone));
            }
        }
        Err(e) if ends.len() > 1 && !store::is_transient(&e) => {
            tracing::warn!(error = %e, answers = ends.len(), "final writes refused together; writing them one by one");
            for (end, reply) in ends.into_iter().zip(replies) {
                let id = end.0;
                let one = messages::finalize(db, &[end]).await;
                let _ = reply.send(match one {
                    Ok(rows) => rows.into_iter().next().ok_or(FinalError::Gone),
                    Err(e) => Err(failure(&e)),
                });
                tracing::debug!(message_id = %id, "final write retried alone");
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(failure(&e)));
            }
        }
    }
}

fn failure(e: &sqlx::Error) -> FinalError {
    if store::is_transient(e) {
        FinalError::Unavailable(e.to_string())
    } else {
        FinalError::Refused(e.to_string())
    }
}
