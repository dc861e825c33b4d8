//! Group commit: one task per kind of write (or read), taking the jobs that
//! arrive while a batch is in Postgres together in the next batch, so many
//! chats' writes cost one statement and one commit. There is no timer: a lone write
//! goes at once, and under load a batch holds whatever queued behind the
//! last. The write function answers each job in order; a batch the database
//! refuses is usually tried again job by job ([`whole_or_each`]).

use std::{future::Future, panic::AssertUnwindSafe};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one batch.
const BATCH: usize = 256;

type Job<J, R> = (J, oneshot::Sender<R>);

/// The handle callers hold; the task ends when the last handle is dropped.
pub struct GroupCommit<J, R>(mpsc::UnboundedSender<Job<J, R>>);

impl<J, R> Clone for GroupCommit<J, R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<J: Send + 'static, R: Send + 'static> GroupCommit<J, R> {
    /// Starts the task; `write` gets each batch and answers one `R` per job,
    /// in order. `kind` labels its metrics.
    #[expect(
        clippy::disallowed_methods,
        reason = "untracked on purpose: it ends when its last handle drops, after the \
                  tracked tasks that await their writes here; tracking it would make \
                  shutdown wait for a task that only ends with the app"
    )]
    pub fn start<F, Fut>(kind: &'static str, mut write: F) -> Self
    where
        F: FnMut(Vec<J>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<J, R>>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let (jobs, replies): (Vec<J>, Vec<_>) = batch.drain(..).unzip();
                metrics::counter!("switchboard_group_commit_batches_total", "kind" => kind)
                    .increment(1);
                metrics::counter!("switchboard_group_commit_jobs_total", "kind" => kind)
                    .increment(jobs.len() as u64);
                // A write that panics fails its own batch (its callers get no
                // result), not the batches after it.
                let Ok(results) = AssertUnwindSafe(write(jobs)).catch_unwind().await else {
                    tracing::error!(kind, "a group-commit batch panicked");
                    continue;
                };
                debug_assert_eq!(results.len(), replies.len(), "one result per job");
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        Self(tx)
    }

    /// The job's result, once its batch is written; `None` when the task is
    /// gone (the runtime is shutting down) or the batch's write panicked.
    pub async fn submit(&self, job: J) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.0.send((job, reply)).ok()?;
        answer.await.ok()
    }
}

/// One result per job, in order, from `write` run on the whole batch; when
/// the batch fails as a whole, from `write` run on each job alone, so one bad
/// row (a repeated key, a broken check) fails only its own job.
pub async fn whole_or_each<'a, J, R, Fut>(
    kind: &'static str,
    jobs: &'a [J],
    write: impl Fn(&'a [J]) -> Fut,
) -> Vec<Result<R, sqlx::Error>>
where
    Fut: Future<Output = Result<Vec<Result<R, sqlx::Error>>, sqlx::Error>>,
{
    match write(jobs).await {
        Ok(each) => each,
        Err(e) if jobs.len() > 1 => {
            tracing::debug!(kind, error = %e, jobs = jobs.len(), "batch failed; each job alone");
            let mut each = Vec::with_capacity(jobs.len());
            for job in jobs {
                each.push(match write(std::slice::from_ref(job)).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(sqlx::Error::RowNotFound)),
                    Err(e) => Err(e),
                });
            }
            each
        }
        Err(e) => vec![Err(e)],
    }
}
