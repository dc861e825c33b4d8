//! One-time tokens sent by email, stored as keyed hashes (`auth::one_time`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What a token grants, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailToken {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub email: String,
    pub workspace_id: Option<Uuid>,
    pub role: Option<String>,
    pub invited_by: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

/// A token to insert.
pub struct NewToken<'a> {
    pub purpose: &'a str,
    pub token_hash: &'a str,
    pub user_id: Option<Uuid>,
    pub email: &'a str,
    pub workspace_id: Option<Uuid>,
    pub role: Option<&'a str>,
    pub invited_by: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(tx: &mut PgConnection, t: &NewToken<'_>) -> Result<EmailToken, sqlx::Error> {
    sqlx::query_as(
        "insert into email_tokens
           (id, purpose, token_hash, user_id, email, workspace_id, role, invited_by, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id, user_id, email, workspace_id, role, invited_by, expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(t.purpose)
    .bind(t.token_hash)
    .bind(t.user_id)
    .bind(t.email)
    .bind(t.workspace_id)
    .bind(t.role)
    .bind(t.invited_by)
    .bind(t.expires_at)
    .fetch_one(tx)
    .await
}

/// The live (unused, unexpired) token with this hash, without using it.
pub async fn peek(
    db: &PgPool,
    purpose: &str,
    token_hash: &str,
) -> Result<Option<EmailToken>, sqlx::Error> {
    sqlx::query_as(
        "select id, user_id, email, workspace_id, role, invited_by, expires_at from email_tokens
         where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()",
    )
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(db)
    .await
}

/// Uses the token: one conditional update, so two concurrent redemptions cannot both win.
pub async fn redeem(
    tx: &mut PgConnection,
    purpose: &str,
    token_hash: &str,
) -> Result<Option<EmailToken>, sqlx::Error> {
    sqlx::query_as(
        "update email_tokens set used_at = now()
         where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()
         returning id, user_id, email, workspace_id, role, invited_by, expires_at",
    )
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(tx)
    .await
}

/// Retires the user's live tokens of one purpose (a new link replaces the old).
pub async fn retire_for_user(
    tx: &mut PgConnection,
    user_id: Uuid,
    purpose: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update email_tokens set used_at = now()
         where user_id = $1 and purpose = $2 and used_at is null",
    )
    .bind(user_id)
    .bind(purpose)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}

/// Live invitations of a workspace, newest first.
pub async fn pending_invites(
    db: &PgPool,
    workspace_id: Uuid,
) -> Result<Vec<EmailToken>, sqlx::Error> {
    sqlx::query_as(
        "select id, user_id, email, workspace_id, role, invited_by, expires_at from email_tokens
         where workspace_id = $1 and purpose = 'invite' and used_at is null and expires_at > now()
         order by created_at desc limit 200",
    )
    .bind(workspace_id)
    .fetch_all(db)
    .await
}

/// Withdraws a live invitation; `false` when there is none with that id.
pub async fn revoke_invite(db: &PgPool, workspace_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update email_tokens set used_at = now()
         where id = $1 and workspace_id = $2 and purpose = 'invite' and used_at is null",
    )
    .bind(id)
    .bind(workspace_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}
