//! Messages of a chat, in `seq` order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub chat_id: Uuid,
    /// Position in the chat, from 1, without gaps in the order handed out.
    pub seq: i64,
    /// `user`, `assistant` or `system`.
    pub role: String,
    pub author_id: Option<Uuid>,
    /// For an answer: the user message it answers.
    pub reply_to: Option<Uuid>,
    pub client_msg_id: Option<String>,
    pub content: String,
    /// `streaming`, `complete`, `cancelled` or `failed`.
    pub status: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
    pub cost_micros: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// For an answer drawn from documents: its sources (docs/RAG.md).
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citations: Option<serde_json::Value>,
}

/// Up to `limit` messages of the chat with `seq > after_seq`, in `seq` order.
pub async fn list_after(
    db: &PgPool,
    chat_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(
        "select id, chat_id, seq, role, author_id, reply_to, client_msg_id, content, status, provider, model,
                finish_reason, input_tokens, output_tokens, cost_micros, created_at, completed_at, citations
         from messages
         where chat_id = $1 and seq > $2
         order by seq
         limit $3",
    )
    .bind(chat_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The columns of [`Message`], for `returning` clauses.
macro_rules! message_columns {
    () => {
        "id, chat_id, seq, role, author_id, reply_to, client_msg_id, content, status, provider, model,
         finish_reason, input_tokens, output_tokens, cost_micros, created_at, completed_at, citations"
    };
}

/// Stores a user's message under the chat's next seq, in one statement: the
/// seq is taken from `chats.last_seq` under its row lock, so seqs have no gaps
/// even across nodes. A repeated `client_msg_id` fails with a unique violation
/// of `messages_chat_id_client_msg_id_key` and takes no seq.
pub async fn insert_user(
    db: &PgPool,
    chat_id: Uuid,
    author_id: Uuid,
    client_msg_id: &str,
    content: &str,
) -> Result<Message, sqlx::Error> {
    sqlx::query_as(concat!(
        "with next as (update chats set last_seq = last_seq + 1, updated_at = now() where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status, completed_at)
         select $2, $1, next.last_seq, 'user', $3, $4, $5, 'complete', now() from next
         returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(Uuid::now_v7())
    .bind(author_id)
    .bind(client_msg_id)
    .bind(content)
    .fetch_one(db)
    .await
}

pub async fn by_client_msg_id(
    db: &PgPool,
    chat_id: Uuid,
    client_msg_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        message_columns!(),
        " from messages where chat_id = $1 and client_msg_id = $2"
    ))
    .bind(chat_id)
    .bind(client_msg_id)
    .fetch_optional(db)
    .await
}

/// Opens an assistant answer as `streaming` under the chat's next seq, with
/// its prompt's token count (what a crash-interrupted answer is billed for input).
pub async fn insert_assistant(
    db: &PgPool,
    chat_id: Uuid,
    reply_to: Uuid,
    (provider, model): (&str, &str),
    prompt_tokens: i32,
) -> Result<Message, sqlx::Error> {
    sqlx::query_as(concat!(
        "with next as (update chats set last_seq = last_seq + 1, updated_at = now() where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, reply_to, content, status, provider, model, input_tokens)
         select $2, $1, next.last_seq, 'assistant', $3, '', 'streaming', $4, $5, $6 from next
         returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(Uuid::now_v7())
    .bind(reply_to)
    .bind(provider)
    .bind(model)
    .bind(prompt_tokens)
    .fetch_one(db)
    .await
}

/// Saves the partial text of an answer still streaming, so a crash loses at most one interval.
pub async fn checkpoint(db: &PgPool, id: Uuid, content: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update messages set content = $2 where id = $1 and status = 'streaming'")
        .bind(id)
        .bind(content)
        .execute(db)
        .await?;
    Ok(())
}

/// How an answer ended, for [`finalize`].
pub struct Outcome<'a> {
    pub status: &'a str,
    /// Who really served it (after any fallback).
    pub provider: &'a str,
    pub model: &'a str,
    pub content: &'a str,
    pub finish_reason: &'a str,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_micros: i64,
}

/// Ends an answer still `streaming`; `RowNotFound` when it is gone (its chat
/// was deleted) or was already ended (a restarted chat actor failed it).
pub async fn finalize(db: &PgPool, id: Uuid, o: &Outcome<'_>) -> Result<Message, sqlx::Error> {
    sqlx::query_as(concat!(
        "update messages set status = $2, content = $3, finish_reason = $4, input_tokens = $5,
                output_tokens = $6, cost_micros = $7, provider = $8, model = $9, completed_at = now()
         where id = $1 and status = 'streaming' returning ",
        message_columns!()
    ))
    .bind(id)
    .bind(o.status)
    .bind(o.content)
    .bind(o.finish_reason)
    .bind(o.input_tokens)
    .bind(o.output_tokens)
    .bind(o.cost_micros)
    .bind(o.provider)
    .bind(o.model)
    .fetch_one(db)
    .await
}

/// An answer a crashed process left `streaming`, with who pays for it.
#[derive(Debug, sqlx::FromRow)]
pub struct Interrupted {
    #[sqlx(flatten)]
    pub message: Message,
    pub workspace_id: Uuid,
    /// The author of the message it answers.
    pub user_id: Option<Uuid>,
}

/// Marks every answer left `streaming` as `failed`/`interrupted` (server
/// start), answering each with its chat's workspace and its asker.
pub async fn fail_all_interrupted(
    tx: &mut sqlx::PgConnection,
) -> Result<Vec<Interrupted>, sqlx::Error> {
    sqlx::query_as(
        "update messages m set status = 'failed', finish_reason = 'interrupted', completed_at = now()
         from chats c
         where m.status = 'streaming' and c.id = m.chat_id
         returning m.id, m.chat_id, m.seq, m.role, m.author_id, m.reply_to, m.client_msg_id, m.content,
                   m.status, m.provider, m.model, m.finish_reason, m.input_tokens, m.output_tokens,
                   m.cost_micros, m.created_at, m.completed_at, c.workspace_id,
                   (select u.author_id from messages u where u.id = m.reply_to) as user_id",
    )
    .fetch_all(&mut *tx)
    .await
}

/// Records what an answer was billed.
pub async fn set_billed(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    input_tokens: i32,
    output_tokens: i32,
    cost_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update messages set input_tokens = $2, output_tokens = $3, cost_micros = $4 where id = $1",
    )
    .bind(id)
    .bind(input_tokens)
    .bind(output_tokens)
    .bind(cost_micros)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Marks answers left `streaming` by a crash as `failed`, keeping their saved text.
/// With `chat_id` only that chat's; without, every chat's (server start).
pub async fn fail_interrupted(
    db: &PgPool,
    chat_id: Option<Uuid>,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "update messages set status = 'failed', finish_reason = 'interrupted', completed_at = now()
         where status = 'streaming' and ($1::uuid is null or chat_id = $1) returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .fetch_all(db)
    .await
}

/// The last `limit` turns worth sending to a model, oldest first: user
/// messages and complete answers (failed or cancelled answers are left out).
pub async fn prompt_history(
    db: &PgPool,
    chat_id: Uuid,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let mut rows: Vec<(String, String)> = sqlx::query_as(
        "select role, content from messages
         where chat_id = $1 and (role = 'user' or status = 'complete')
         order by seq desc limit $2",
    )
    .bind(chat_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.reverse();
    Ok(rows)
}

pub async fn by_id(db: &PgPool, id: Uuid) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        message_columns!(),
        " from messages where id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The answer to a user message, if one was started.
pub async fn reply_to(db: &PgPool, user_message_id: Uuid) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        message_columns!(),
        " from messages where reply_to = $1 order by seq desc limit 1"
    ))
    .bind(user_message_id)
    .fetch_optional(db)
    .await
}
