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

/// Marks the token used in one conditional update, so two concurrent
/// refreshes with the same token cannot both succeed.
pub async fn redeem(db: &PgPool, token_hash: &str) -> Result<Redeemed, sqlx::Error> {
    let used: Option<(Uuid, Uuid)> = sqlx::query_as(
        "update refresh_tokens set used_at = now()
         where token_hash = $1 and used_at is null and revoked_at is null and expires_at > now()
         returning user_id, family_id",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    if let Some((user_id, family_id)) = used {
        return Ok(Redeemed::Fresh { user_id, family_id });
    }
    let reused: Option<(Uuid,)> = sqlx::query_as(
        "select family_id from refresh_tokens where token_hash = $1 and used_at is not null",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await?;
    match reused {
        Some((family_id,)) => {
            revoke_family(db, family_id).await?;
            Ok(Redeemed::Reused)
        }
        None => Ok(Redeemed::Invalid),
    }
}

pub async fn revoke_family(db: &PgPool, family_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes the family of the given token (sign-out); unknown tokens are ignored.
pub async fn revoke_family_of(db: &PgPool, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update refresh_tokens set revoked_at = now()
         where revoked_at is null and family_id = (select family_id from refresh_tokens where token_hash = $1)",
    )
    .bind(token_hash)
    .execute(db)
    .await?;
    Ok(())
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
