//! Users and their workspaces.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub email_verified: bool,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// A user row with its password hash; never serialised.
#[derive(sqlx::FromRow)]
pub struct UserCredentials {
    pub id: Uuid,
    pub password_hash: String,
}

/// Creates the user, a personal workspace on the free plan, and the membership, atomically.
pub async fn create_with_workspace(
    db: &PgPool,
    email: &str,
    username: &str,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    let mut tx = db.begin().await?;
    let user = create_with_workspace_in(&mut tx, email, username, password_hash).await?;
    tx.commit().await?;
    Ok(user)
}

/// [`create_with_workspace`] inside the caller's transaction.
pub async fn create_with_workspace_in(
    tx: &mut PgConnection,
    email: &str,
    username: &str,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    let user: User = sqlx::query_as(
        "insert into users (id, email, username, password_hash) values ($1, $2, $3, $4)
         returning id, email, username, email_verified, is_admin, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(username)
    .bind(password_hash)
    .fetch_one(&mut *tx)
    .await?;
    let workspace_id = Uuid::now_v7();
    sqlx::query("insert into workspaces (id, name) values ($1, $2)")
        .bind(workspace_id)
        .bind(format!("{username}'s workspace"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, 'owner')",
    )
    .bind(workspace_id)
    .bind(user.id)
    .execute(&mut *tx)
    .await?;
    Ok(user)
}

pub async fn credentials_by_email(
    db: &PgPool,
    email: &str,
) -> Result<Option<UserCredentials>, sqlx::Error> {
    sqlx::query_as("select id, password_hash from users where lower(email) = lower($1)")
        .bind(email)
        .fetch_optional(db)
        .await
}

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "select id, email, username, email_verified, is_admin, created_at from users where id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Whether the user's email is verified; `None` when there is no such user.
pub async fn email_verified(db: &PgPool, id: Uuid) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("select email_verified from users where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Marks the address verified, if it is still the user's address.
pub async fn mark_verified(
    tx: &mut PgConnection,
    id: Uuid,
    email: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "update users set email_verified = true, updated_at = now()
         where id = $1 and lower(email) = lower($2)
         returning id, email, username, email_verified, is_admin, created_at",
    )
    .bind(id)
    .bind(email)
    .fetch_optional(tx)
    .await
}

/// Sets a new password hash; a reset also proves the address, so it is verified.
pub async fn set_password(
    tx: &mut PgConnection,
    id: Uuid,
    password_hash: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update users set password_hash = $2, email_verified = true, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(password_hash)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The user with this email (case-insensitive).
pub async fn by_email(db: &PgPool, email: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "select id, email, username, email_verified, is_admin, created_at from users where lower(email) = lower($1)",
    )
    .bind(email)
    .fetch_optional(db)
    .await
}
