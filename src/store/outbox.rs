//! The email outbox (rows written in the same transaction as their cause) and
//! the worker's delivery record (at most one send per outbox id).

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// An outbox row on its way to RabbitMQ.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub to_address: String,
    pub template: String,
    pub payload: Value,
}

/// Queues an email in the caller's transaction; the relay publishes it after commit.
pub async fn enqueue(
    tx: &mut PgConnection,
    to: &str,
    template: &str,
    payload: &Value,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into email_outbox (id, to_address, template, payload) values ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(to)
    .bind(template)
    .bind(payload)
    .execute(tx)
    .await?;
    Ok(id)
}

/// Locks up to `limit` unpublished rows, oldest first, skipping rows another
/// relay holds, so several nodes relay without sending a row twice at once.
pub async fn lock_unpublished(
    tx: &mut PgConnection,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, to_address, template, payload from email_outbox
         where published_at is null
         order by created_at
         limit $1
         for update skip locked",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Marks rows published. The link (a live one-time token) is dropped from the
/// stored payload: from here on it lives only in the queue.
pub async fn mark_published(tx: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update email_outbox set published_at = now(), attempts = attempts + 1,
                payload = payload - 'link'
         where id = any($1)",
    )
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(())
}

/// Counts a failed publish attempt.
pub async fn mark_attempted(tx: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("update email_outbox set attempts = attempts + 1 where id = any($1)")
        .bind(ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// Rows still waiting for the relay.
pub async fn unpublished_count(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from email_outbox where published_at is null")
        .fetch_one(db)
        .await
}

/// The outcome of trying to take an email for sending.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker sends it now.
    Mine,
    /// Already sent: acknowledge and drop the duplicate.
    AlreadySent,
    /// Another worker holds a live lease on it.
    Busy,
}

/// Takes the send lease for `outbox_id`, or reports why not. A lease older than
/// `lease_secs` (its worker died mid-send) is taken over.
pub async fn claim(db: &PgPool, outbox_id: Uuid, lease_secs: i64) -> Result<Claim, sqlx::Error> {
    let taken: Option<Uuid> = sqlx::query_scalar(
        "insert into email_deliveries (outbox_id, status) values ($1, 'sending')
         on conflict (outbox_id) do update set claimed_at = now()
           where email_deliveries.status = 'sending'
             and email_deliveries.claimed_at < now() - make_interval(secs => $2)
         returning outbox_id",
    )
    .bind(outbox_id)
    .bind(lease_secs as f64)
    .fetch_optional(db)
    .await?;
    if taken.is_some() {
        return Ok(Claim::Mine);
    }
    let status: Option<String> =
        sqlx::query_scalar("select status from email_deliveries where outbox_id = $1")
            .bind(outbox_id)
            .fetch_optional(db)
            .await?;
    Ok(match status.as_deref() {
        Some("sent") => Claim::AlreadySent,
        _ => Claim::Busy,
    })
}

/// Records the send; from now on redeliveries are dropped.
pub async fn mark_sent(db: &PgPool, outbox_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update email_deliveries set status = 'sent', sent_at = now() where outbox_id = $1",
    )
    .bind(outbox_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Gives the lease back after a failed send, so the retry can take it at once.
pub async fn release(db: &PgPool, outbox_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from email_deliveries where outbox_id = $1 and status = 'sending'")
        .bind(outbox_id)
        .execute(db)
        .await?;
    Ok(())
}
