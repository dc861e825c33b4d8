//! The read every send makes before admission (`store::chats::send_contexts`),
//! batched across sends like the chat's writes (`actors::group_commit`): the
//! reads that queue while one batch is in Postgres go together in the next,
//! one statement for many users' sends. A batch that fails is read again
//! send by send, so each caller gets its own answer or error.

use sqlx::PgPool;

use crate::{
    actors::group_commit::{GroupCommit, whole_or_each},
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
    whole_or_each("send_reads", &reads, |reads| async move {
        let contexts = chats::send_contexts(db, reads, window, history).await?;
        Ok(contexts.into_iter().map(Ok).collect())
    })
    .await
}
