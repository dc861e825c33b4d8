//! EmailWorker: consumes the work queue, renders, sends over SMTP.
//!
//! A delivery is acknowledged only after its fate is durable: sent and recorded
//! in `email_deliveries`, or republished (with a confirm) to a retry queue or
//! the dead-letter queue. A worker that dies before that leaves the message
//! unacknowledged and RabbitMQ delivers it again; the delivery record (keyed by
//! the outbox id) makes the second delivery a no-op once the first was sent.
//! Deliveries are handled one at a time per worker: run more workers for more
//! throughput.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use lettre::message::Mailbox;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    EmailStatus,
    mailer::Mailer,
    queue::{self, EmailJob, QueueError, Topology},
    relay::sleep_or_cancel,
    templates,
};
use crate::{
    config::Secret,
    store::outbox::{self, Claim},
};

const RECONNECT_MAX: Duration = Duration::from_secs(10);
const DEPTH_EVERY: Duration = Duration::from_secs(5);

pub struct EmailWorker {
    pub db: PgPool,
    pub amqp_url: Secret,
    pub topology: Topology,
    pub mailer: Arc<Mailer>,
    pub from: Mailbox,
    pub prefetch: u16,
    pub lease_secs: i64,
    pub status: Arc<EmailStatus>,
}

impl EmailWorker {
    /// Consumes until `cancel` fires; reconnects with backoff after any broker failure.
    pub async fn run(self, cancel: CancellationToken) {
        tracing::info!(mailer = self.mailer.describe(), queue = %self.topology.work, "Email worker started");
        let mut backoff = Duration::from_millis(100);
        while !cancel.is_cancelled() {
            match self.session(&cancel, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    self.status.set_worker_connected(false);
                    tracing::warn!(error = %e, retry_in = ?backoff, "email worker lost RabbitMQ; unacknowledged emails are redelivered");
                    if sleep_or_cancel(backoff, &cancel).await {
                        break;
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
        self.status.set_worker_connected(false);
        tracing::info!("email worker stopped");
    }

    /// One connection's life: returns `Ok` only when cancelled.
    async fn session(
        &self,
        cancel: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), QueueError> {
        let (conn, ch) = queue::connect(self.amqp_url.expose()).await?;
        self.topology.declare(&ch).await?;
        ch.basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = ch
            .basic_consume(
                self.topology.work.as_str().into(),
                "switchboard-email-worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!("RabbitMQ connected (email worker)");
        self.status.set_worker_connected(true);
        *backoff = Duration::from_millis(100);
        let mut depth = tokio::time::interval(DEPTH_EVERY);
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    close(&conn).await;
                    return Ok(());
                }
                _ = depth.tick() => super::report_queue_depth(&self.topology, &ch).await,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.handle(&ch, delivery, cancel).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(QueueError::Closed),
                },
            }
        }
    }

    async fn handle(
        &self,
        ch: &Channel,
        d: Delivery,
        cancel: &CancellationToken,
    ) -> Result<(), QueueError> {
        let mut job: EmailJob = match serde_json::from_slice(&d.data) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(error = %e, "unreadable email message: dead-lettered as is");
                metrics::counter!("switchboard_email_failed_total", "template" => "unknown")
                    .increment(1);
                publish_raw(ch, &self.topology.dead, &d.data).await?;
                d.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        };
        let template = job.template.clone();
        match outbox::claim(&self.db, job.id, self.lease_secs).await {
            Ok(Claim::Mine) => {}
            Ok(Claim::AlreadySent) => {
                metrics::counter!("switchboard_email_duplicates_total").increment(1);
                tracing::info!(outbox_id = %job.id, "email already sent: duplicate dropped");
                d.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
            Ok(Claim::Busy) => {
                // Another worker is sending it right now; look again after a backoff.
                return self
                    .retry_or_bury(ch, d, job, "being sent by another worker".into(), false)
                    .await;
            }
            Err(e) => {
                // Postgres is down: put the message back and slow down.
                tracing::warn!(error = %e, "email worker cannot reach Postgres");
                sleep_or_cancel(Duration::from_secs(1), cancel).await;
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await?;
                return Ok(());
            }
        }
        let sent = match templates::render(&job.template, &job.payload) {
            Ok(rendered) => self.mailer.send(&self.from, &job, &rendered).await,
            Err(e) => Err(super::mailer::SendError {
                permanent: true,
                message: e.to_string(),
            }),
        };
        match sent {
            Ok(()) => {
                self.status.set_smtp_ok(true);
                self.record_sent(&job).await;
                metrics::counter!("switchboard_email_sent_total", "template" => template)
                    .increment(1);
                tracing::info!(outbox_id = %job.id, to = %job.to, template = %job.template, "email sent");
                d.ack(BasicAckOptions::default()).await?;
                Ok(())
            }
            Err(e) => {
                if !e.permanent {
                    self.status.set_smtp_ok(false);
                }
                if let Err(e) = outbox::release(&self.db, job.id).await {
                    tracing::warn!(error = %e, "cannot release the send lease; it lapses by itself");
                }
                job.attempt += 1;
                self.retry_or_bury(ch, d, job, e.message, e.permanent).await
            }
        }
    }

    /// Records the send, retrying briefly: without the record a redelivery would send again.
    async fn record_sent(&self, job: &EmailJob) {
        for wait in [0, 100, 500, 2_000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match outbox::mark_sent(&self.db, job.id).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, outbox_id = %job.id, "cannot record a sent email")
                }
            }
        }
        tracing::error!(outbox_id = %job.id, "sent email not recorded: a redelivery may send it again");
    }

    /// Republishes to the next retry queue, or to the dead-letter queue when the
    /// failure is permanent or the attempts are spent; then acknowledges.
    async fn retry_or_bury(
        &self,
        ch: &Channel,
        d: Delivery,
        mut job: EmailJob,
        why: String,
        permanent: bool,
    ) -> Result<(), QueueError> {
        let template = job.template.clone();
        job.last_error = Some(why.chars().take(500).collect());
        let next = if permanent {
            None
        } else {
            self.topology.retry_queue(job.attempt.max(1))
        };
        match next {
            Some(q) => {
                tracing::warn!(outbox_id = %job.id, attempt = job.attempt, error = %why, "email failed; retrying after a backoff");
                metrics::counter!("switchboard_email_retried_total", "template" => template)
                    .increment(1);
                queue::publish(ch, q, &job).await?;
            }
            None => {
                tracing::error!(outbox_id = %job.id, attempt = job.attempt, error = %why, "email failed for good: dead-lettered");
                metrics::counter!("switchboard_email_failed_total", "template" => template)
                    .increment(1);
                queue::publish(ch, &self.topology.dead, &job).await?;
            }
        }
        d.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

async fn publish_raw(ch: &Channel, queue: &str, body: &[u8]) -> Result<(), QueueError> {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err(QueueError::Refused)
    }
}

async fn close(conn: &Connection) {
    let _ = conn.close(200, "shutting down".into()).await;
}
