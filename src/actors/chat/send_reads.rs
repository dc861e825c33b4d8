//! The read every send makes before admission (`store::chats::send_contexts`),
//! batched across sends like the chat's writes (`actors::group_commit`): the
//! reads that queue while one batch is in Postgres go together in the next,
//! one statement for many users' sends. A batch that fails is read again
//! send by send, so each caller gets its own answer or error.

use sqlx::PgPool;

use crate::{
    actors::group_commit::GroupCommit,
    store::chats::{self, SendContext, SendRead},
};

type Read = Result<Option<SendContext>, sqlx::Error>;

#[derive(Clone)]
pub struct SendReader(GroupCommit<SendRead, Read>);

impl SendReader {
    /// `requeue_window_secs` and `history` as `chats::send_contexts` takes them.
    pub fn start(db: PgPool, requeue_window_secs: i64, history: i64) -> Self {
        Self(GroupCommit::start("send_reads", move |reads| {
            let db = db.clone();
            async move { read(&db, reads, requeue_window_secs, history).await }
        }))
    }

    /// The send's context, `None` unless the user is a member of the chat.
    pub async fn read(&self, read: SendRead) -> Read {
        self.0
            .submit(read)
            .await
            .unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

async fn read(db: &PgPool, reads: Vec<SendRead>, window: i64, history: i64) -> Vec<Read> {
    match chats::send_contexts(db, &reads, window, history).await {
        Ok(contexts) => contexts.into_iter().map(Ok).collect(),
        Err(e) if reads.len() > 1 => {
            tracing::debug!(error = %e, reads = reads.len(), "send reads failed together; reading them one by one");
            let mut out = Vec::with_capacity(reads.len());
            for r in &reads {
                let one = chats::send_contexts(db, std::slice::from_ref(r), window, history).await;
                out.push(one.map(|mut c| c.pop().flatten()));
            }
            out
        }
        Err(e) => vec![Err(e)],
    }
}
