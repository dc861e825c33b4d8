//! Refresh tokens, stored as keyed hashes, rotated on every use.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// What happened when a refresh token was presented.
pub enum Redeemed {
    /// The token was live and is now used; here is its owner and family.
    Fresh { user_id: Uuid, family_id: Uuid },
    /// The token had already been used: a sign of theft. Its family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

pub async fn insert(
    db: &PgPool,
    user_id: Uuid,
    family_id: Uuid,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into refresh_tokens (id, user_id, family_id, token_hash, expires_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(family_id)
    .bind(token_hash)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Serialises everything done to one family (rotation, revocation) in the
/// calling transaction, so a successor is never inserted beside a revocation.
async fn lock_family(tx: &mut sqlx::PgConnection, family_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 7))")
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map(|_| ())
}

async fn family_of(
    tx: &mut sqlx::PgConnection,
    token_hash: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select family_id from refresh_tokens where token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await
}

/// Spends `token_hash` and stores `successor` in its family, in one
/// transaction under the family's lock: two concurrent refreshes with one
/// token cannot both succeed, a reuse revokes every token of the family
/// including a successor just issued, and a sign-out racing a refresh leaves
/// nothing alive.
pub async fn rotate(
    db: &PgPool,
    token_hash: &str,
    successor_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<Redeemed, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(family_id) = family_of(&mut tx, token_hash).await? else {
        return Ok(Redeemed::Invalid);
    };
    lock_family(&mut tx, family_id).await?;
    let used: Option<Uuid> = sqlx::query_scalar(
        "update refresh_tokens set used_at = now()
         where token_hash = $1 and used_at is null and revoked_at is null and expires_at > now()
         returning user_id",
    )
    .bind(token_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match used {
        Some(user_id) => {
            sqlx::query(
                "insert into refresh_tokens (id, user_id, family_id, token_hash, expires_at) values ($1, $2, $3, $4, $5)",
            )
            .bind(Uuid::now_v7())
            .bind(user_id)
            .bind(family_id)
            .bind(successor_hash)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            Redeemed::Fresh { user_id, family_id }
        }
        None => {
            let spent: bool = sqlx::query_scalar(
                "select used_at is not null from refresh_tokens where token_hash = $1",
            )
            .bind(token_hash)
            .fetch_one(&mut *tx)
            .await?;
            if spent {
                revoke(&mut tx, family_id).await?;
                Redeemed::Reused
            } else {
                Redeemed::Invalid
            }
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn revoke(tx: &mut sqlx::PgConnection, family_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family_id)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Revokes the family of the given token (sign-out), under the family's lock;
/// unknown tokens are ignored.
pub async fn revoke_family_of(db: &PgPool, token_hash: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    if let Some(family_id) = family_of(&mut tx, token_hash).await? {
        lock_family(&mut tx, family_id).await?;
        revoke(&mut tx, family_id).await?;
    }
    tx.commit().await
}

/// Revokes every live refresh token of the user (password reset).
pub async fn revoke_all_for_user(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null",
    )
    .bind(user_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}
