//! Messages of a chat, in `seq` order.

use std::collections::HashMap;

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
    /// The node that accepted (user) or streamed (answer) it; internal.
    #[sqlx(default)]
    #[serde(skip)]
    pub node_id: Option<String>,
    /// For an answer streaming: the deltas its saved `content` covers; internal.
    #[sqlx(default)]
    #[serde(skip)]
    pub deltas_saved: Option<i32>,
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
         finish_reason, input_tokens, output_tokens, cost_micros, created_at, completed_at, citations, node_id, deltas_saved"
    };
}

/// A user's message to store, by [`insert_users`] or with its answer by [`insert_turns`].
#[derive(Debug, Clone)]
pub struct NewUserMessage {
    pub chat_id: Uuid,
    pub author_id: Uuid,
    pub client_msg_id: String,
    pub content: String,
}

/// Stores users' messages, of any chats (one per chat), each under its
/// chat's next seq, in one statement and one commit: the seq is taken from
/// `chats.last_seq` under its row lock, so seqs have no gaps even across
/// nodes. Answers the stored messages by chat; a chat missing is gone. A
/// repeated `client_msg_id` fails the statement with a unique violation of
/// `messages_chat_id_client_msg_id_key` and takes no seq. `node_id` is the
/// accepting node's: its takeover re-queues a message if it dies first.
pub async fn insert_users(
    db: &PgPool,
    node_id: &str,
    new: &[NewUserMessage],
) -> Result<HashMap<Uuid, Message>, sqlx::Error> {
    let text = |f: fn(&NewUserMessage) -> &str| new.iter().map(f).collect::<Vec<_>>();
    let rows: Vec<Message> = sqlx::query_as(concat!(
        "with v as (select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
                    as v(chat_id, id, author_id, client_msg_id, content)),
              next as (update chats c set last_seq = c.last_seq + 1, updated_at = now()
                       from v where c.id = v.chat_id returning c.id, c.last_seq)
         insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status, completed_at, node_id,
                               awaiting_answer)
         select v.id, v.chat_id, next.last_seq, 'user', v.author_id, v.client_msg_id, v.content, 'complete',
                now(), $6, true
         from next join v on v.chat_id = next.id
         returning ",
        message_columns!()
    ))
    .bind(new.iter().map(|m| m.chat_id).collect::<Vec<_>>())
    .bind(new.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(new.iter().map(|m| m.author_id).collect::<Vec<_>>())
    .bind(text(|m| &m.client_msg_id))
    .bind(text(|m| &m.content))
    .bind(node_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|m| (m.chat_id, m)).collect())
}

/// A user's message and the answer to it, to be stored together by [`insert_turns`].
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub message: NewUserMessage,
    /// The chat's `last_seq` when the sender read it.
    pub read_at: i64,
    /// The chat lease's fencing token, as for [`insert_assistant`].
    pub fence: Option<i64>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: i32,
}

/// Users' messages and the answers to them opened together, for any number
/// of chats (one turn per chat), in one statement and one commit, each when
/// its message is known to head its chat's queue: the chat's `last_seq` is
/// still `read_at` (nothing was stored since the sender read the chat and saw
/// no message waiting) and the fencing token holds, as for
/// [`insert_assistant`]. The messages are stored already answered. Answers
/// the stored `(message, answer)` pairs by chat; a turn whose conditions
/// failed is missing, with nothing of it written, and its caller stores the
/// message alone. A repeated `client_msg_id` fails the statement as
/// [`insert_users`] does.
pub async fn insert_turns(
    db: &PgPool,
    node_id: &str,
    turns: &[NewTurn],
) -> Result<HashMap<Uuid, (Message, Message)>, sqlx::Error> {
    let text = |f: fn(&NewTurn) -> &str| turns.iter().map(f).collect::<Vec<_>>();
    let uuids = |f: fn(&NewTurn) -> Uuid| turns.iter().map(f).collect::<Vec<_>>();
    let ids = |n: usize| (0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>();
    let rows: Vec<Message> = sqlx::query_as(concat!(
        "with v as (select * from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                         $6::text[], $7::int8[], $8::int8[], $9::text[], $10::text[],
                                         $11::int4[])
                    as v(chat_id, user_msg, answer, author_id, client_msg_id, content, read_at, fence,
                         provider, model, prompt_tokens)),
              next as (update chats c set last_seq = c.last_seq + 2, updated_at = now(),
                              gen_fence = greatest(c.gen_fence, coalesce(v.fence, c.gen_fence))
                       from v
                       where c.id = v.chat_id and c.last_seq = v.read_at
                         and (v.fence is null or c.gen_fence <= v.fence)
                       returning c.id, c.last_seq),
              u as (insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status,
                                          completed_at, node_id, awaiting_answer)
                    select v.user_msg, v.chat_id, next.last_seq - 1, 'user', v.author_id, v.client_msg_id,
                           v.content, 'complete', now(), $12, false
                    from next join v on v.chat_id = next.id
                    returning ",
        message_columns!(),
        "),
              a as (insert into messages (id, chat_id, seq, role, reply_to, content, status, provider, model,
                                          input_tokens, node_id)
                    select v.answer, v.chat_id, next.last_seq, 'assistant', v.user_msg, '', 'streaming',
                           v.provider, v.model, v.prompt_tokens, $12
                    from next join v on v.chat_id = next.id
                    returning ",
        message_columns!(),
        ")
         select * from u union all select * from a"
    ))
    .bind(uuids(|t| t.message.chat_id))
    .bind(ids(turns.len()))
    .bind(ids(turns.len()))
    .bind(uuids(|t| t.message.author_id))
    .bind(text(|t| &t.message.client_msg_id))
    .bind(text(|t| &t.message.content))
    .bind(turns.iter().map(|t| t.read_at).collect::<Vec<_>>())
    .bind(turns.iter().map(|t| t.fence).collect::<Vec<_>>())
    .bind(text(|t| &t.provider))
    .bind(text(|t| &t.model))
    .bind(turns.iter().map(|t| t.prompt_tokens).collect::<Vec<_>>())
    .bind(node_id)
    .fetch_all(db)
    .await?;
    let (mut users, mut answers) = (HashMap::new(), HashMap::new());
    for m in rows {
        let side = if m.role == "user" {
            &mut users
        } else {
            &mut answers
        };
        side.insert(m.chat_id, m);
    }
    Ok(users
        .into_iter()
        .filter_map(|(chat, u)| Some((chat, (u, answers.remove(&chat)?))))
        .collect())
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

/// Who opens an answer: the streaming node, and the chat lease's fencing
/// token (`None` when Redis is unreachable and the lease could not be taken).
#[derive(Debug, Clone, Copy)]
pub struct Opener<'a> {
    pub node_id: &'a str,
    pub fence: Option<i64>,
}

