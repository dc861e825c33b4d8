//! Chats, and the workspace membership that decides who may see them.
//!
//! Every read and write that takes a `user_id` checks membership of the chat's
//! workspace in the same statement, so "no such chat" and "not yours" are the
//! same `None`/`false` to the caller.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Chat {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub title: String,
    /// The last message sequence number handed out in this chat (0 when empty).
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The workspace a chat goes in when the caller names none: the user's owned
/// workspaces first, then the oldest membership.
pub async fn default_workspace(db: &PgPool, user_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select workspace_id from workspace_members where user_id = $1
         order by (role = 'owner') desc, created_at, workspace_id
         limit 1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await
}

pub async fn is_member(
    db: &PgPool,
    user_id: Uuid,
    workspace_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from workspace_members where user_id = $1 and workspace_id = $2)",
    )
    .bind(user_id)
    .bind(workspace_id)
    .fetch_one(db)
    .await
}

pub async fn create(
    db: &PgPool,
    workspace_id: Uuid,
    created_by: Uuid,
    title: &str,
) -> Result<Chat, sqlx::Error> {
    sqlx::query_as(
        "insert into chats (id, workspace_id, created_by, title) values ($1, $2, $3, $4)
         returning id, workspace_id, title, last_seq, created_at, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(workspace_id)
    .bind(created_by)
    .bind(title)
    .fetch_one(db)
    .await
}

/// Chats in every workspace the user belongs to, newest first (ids are UUIDv7,
/// so `id desc` is creation order), strictly older than `before` when given.
pub async fn list_for_user(
    db: &PgPool,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Chat>, sqlx::Error> {
    sqlx::query_as(
        "select c.id, c.workspace_id, c.title, c.last_seq, c.created_at, c.updated_at
         from chats c
         join workspace_members m on m.workspace_id = c.workspace_id and m.user_id = $1
         where ($2::uuid is null or c.id < $2)
         order by c.id desc
         limit $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The chat, if it exists and the user is a member of its workspace.
pub async fn get_for_user(
    db: &PgPool,
    user_id: Uuid,
    chat_id: Uuid,
) -> Result<Option<Chat>, sqlx::Error> {
    sqlx::query_as(
        "select c.id, c.workspace_id, c.title, c.last_seq, c.created_at, c.updated_at
         from chats c
         where c.id = $2
           and exists (select 1 from workspace_members m
                       where m.workspace_id = c.workspace_id and m.user_id = $1)",
    )
    .bind(user_id)
    .bind(chat_id)
    .fetch_optional(db)
    .await
}

/// Renames the chat and bumps `updated_at`; `None` when it does not exist or is not the user's.
pub async fn rename(
    db: &PgPool,
    user_id: Uuid,
    chat_id: Uuid,
    title: &str,
) -> Result<Option<Chat>, sqlx::Error> {
    sqlx::query_as(
        "update chats c set title = $3, updated_at = now()
         where c.id = $2
           and exists (select 1 from workspace_members m
                       where m.workspace_id = c.workspace_id and m.user_id = $1)
         returning c.id, c.workspace_id, c.title, c.last_seq, c.created_at, c.updated_at",
    )
    .bind(user_id)
    .bind(chat_id)
    .bind(title)
    .fetch_optional(db)
    .await
}

/// Deletes the chat (its messages go with it); `false` when it does not exist or is not the user's.
pub async fn delete(db: &PgPool, user_id: Uuid, chat_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "delete from chats c
         where c.id = $2
           and exists (select 1 from workspace_members m
                       where m.workspace_id = c.workspace_id and m.user_id = $1)",
    )
    .bind(user_id)
    .bind(chat_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn exists(db: &PgPool, chat_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from chats where id = $1)")
        .bind(chat_id)
        .fetch_one(db)
        .await
}

/// Everything a send needs to know before it is admitted, in one round
/// trip shared with other sends ([`send_contexts`]): who pays (as
/// [`ChatPayer`]), whether the sender may spend, whether this
/// `client_msg_id` was stored already, whether any message waits for an
/// answer (when none does and nothing is stored in between, the new message
/// is the head of the chat's queue), and the prompt history as
/// `store::messages::prompt_history` reads it. `None` unless the user is a member.
#[derive(Debug, sqlx::FromRow)]
pub struct SendContext {
    pub workspace_id: Uuid,
    pub plan: String,
    pub last_seq: i64,
    pub email_verified: bool,
    /// The message already stored under this `client_msg_id`.
    pub resent: Option<Uuid>,
    /// Some message of the chat still awaits its answer.
    pub queued: bool,
    /// Roles and contents of the last `history` messages, oldest first.
    pub history_roles: Option<Vec<String>>,
    pub history_contents: Option<Vec<String>>,
}

impl SendContext {
    /// The prompt history as (role, content) pairs, oldest first.
    pub fn history(&mut self) -> Vec<(String, String)> {
        let roles = self.history_roles.take().unwrap_or_default();
        let contents = self.history_contents.take().unwrap_or_default();
        roles.into_iter().zip(contents).collect()
    }
}

/// One send to read, for [`send_contexts`].
#[derive(Debug, Clone)]
pub struct SendRead {
    pub user_id: Uuid,
    pub chat_id: Uuid,
    pub client_msg_id: String,
}

#[derive(sqlx::FromRow)]
struct Indexed {
    i: i64,
    #[sqlx(flatten)]
    context: SendContext,
}

/// The [`SendContext`] of each of `reads` (any users, any chats), in one
/// statement, in their order.
pub async fn send_contexts(
    db: &PgPool,
    reads: &[SendRead],
    requeue_window_secs: i64,
    history: i64,
) -> Result<Vec<Option<SendContext>>, sqlx::Error> {
    let rows: Vec<Indexed> = sqlx::query_as(
        "select r.i, c.workspace_id, w.plan, c.last_seq, u.email_verified,
                (select m.id from messages m where m.chat_id = c.id and m.client_msg_id = r.client_msg_id)
                  as resent,
                exists (select 1 from messages q
                        where q.chat_id = c.id and q.awaiting_answer
                          and q.created_at > now() - make_interval(secs => $4)) as queued,
                h.roles as history_roles, h.contents as history_contents
         from unnest($1::uuid[], $2::uuid[], $3::text[]) with ordinality as r(user_id, chat_id, client_msg_id, i)
         join chats c on c.id = r.chat_id
         join workspaces w on w.id = c.workspace_id
         join users u on u.id = r.user_id
         left join lateral (
             select array_agg(h.role order by h.seq) as roles,
                    array_agg(h.content order by h.seq) as contents
             from (select seq, role, content from messages
                   where chat_id = c.id and (role = 'user' or status = 'complete')
                   order by seq desc limit $5) h
         ) h on true
         where exists (select 1 from workspace_members m
                       where m.workspace_id = c.workspace_id and m.user_id = r.user_id)",
    )
    .bind(reads.iter().map(|r| r.user_id).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| r.chat_id).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| r.client_msg_id.as_str()).collect::<Vec<_>>())
    .bind(requeue_window_secs as f64)
    .bind(history)
    .fetch_all(db)
    .await?;
    let mut contexts: Vec<Option<SendContext>> = reads.iter().map(|_| None).collect();
    for row in rows {
        // Ordinality counts from 1.
        if let Some(slot) = usize::try_from(row.i - 1)
            .ok()
            .and_then(|i| contexts.get_mut(i))
        {
            *slot = Some(row.context);
        }
    }
    Ok(contexts)
}

/// Who pays for a message in a chat: its workspace and that workspace's plan
/// as it is now (never cached, so a plan change holds on the next message);
/// `None` unless the user is a member.
#[derive(Debug, sqlx::FromRow)]
pub struct ChatPayer {
    pub workspace_id: Uuid,
    pub plan: String,
}

pub async fn payer_for_member(
    db: &PgPool,
    user_id: Uuid,
    chat_id: Uuid,
) -> Result<Option<ChatPayer>, sqlx::Error> {
    sqlx::query_as(
        "select c.workspace_id, w.plan
         from chats c join workspaces w on w.id = c.workspace_id
         where c.id = $2
           and exists (select 1 from workspace_members m
                       where m.workspace_id = c.workspace_id and m.user_id = $1)",
    )
    .bind(user_id)
    .bind(chat_id)
    .fetch_optional(db)
    .await
}
