//! Workspace membership: who belongs to a workspace and as what.
//!
//! Read on every request (never cached), so removing a member takes effect on
//! their next request on every node. Changes that could leave a workspace
//! without an owner lock the workspace row first, so two concurrent changes
//! cannot both remove the last owner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct WorkspaceSummary {
    pub id: Uuid,
    pub name: String,
    pub plan: String,
    /// The caller's role here: owner, admin or member.
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// Creates a workspace with `owner` as its owner.
pub async fn create_workspace(
    db: &PgPool,
    owner: Uuid,
    name: &str,
) -> Result<WorkspaceSummary, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ws: WorkspaceSummary = sqlx::query_as(
        "insert into workspaces (id, name) values ($1, $2)
         returning id, name, plan, 'owner' as role, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, 'owner')",
    )
    .bind(ws.id)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ws)
}

/// Every workspace the user belongs to, with their role, oldest first.
pub async fn list_for_user(
    db: &PgPool,
    user_id: Uuid,
) -> Result<Vec<WorkspaceSummary>, sqlx::Error> {
    sqlx::query_as(
        "select w.id, w.name, w.plan, m.role, w.created_at
         from workspace_members m join workspaces w on w.id = m.workspace_id
         where m.user_id = $1
         order by m.created_at, w.id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The workspace as the user sees it; `None` when it does not exist or they are not a member.
pub async fn workspace_for_user(
    db: &PgPool,
    user_id: Uuid,
    workspace_id: Uuid,
) -> Result<Option<WorkspaceSummary>, sqlx::Error> {
    sqlx::query_as(
        "select w.id, w.name, w.plan, m.role, w.created_at
         from workspace_members m join workspaces w on w.id = m.workspace_id
         where m.user_id = $1 and m.workspace_id = $2",
    )
    .bind(user_id)
    .bind(workspace_id)
    .fetch_optional(db)
    .await
}

pub async fn list_members(db: &PgPool, workspace_id: Uuid) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "select u.id as user_id, u.username, u.email, m.role, m.created_at as joined_at
         from workspace_members m join users u on u.id = m.user_id
         where m.workspace_id = $1
         order by m.created_at, u.id",
    )
    .bind(workspace_id)
    .fetch_all(db)
    .await
}

/// Whether the email already belongs to a member.
pub async fn email_is_member(
    db: &PgPool,
    workspace_id: Uuid,
    email: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from workspace_members m join users u on u.id = m.user_id
                        where m.workspace_id = $1 and lower(u.email) = lower($2))",
    )
    .bind(workspace_id)
    .bind(email)
    .fetch_one(db)
    .await
}

/// Adds a member; `false` when they already were one (their role is kept).
pub async fn add(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, $3)
         on conflict (workspace_id, user_id) do nothing",
    )
    .bind(workspace_id)
    .bind(user_id)
    .bind(role)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Locks the workspace row for a membership change; answers the user's role in
/// it (`None`: not a member) and how many owners it has.
pub async fn lock_for_change(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    user_id: Uuid,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let locked: Option<Uuid> =
        sqlx::query_scalar("select id from workspaces where id = $1 for update")
            .bind(workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    sqlx::query_as(
        "select m.role,
                (select count(*) from workspace_members o
                 where o.workspace_id = $1 and o.role = 'owner')
         from workspace_members m where m.workspace_id = $1 and m.user_id = $2",
    )
    .bind(workspace_id)
    .bind(user_id)
    .fetch_optional(tx)
    .await
}

/// A member's role, inside the locking transaction.
pub async fn role_of(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select role from workspace_members where workspace_id = $1 and user_id = $2",
    )
    .bind(workspace_id)
    .bind(user_id)
    .fetch_optional(tx)
    .await
}

pub async fn set_role(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update workspace_members set role = $3 where workspace_id = $1 and user_id = $2")
        .bind(workspace_id)
        .bind(user_id)
        .bind(role)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn remove(
    tx: &mut PgConnection,
    workspace_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("delete from workspace_members where workspace_id = $1 and user_id = $2")
            .bind(workspace_id)
            .bind(user_id)
            .execute(tx)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Name of a workspace (for invitation emails).
pub async fn workspace_name(
    db: &PgPool,
    workspace_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select name from workspaces where id = $1")
        .bind(workspace_id)
        .fetch_optional(db)
        .await
}