/// Opens an assistant answer as `streaming` under the chat's next seq, with
/// its prompt's token count (what a crash-interrupted answer is billed for
/// input). `RowNotFound` when the chat is gone or a newer fencing token has
/// opened an answer since (this node's lease lapsed).
pub async fn insert_assistant(
    db: &PgPool,
    chat_id: Uuid,
    reply_to: Uuid,
    (provider, model): (&str, &str),
    prompt_tokens: i32,
    opener: Opener<'_>,
) -> Result<Message, sqlx::Error> {
    sqlx::query_as(concat!(
        "with next as (update chats set last_seq = last_seq + 1, updated_at = now(),
                              gen_fence = greatest(gen_fence, coalesce($8, gen_fence))
                        where id = $1 and ($8::bigint is null or gen_fence <= $8) returning last_seq),
              dequeued as (update messages set awaiting_answer = false
                            where id = $3 and exists (select 1 from next))
         insert into messages (id, chat_id, seq, role, reply_to, content, status, provider, model, input_tokens, node_id)
         select $2, $1, next.last_seq, 'assistant', $3, '', 'streaming', $4, $5, $6, $7 from next
         returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(Uuid::now_v7())
    .bind(reply_to)
    .bind(provider)
    .bind(model)
    .bind(prompt_tokens)
    .bind(opener.node_id)
    .bind(opener.fence)
    .fetch_one(db)
    .await
}

/// Ends a user message that will get no answer (it could not be admitted
/// when it was taken over) with a `failed` answer row, so it leaves the
/// queue visibly. `None` when it has an answer already.
pub async fn insert_unanswerable(
    db: &PgPool,
    chat_id: Uuid,
    reply_to: Uuid,
    reason: &str,
    node_id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "with next as (update chats set last_seq = last_seq + 1, updated_at = now()
                        where id = $1 and exists (select 1 from messages where id = $3 and awaiting_answer)
                        returning last_seq),
              dequeued as (update messages set awaiting_answer = false
                            where id = $3 and exists (select 1 from next))
         insert into messages (id, chat_id, seq, role, reply_to, content, status, finish_reason, completed_at, node_id)
         select $2, $1, next.last_seq, 'assistant', $3, '', 'failed', $4, now(), $5 from next
         returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(Uuid::now_v7())
    .bind(reply_to)
    .bind(reason)
    .bind(node_id)
    .fetch_optional(db)
    .await
}

/// The chat's durable queue head: its oldest user message (of the last
/// `window_secs`) still awaiting its answer.
pub async fn next_unanswered(
    db: &PgPool,
    chat_id: Uuid,
    window_secs: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        message_columns!(),
        " from messages
         where chat_id = $1 and awaiting_answer
           and created_at > now() - make_interval(secs => $2)
         order by seq limit 1"
    ))
    .bind(chat_id)
    .bind(window_secs as f64)
    .fetch_optional(db)
    .await
}

/// Chats where a user message accepted by one of `node_ids` (of the last
/// `window_secs`) still has no answer: their queues to take over.
pub async fn stranded_chats(
    db: &PgPool,
    node_ids: &[String],
    window_secs: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select distinct chat_id from messages
         where node_id = any($1) and awaiting_answer
           and created_at > now() - make_interval(secs => $2)",
    )
    .bind(node_ids)
    .bind(window_secs as f64)
    .fetch_all(db)
    .await
}

