//! `/api/chats`: create, list, read, rename and delete chats, and read a chat's
//! messages.
//!
//! A chat is visible to the members of its workspace. A chat that does not exist
//! and one in a workspace the caller is not in get the same 404, so ids cannot be
//! probed.

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    store::{
        chats::{self, Chat},
        messages::{self, Message},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_chats).post(create_chat))
        .route(
            "/{id}",
            get(get_chat).patch(rename_chat).delete(delete_chat),
        )
        .route("/{id}/messages", get(list_messages))
}

/// Longest title, in characters, after trimming.
pub const TITLE_MAX: usize = 200;
/// The title of a chat created without one.
pub const DEFAULT_TITLE: &str = "New chat";

const CHATS_LIMIT_DEFAULT: i64 = 20;
const CHATS_LIMIT_MAX: i64 = 100;
const MESSAGES_LIMIT_DEFAULT: i64 = 50;
const MESSAGES_LIMIT_MAX: i64 = 200;

#[derive(Deserialize, ToSchema)]
pub struct CreateChatRequest {
    /// Trimmed; 1–200 characters, no control characters. Absent or null: "New chat".
    pub title: Option<String>,
    /// A workspace the caller belongs to. Absent or null: the caller's own workspace.
    pub workspace_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
pub struct RenameChatRequest {
    /// Trimmed; 1–200 characters, no control characters.
    pub title: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListChatsQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page: only chats older than this id.
    pub before: Option<Uuid>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListMessagesQuery {
    /// Only messages with a greater `seq`; default 0 (from the start), not negative.
    pub after_seq: Option<i64>,
    /// 1–200, default 50.
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatList {
    /// Newest first.
    pub chats: Vec<Chat>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_cursor: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageList {
    /// In `seq` order.
    pub messages: Vec<Message>,
}

fn parse_title(raw: &str) -> ApiResult<String> {
    crate::text::DisplayText::parse(raw, "title", TITLE_MAX)
        .map(crate::text::DisplayText::into_string)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

fn parse_limit(limit: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(format!(
            "limit: must be between 1 and {max}"
        )))
    }
}

fn chat_not_found() -> ApiError {
    ApiError::not_found("chat")
}

#[utoipa::path(post, path = "/api/chats", tag = "chats", security(("bearer" = [])),
    request_body = CreateChatRequest,
    responses((status = 201, body = Chat), (status = 400, description = "a field is invalid; the message names it"),
              (status = 401, description = "missing or invalid token"),
              (status = 404, description = "workspace not found (or the caller is not a member)")))]
pub async fn create_chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateChatRequest>,
) -> ApiResult<impl IntoResponse> {
    let title = match req.title.as_deref() {
        Some(raw) => parse_title(raw)?,
        None => DEFAULT_TITLE.to_owned(),
    };
    let workspace_not_found = || ApiError::not_found("workspace");
    let workspace_id = match req.workspace_id {
        Some(id) if chats::is_member(&state.db, user.id, id).await? => id,
        Some(_) => return Err(workspace_not_found()),
        None => chats::default_workspace(&state.db, user.id)
            .await?
            .ok_or_else(workspace_not_found)?,
    };
    match chats::create(&state.db, workspace_id, user.id, &title).await {
        Ok(chat) => {
            tracing::info!(chat_id = %chat.id, %workspace_id, "chat created");
            Ok((StatusCode::CREATED, Json(chat)))
        }
        // The workspace (or the user) went away between the check and the insert.
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(workspace_not_found()),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/api/chats", tag = "chats", security(("bearer" = [])),
    params(ListChatsQuery),
    responses((status = 200, body = ChatList), (status = 400, description = "bad `limit` or `before`"),
              (status = 401, description = "missing or invalid token")))]
pub async fn list_chats(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListChatsQuery>,
) -> ApiResult<Json<ChatList>> {
    let limit = parse_limit(q.limit, CHATS_LIMIT_DEFAULT, CHATS_LIMIT_MAX)?;
    // One extra row tells whether another page follows.
    let mut chats = chats::list_for_user(&state.db, user.id, q.before, limit + 1).await?;
    let next_cursor = if chats.len() as i64 > limit {
        chats.truncate(limit as usize);
        chats.last().map(|c| c.id)
    } else {
        None
    };
    Ok(Json(ChatList { chats, next_cursor }))
}

#[utoipa::path(get, path = "/api/chats/{id}", tag = "chats", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "chat id")),
    responses((status = 200, body = Chat), (status = 400, description = "malformed id"),
              (status = 401, description = "missing or invalid token"),
              (status = 404, description = "no such chat, or not in the caller's workspaces")))]
pub async fn get_chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Chat>> {
    chats::get_for_user(&state.db, user.id, id)
        .await?
        .map(Json)
        .ok_or_else(chat_not_found)
}

#[utoipa::path(patch, path = "/api/chats/{id}", tag = "chats", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "chat id")), request_body = RenameChatRequest,
    responses((status = 200, body = Chat), (status = 400, description = "malformed id or bad title"),
              (status = 401, description = "missing or invalid token"),
              (status = 404, description = "no such chat, or not in the caller's workspaces")))]
pub async fn rename_chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RenameChatRequest>,
) -> ApiResult<Json<Chat>> {
    let title = parse_title(&req.title)?;
    chats::rename(&state.db, user.id, id, &title)
        .await?
        .map(Json)
        .ok_or_else(chat_not_found)
}

#[utoipa::path(delete, path = "/api/chats/{id}", tag = "chats", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "chat id")),
    responses((status = 204, description = "deleted, with its messages"), (status = 400, description = "malformed id"),
              (status = 401, description = "missing or invalid token"),
              (status = 404, description = "no such chat, or not in the caller's workspaces")))]
pub async fn delete_chat(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    if chats::delete(&state.db, user.id, id).await? {
        // Its actor would otherwise linger until idle, answering into a deleted chat.
        state.actors.chats.stop(id);
        tracing::info!(chat_id = %id, "chat deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(chat_not_found())
    }
}

#[utoipa::path(get, path = "/api/chats/{id}/messages", tag = "chats", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "chat id"), ListMessagesQuery),
    responses((status = 200, body = MessageList), (status = 400, description = "malformed id, bad `after_seq` or `limit`"),
              (status = 401, description = "missing or invalid token"),
              (status = 404, description = "no such chat, or not in the caller's workspaces")))]
pub async fn list_messages(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListMessagesQuery>,
) -> ApiResult<Json<MessageList>> {
    let limit = parse_limit(q.limit, MESSAGES_LIMIT_DEFAULT, MESSAGES_LIMIT_MAX)?;
    let after_seq = q.after_seq.unwrap_or(0);
    if after_seq < 0 {
        return Err(ApiError::invalid("after_seq: must not be negative"));
    }
    let chat = chats::get_for_user(&state.db, user.id, id)
        .await?
        .ok_or_else(chat_not_found)?;
    let messages = messages::list_after(&state.db, chat.id, after_seq, limit).await?;
    Ok(Json(MessageList { messages }))
}
