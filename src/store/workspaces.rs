//! Workspaces: the unit of plan, billing and membership.

use sqlx::PgPool;
use uuid::Uuid;

/// The workspace's plan tier (`free`, `pro`, `team`).
pub async fn plan(db: &PgPool, workspace_id: Uuid) -> Result<String, sqlx::Error> {
    let (plan,): (String,) = sqlx::query_as("select plan from workspaces where id = $1")
        .bind(workspace_id)
        .fetch_one(db)
        .await?;
    Ok(plan)
}
