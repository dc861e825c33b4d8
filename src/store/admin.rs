//! Administration queries: account flags, listings, the audit log. No rules:
//! `crate::admin` decides who may do what and writes the audit row in the
//! same transaction as the change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A user as an administrator sees it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct AdminUser {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub email_verified: bool,
    pub is_admin: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A workspace as an administrator sees it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct AdminWorkspace {
    pub id: Uuid,
    pub name: String,
    pub plan: String,
    pub members: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target_user: Option<Uuid>,
    pub target_workspace: Option<Uuid>,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub async fn list_users(
    db: &PgPool,
    limit: i64,
    offset: i64,
) -> Result<Vec<AdminUser>, sqlx::Error> {
    sqlx::query_as(
        "select id, email, username, email_verified, is_admin, disabled_at, created_at
         from users order by created_at, id limit $1 offset $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

/// The user with this id, or with this email (case-insensitive).
pub async fn find_user(db: &PgPool, who: &str) -> Result<Option<AdminUser>, sqlx::Error> {
    match Uuid::parse_str(who) {
        Ok(id) => {
            sqlx::query_as(
                "select id, email, username, email_verified, is_admin, disabled_at, created_at
                 from users where id = $1",
            )
            .bind(id)
            .fetch_optional(db)
            .await
        }
        Err(_) => {
            sqlx::query_as(
                "select id, email, username, email_verified, is_admin, disabled_at, created_at
                 from users where lower(email) = lower($1)",
            )
            .bind(who)
            .fetch_optional(db)
            .await
        }
    }
}

pub async fn list_workspaces(
    db: &PgPool,
    limit: i64,
    offset: i64,
) -> Result<Vec<AdminWorkspace>, sqlx::Error> {
    sqlx::query_as(
        "select w.id, w.name, w.plan, count(m.user_id) as members, w.created_at
         from workspaces w left join workspace_members m on m.workspace_id = w.id
         group by w.id order by w.created_at, w.id limit $1 offset $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}

/// Whether the user exists and is not disabled: the one check every sign-in
/// and every authenticated request goes through.
pub async fn is_active(db: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let row: Option<(bool,)> =
        sqlx::query_as("select disabled_at is null from users where id = $1")
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some_and(|r| r.0))
}

pub async fn set_admin(
    tx: &mut PgConnection,
    user_id: Uuid,
    on: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update users set is_admin = $2, updated_at = now() where id = $1")
        .bind(user_id)
        .bind(on)
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_disabled(
    tx: &mut PgConnection,
    user_id: Uuid,
    disabled: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update users set disabled_at = case when $2 then coalesce(disabled_at, now()) end,
                updated_at = now() where id = $1",
    )
    .bind(user_id)
    .bind(disabled)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The channel on which a disabled user's id is announced, at commit, to
/// every node (each closes that user's sockets).
pub const USER_DISABLED_CHANNEL: &str = "switchboard_user_disabled";

/// Announces, when `tx` commits, that the user was disabled.
pub async fn notify_disabled(tx: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(USER_DISABLED_CHANNEL)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Revokes every live refresh token of the user; returns how many.
pub async fn revoke_sessions(tx: &mut PgConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Revokes every live API key the user created; returns how many.
pub async fn revoke_keys(tx: &mut PgConnection, user_id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update api_keys set revoked_at = now() where created_by = $1 and revoked_at is null",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Sets a workspace's plan; the old plan, or `None` if there is no such workspace.
pub async fn set_plan(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    plan: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "update workspaces w set plan = $2 from (select plan from workspaces where id = $1 for update) old
         where w.id = $1 returning old.plan",
    )
    .bind(workspace_id)
    .bind(plan)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| r.0))
}

/// One audit row.
pub struct NewAudit<'a> {
    pub actor_id: Option<Uuid>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target_user: Option<Uuid>,
    pub target_workspace: Option<Uuid>,
    pub detail: serde_json::Value,
}

pub async fn audit(tx: &mut PgConnection, a: NewAudit<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into admin_audit (id, actor_id, actor, action, target_user, target_workspace, detail)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(a.actor_id)
    .bind(a.actor)
    .bind(a.action)
    .bind(a.target_user)
    .bind(a.target_workspace)
    .bind(a.detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn audit_log(db: &PgPool, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "select id, actor_id, actor, action, target_user, target_workspace, detail, created_at
         from admin_audit order by created_at desc, id desc limit $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
