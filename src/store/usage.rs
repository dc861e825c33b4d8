//! `usage_events`: the durable truth of spend, one row per billed call.

use sqlx::{PgExecutor, QueryBuilder};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub workspace_id: Uuid,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub provider: String,
    pub model: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_micros: i64,
}

/// Inserts the events in one statement.
pub async fn insert<'e>(db: impl PgExecutor<'e>, events: &[UsageEvent]) -> Result<(), sqlx::Error> {
    let mut qb = QueryBuilder::new(
        "insert into usage_events (id, workspace_id, user_id, api_key_id, chat_id, message_id, provider, model, input_tokens, output_tokens, cost_micros) ",
    );
    qb.push_values(events, |mut b, e| {
        b.push_bind(Uuid::now_v7())
            .push_bind(e.workspace_id)
            .push_bind(e.user_id)
            .push_bind(e.api_key_id)
            .push_bind(e.chat_id)
            .push_bind(e.message_id)
            .push_bind(&e.provider)
            .push_bind(&e.model)
            .push_bind(e.input_tokens)
            .push_bind(e.output_tokens)
            .push_bind(e.cost_micros);
    });
    qb.build().execute(db).await.map(|_| ())
}

/// Which of these messages already have a usage event (billed by the node
/// that streamed them before it died), so recovery never bills them twice.
pub async fn billed_messages<'e>(
    db: impl PgExecutor<'e>,
    message_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select distinct message_id from usage_events where message_id = any($1)")
        .bind(message_ids)
        .fetch_all(db)
        .await
}
