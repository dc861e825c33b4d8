//! API keys: stored as SHA-256 of the key (keys carry 190+ random bits, so a
//! fast hash is enough), listed by their visible prefix.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub budget_micros: Option<i64>,
    pub rate_limit_rpm: Option<i32>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What a request authenticated by a key may do.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyAuth {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub created_by: Option<Uuid>,
    pub budget_micros: Option<i64>,
    pub rate_limit_rpm: Option<i32>,
    pub plan: String,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one argument per column of the row it writes"
)]
pub async fn create(
    db: &PgPool,
    workspace_id: Uuid,
    created_by: Uuid,
    name: &str,
    prefix: &str,
    key_hash: &str,
    budget_micros: Option<i64>,
    rate_limit_rpm: Option<i32>,
) -> Result<ApiKey, sqlx::Error> {
    sqlx::query_as(
        "insert into api_keys (id, workspace_id, created_by, name, prefix, key_hash, budget_micros, rate_limit_rpm)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning id, workspace_id, name, prefix, budget_micros, rate_limit_rpm, last_used_at, revoked_at, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(workspace_id)
    .bind(created_by)
    .bind(name)
    .bind(prefix)
    .bind(key_hash)
    .bind(budget_micros)
    .bind(rate_limit_rpm)
    .fetch_one(db)
    .await
}

/// Keys of every workspace the user belongs to, newest first, revoked ones included.
pub async fn list_for_user(db: &PgPool, user_id: Uuid) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as(
        "select k.id, k.workspace_id, k.name, k.prefix, k.budget_micros, k.rate_limit_rpm, k.last_used_at, k.revoked_at, k.created_at
         from api_keys k join workspace_members m on m.workspace_id = k.workspace_id and m.user_id = $1
         order by k.id desc",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// Revokes a key of one of the user's workspaces; false when there is none.
pub async fn revoke(db: &PgPool, user_id: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where id = $1 and workspace_id in (select workspace_id from workspace_members where user_id = $2)",
    )
    .bind(key_id)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The live key with this hash and its workspace's plan (the caller caches it
/// for `auth.key_cache_ms`: `auth::key_cache`).
pub async fn authenticate(db: &PgPool, key_hash: &str) -> Result<Option<KeyAuth>, sqlx::Error> {
    sqlx::query_as(
        "select k.id, k.workspace_id, k.created_by, k.budget_micros, k.rate_limit_rpm, w.plan
         from api_keys k join workspaces w on w.id = k.workspace_id
         where k.key_hash = $1 and k.revoked_at is null",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await
}

pub async fn touch(db: &PgPool, key_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update api_keys set last_used_at = now() where id = $1")
        .bind(key_id)
        .execute(db)
        .await?;
    Ok(())
}
