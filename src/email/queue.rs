//! The RabbitMQ side of email: the message format, the queues, connecting and
//! publishing with confirms.
//!
//! Queues (all durable, on the default exchange, named after `email.queue`):
//! - `{queue}`: the work queue the relay publishes to and workers consume;
//! - `{queue}.retry.{n}`: holds a message for the n-th backoff (`x-message-ttl`),
//!   then dead-letters it back to `{queue}`; one queue per step, so a long
//!   delay never holds up a short one;
//! - `{queue}.dead`: messages that failed for good, kept for an operator.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    uri::AMQPUri,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::EmailConfig;

/// One email on the wire: the outbox row and how often it has been tried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmailJob {
    /// The outbox id: the idempotency key.
    pub id: Uuid,
    pub to: String,
    pub template: String,
    pub payload: serde_json::Value,
    /// Failed sends so far.
    #[serde(default)]
    pub attempt: u32,
    /// Why the last attempt failed (kept on dead letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How long connecting (TCP, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: no answer within {0:?}")]
    Timeout(Duration),
    #[error("rabbitmq refused the message (nack or unroutable)")]
    Refused,
    #[error("rabbitmq closed the consumer")]
    Closed,
    /// The text of the parse error is left out: it could quote the password.
    #[error("rabbitmq: the AMQP URL does not parse")]
    BadUrl,
}

/// Queue names and arguments derived from `[email]`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub work: String,
    pub dead: String,
    /// (name, delay) per retry step, step 1 first.
    pub retries: Vec<(String, Duration)>,
    expires_ms: Option<u64>,
}

impl Topology {
    pub fn new(cfg: &EmailConfig) -> Self {
        let retries = (1..cfg.max_attempts.max(1))
            .map(|n| {
                let delay = cfg
                    .retry_base_ms
                    .saturating_mul(1u64 << (n - 1).min(32))
                    .min(cfg.retry_max_ms);
                (
                    format!("{}.retry.{n}", cfg.queue),
                    Duration::from_millis(delay),
                )
            })
            .collect();
        Self {
            work: cfg.queue.clone(),
            dead: format!("{}.dead", cfg.queue),
            retries,
            expires_ms: cfg.queue_expires_ms,
        }
    }

    /// The queue that holds a message before its `attempt`-th retry (1-based).
    pub fn retry_queue(&self, attempt: u32) -> Option<&str> {
        let i = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.retries.get(i).map(|(name, _)| name.as_str())
    }

    fn args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.expires_ms {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX)),
            );
        }
        args
    }

    /// Declares every queue (idempotent; all declarers use the same arguments).
    pub async fn declare(&self, ch: &Channel) -> Result<(), QueueError> {
        for name in [&self.work, &self.dead] {
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::durable(),
                self.args(),
            )
            .await?;
        }
        for (name, delay) in &self.retries {
            let mut args = self.args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.work.as_str().into()),
            );
            ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
                .await?;
        }
        Ok(())
    }

    /// Messages waiting in the work and dead-letter queues.
    pub async fn depths(&self, ch: &Channel) -> Result<(u32, u32), QueueError> {
        let opts = QueueDeclareOptions::durable().passive();
        let work = ch
            .queue_declare(self.work.as_str().into(), opts, FieldTable::default())
            .await?;
        let dead = ch
            .queue_declare(self.dead.as_str().into(), opts, FieldTable::default())
            .await?;
        Ok((work.message_count(), dead.message_count()))
    }
}

/// The largest AMQP frame asked for. lapin keeps 32 frames' worth of send and
/// of receive buffer per connection: 8 MiB at RabbitMQ's default of 128 KiB,
/// for email jobs of a few hundred bytes (a larger one is split into frames).
const FRAME_MAX: u32 = 16 * 1024;

/// Opens an AMQP connection, with frames of [`FRAME_MAX`] unless the URL says
/// otherwise (`?frame_max=`).
pub async fn open(url: &str) -> Result<Connection, QueueError> {
    let mut uri: AMQPUri = url.parse().map_err(|_| QueueError::BadUrl)?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(Connection::connect_uri(uri, ConnectionProperties::default()).await?)
}

/// Connects and opens a channel with publisher confirms on.
pub async fn connect(url: &str) -> Result<(Connection, Channel), QueueError> {
    let open = async {
        let conn = open(url).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, QueueError>((conn, ch))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| QueueError::Timeout(CONNECT_TIMEOUT))?
}

/// Publishes persistently and waits for the broker's confirmation; an
/// unroutable message (no such queue) counts as refused.
pub async fn publish(ch: &Channel, queue: &str, job: &EmailJob) -> Result<(), QueueError> {
    let body = serde_json::to_vec(job).map_err(|_| QueueError::Refused)?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job.id.to_string().into());
    let confirm = async {
        let confirmation = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            )
            .await?
            .await?;
        Ok::<_, QueueError>(confirmation)
    };
    let confirmation = tokio::time::timeout(CONNECT_TIMEOUT, confirm)
        .await
        .map_err(|_| QueueError::Timeout(CONNECT_TIMEOUT))??;
    if confirmation.is_ack() && confirmation.take_message().is_none() {
        Ok(())
    } else {
        Err(QueueError::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_steps_back_off_exponentially_up_to_the_cap() {
        let cfg = EmailConfig {
            queue: "q".into(),
            max_attempts: 5,
            retry_base_ms: 1_000,
            retry_max_ms: 5_000,
            ..EmailConfig::default()
        };
        let t = Topology::new(&cfg);
        let delays: Vec<u64> = t
            .retries
            .iter()
            .map(|(_, d)| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![1_000, 2_000, 4_000, 5_000]);
        assert_eq!(t.retry_queue(1), Some("q.retry.1"));
        assert_eq!(t.retry_queue(4), Some("q.retry.4"));
        assert_eq!(t.retry_queue(5), None, "the fifth failure is the last");
        assert_eq!(t.retry_queue(0), None);
        assert_eq!(t.dead, "q.dead");
    }
}
