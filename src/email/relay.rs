//! OutboxRelay: moves `email_outbox` rows to RabbitMQ.
//!
//! Each round locks a batch of unpublished rows (`for update skip locked`, so
//! several nodes relay side by side), publishes each with a publisher confirm,
//! and marks published only what the broker confirmed, in the same
//! transaction. With RabbitMQ down the rows simply wait; a crash between
//! confirm and commit publishes a row twice, which the worker's idempotency
//! record absorbs.

use std::{sync::Arc, time::Duration};

use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    EmailStatus,
    queue::{self, EmailJob, QueueError, Topology},
};
use crate::{config::Secret, store::outbox};

/// Queue depths are read at most this often.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

pub struct OutboxRelay {
    pub db: PgPool,
    pub amqp_url: Secret,
    pub topology: Topology,
    pub interval: Duration,
    pub batch: i64,
    pub status: Arc<EmailStatus>,
}

impl OutboxRelay {
    /// Relays until `cancel` fires; reconnects with backoff after any broker failure.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut link: Option<(Connection, Channel)> = None;
        let mut depth_at = tokio::time::Instant::now();
        loop {
            if link
                .as_ref()
                .is_some_and(|(c, ch)| !c.status().connected() || !ch.status().connected())
            {
                self.lost(&mut link, "connection closed");
            }
            if link.is_none() {
                match self.open().await {
                    Ok(l) => {
                        tracing::info!("RabbitMQ connected (outbox relay)");
                        self.status.set_relay_connected(true);
                        backoff = Duration::from_millis(100);
                        link = Some(l);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay cannot reach RabbitMQ");
                        self.report_outbox().await;
                        if sleep_or_cancel(backoff, &cancel).await {
                            break;
                        }
                        backoff = (backoff * 2).min(RECONNECT_MAX);
                        continue;
                    }
                }
            }
            let Some((_, ch)) = link.as_ref() else {
                continue;
            };
            let relayed = match self.round(ch).await {
                Ok(n) => n,
                Err(e) => {
                    self.lost(&mut link, &e.to_string());
                    0
                }
            };
            if depth_at.elapsed() >= DEPTH_EVERY {
                depth_at = tokio::time::Instant::now();
                self.report_outbox().await;
                if let Some((_, ch)) = &link {
                    super::report_queue_depth(&self.topology, ch).await;
                }
            }
            // A full batch means more are waiting: go again at once.
            if relayed < self.batch as usize && sleep_or_cancel(self.interval, &cancel).await {
                break;
            }
            if cancel.is_cancelled() {
                break;
            }
        }
        if let Some((conn, _)) = link {
            let _ = conn.close(200, "shutting down".into()).await;
        }
        self.status.set_relay_connected(false);
        tracing::info!("outbox relay stopped");
    }

    async fn open(&self) -> Result<(Connection, Channel), QueueError> {
        let (conn, ch) = queue::connect(self.amqp_url.expose()).await?;
        self.topology.declare(&ch).await?;
        Ok((conn, ch))
    }

    fn lost(&self, link: &mut Option<(Connection, Channel)>, why: &str) {
        tracing::warn!(
            error = why,
            "outbox relay lost RabbitMQ; rows wait in the outbox"
        );
        self.status.set_relay_connected(false);
        *link = None;
    }

    /// One batch. Publishes until the first failure; returns how many were
    /// published, or the broker error after committing what was confirmed.
    async fn round(&self, ch: &Channel) -> Result<usize, QueueError> {
        let mut tx = match self.db.begin().await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay cannot reach Postgres");
                return Ok(0);
            }
        };
        let rows = match outbox::lock_unpublished(&mut tx, self.batch).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay cannot read the outbox");
                return Ok(0);
            }
        };
        let mut published = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let job = EmailJob {
                id: row.id,
                to: row.to_address,
                template: row.template,
                payload: row.payload,
                attempt: 0,
                last_error: None,
            };
            match queue::publish(ch, &self.topology.work, &job).await {
                Ok(()) => published.push(job.id),
                Err(e) => {
                    failure = Some((job.id, e));
                    break;
                }
            }
        }
        let mut write = outbox::mark_published(&mut tx, &published).await;
        if let (Ok(()), Some((id, _))) = (&write, &failure) {
            write = outbox::mark_attempted(&mut tx, &[*id]).await;
        }
        match write {
            Ok(()) => {
                if let Err(e) = tx.commit().await {
                    tracing::warn!(error = %e, "outbox relay commit failed; rows are published again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox relay cannot mark rows published"),
        }
        metrics::counter!("switchboard_email_published_total").increment(published.len() as u64);
        match failure {
            Some((_, e)) => Err(e),
            None => Ok(published.len()),
        }
    }

    async fn report_outbox(&self) {
        if let Ok(n) = outbox::unpublished_count(&self.db).await {
            metrics::gauge!("switchboard_email_outbox_pending").set(n as f64);
        }
    }
}

/// Sleeps, or returns `true` at once when cancelled.
pub(super) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}