/// Whether a user message still waits for its answer.
pub async fn unanswered(db: &PgPool, user_message_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select coalesce((select awaiting_answer from messages where id = $1), false)",
    )
    .bind(user_message_id)
    .fetch_one(db)
    .await
}

/// Saves the partial text of an answer still streaming, so a crash loses at
/// most one interval, with how many deltas it covers (for joins on other nodes).
pub async fn checkpoint(
    db: &PgPool,
    id: Uuid,
    content: &str,
    deltas: u32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update messages set content = $2, deltas_saved = $3 where id = $1 and status = 'streaming'",
    )
    .bind(id)
    .bind(content)
    .bind(i32::try_from(deltas).unwrap_or(i32::MAX))
    .execute(db)
    .await?;
    Ok(())
}

/// How an answer ended, for [`finalize`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: &'static str,
    /// Who really served it (after any fallback).
    pub provider: String,
    pub model: String,
    pub content: String,
    pub finish_reason: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_micros: i64,
}

/// A final answer row, and its chat's oldest message still awaiting an
/// answer (so the chat need not read its queue again: the next head is known).
#[derive(Debug, sqlx::FromRow)]
pub struct Finalized {
    #[sqlx(flatten)]
    pub message: Message,
    pub next_awaiting: Option<Uuid>,
}

/// Ends the answers still `streaming` among `ends`, of any chats, in one
/// statement and one commit. An answer missing from the result is gone (its
/// chat was deleted) or was already ended (a restarted chat actor failed it).
pub async fn finalize(
    db: &PgPool,
    ends: &[(Uuid, Outcome)],
) -> Result<Vec<Finalized>, sqlx::Error> {
    let text = |f: fn(&Outcome) -> &str| ends.iter().map(|(_, o)| f(o)).collect::<Vec<_>>();
    sqlx::query_as(
        "update messages m set status = v.status, content = v.content, finish_reason = v.finish_reason,
                input_tokens = v.input_tokens, output_tokens = v.output_tokens,
                cost_micros = v.cost_micros, provider = v.provider, model = v.model,
                completed_at = now()
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[],
                     $7::int8[], $8::text[], $9::text[])
              as v(id, status, content, finish_reason, input_tokens, output_tokens, cost_micros,
                   provider, model)
         where m.id = v.id and m.status = 'streaming'
         returning (select q.id from messages q where q.chat_id = m.chat_id and q.awaiting_answer
                    order by q.seq limit 1) as next_awaiting,
                   m.id, m.chat_id, m.seq, m.role, m.author_id, m.reply_to, m.client_msg_id,
                   m.content, m.status, m.provider, m.model, m.finish_reason, m.input_tokens,
                   m.output_tokens, m.cost_micros, m.created_at, m.completed_at, m.citations,
                   m.node_id, m.deltas_saved",
    )
    .bind(ends.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(text(|o| o.status))
    .bind(text(|o| &o.content))
    .bind(text(|o| &o.finish_reason))
    .bind(ends.iter().map(|(_, o)| o.input_tokens).collect::<Vec<_>>())
    .bind(ends.iter().map(|(_, o)| o.output_tokens).collect::<Vec<_>>())
    .bind(ends.iter().map(|(_, o)| o.cost_micros).collect::<Vec<_>>())
    .bind(text(|o| &o.provider))
    .bind(text(|o| &o.model))
    .fetch_all(db)
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

/// Marks every answer the nodes `node_ids` left `streaming` as
/// `failed`/`interrupted` (this node's start, or a dead node's takeover),
/// answering each with its chat's workspace and its asker. With
/// `with_unowned`, also answers opened before rows had a node (an upgrade).
pub async fn fail_all_interrupted(
    tx: &mut sqlx::PgConnection,
    node_ids: &[String],
    with_unowned: bool,
) -> Result<Vec<Interrupted>, sqlx::Error> {
    sqlx::query_as(
        "update messages m set status = 'failed', finish_reason = 'interrupted', completed_at = now()
         from chats c
         where m.status = 'streaming' and c.id = m.chat_id
           and (m.node_id = any($1) or ($2 and m.node_id is null))
         returning m.id, m.chat_id, m.seq, m.role, m.author_id, m.reply_to, m.client_msg_id, m.content,
                   m.status, m.provider, m.model, m.finish_reason, m.input_tokens, m.output_tokens,
                   m.cost_micros, m.created_at, m.completed_at, c.workspace_id,
                   (select u.author_id from messages u where u.id = m.reply_to) as user_id",
    )
    .bind(node_ids)
    .bind(with_unowned)
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

/// Marks answers this node left `streaming` in a chat (its actor crashed)
/// as `failed`, keeping their saved text; another node's are never touched.
pub async fn fail_interrupted(
    db: &PgPool,
    chat_id: Uuid,
    node_id: &str,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(concat!(
        "update messages set status = 'failed', finish_reason = 'interrupted', completed_at = now()
         where status = 'streaming' and chat_id = $1 and (node_id = $2 or node_id is null) returning ",
        message_columns!()
    ))
    .bind(chat_id)
    .bind(node_id)
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
