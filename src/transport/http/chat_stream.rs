//! Sending over REST and following a chat over SSE.
//!
//! `POST /api/chats/{id}/messages` answers with the finished assistant message
//! as JSON, or, with `Accept: text/event-stream`, streams the chat's events (the
//! WebSocket's frames) until the answer is done. `GET /api/chats/{id}/events`
//! follows a chat over SSE, resuming after `Last-Event-ID`. A REST client that
//! goes away cancels the answer it asked for.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::{
    actors::{
        chat::{Ack, SendRequest},
        hub::{ConnId, Outbound, Subscriber},
    },
    edge::SseSlot,
    error::{ApiError, ApiResult, ErrorCode},
    protocol::{Resume, ServerFrame, parse_last_event_id},
    state::AppState,
    store::{self, messages::Message},
};

/// Longest a JSON (non-streaming) send waits for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/{id}/messages", post(send_message))
        .route("/{id}/events", get(follow_events))
        .route("/{id}/events/ticket", post(events_ticket))
}

/// How long an events ticket may be used to open the stream.
const TICKET_TTL: Duration = Duration::from_secs(60);

fn events_scope(chat_id: Uuid) -> String {
    format!("events:{chat_id}")
}

#[derive(Serialize, ToSchema)]
pub struct EventsTicket {
    /// Pass as `?ticket=` to `GET /api/chats/{id}/events` instead of a header.
    pub ticket: String,
    pub expires_in: u64,
}

#[utoipa::path(post, path = "/api/chats/{id}/events/ticket", tag = "chats",
    params(("id" = Uuid, Path, description = "chat id")), security(("bearer" = [])),
    responses((status = 200, body = EventsTicket, description = "a ticket for this chat's event stream, valid for 60 s"),
              (status = 404, description = "no such chat")))]
pub async fn events_ticket(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(chat_id): ApiPath<Uuid>,
) -> ApiResult<Json<EventsTicket>> {
    store::chats::get_for_user(&state.db, user.id, chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat"))?;
    let ticket = state
        .tokens
        .issue_scoped(user.id, &events_scope(chat_id), TICKET_TTL)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(EventsTicket {
        ticket,
        expires_in: TICKET_TTL.as_secs(),
    }))
}

/// The follower: a bearer token, or else a ticket for this very chat.
async fn follower(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
    chat_id: Uuid,
) -> ApiResult<Uuid> {
    let claims = match (super::extract::bearer_from_headers(headers), ticket) {
        (Some(token), _) => state.tokens.verify_access(token),
        (None, Some(t)) => state.tokens.verify_scoped(t, &events_scope(chat_id)),
        (None, None) => {
            return Err(ApiError::unauthorized(
                "missing bearer token (or ?ticket= from POST /api/chats/{id}/events/ticket)",
            ));
        }
    }
    .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
    super::extract::ensure_active(state, claims.sub).await?;
    Ok(claims.sub)
}

#[derive(Deserialize, ToSchema)]
pub struct SendMessage {
    pub content: String,
    /// Makes the send idempotent: a repeat gets the same message and answer. Generated when absent.
    pub client_msg_id: Option<String>,
    pub model: Option<String>,
    /// `true` to answer from the workspace's documents, or a list of document ids;
    /// the answer then carries `citations` (docs/RAG.md).
    pub documents: Option<crate::protocol::DocumentsChoice>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FollowQuery {
    /// Replay messages after this seq, then go live (`Last-Event-ID` wins when both are given).
    pub since_seq: Option<i64>,
    /// Instead of an `Authorization` header (a browser `EventSource` cannot
    /// send one): a ticket from `POST /api/chats/{id}/events/ticket`.
    pub ticket: Option<String>,
}

/// Unsubscribes when the response (or its stream) is dropped, cancelling the
/// answer this request asked for if it is still running.
struct Subscription {
    state: AppState,
    chat_id: Uuid,
    conn: ConnId,
    rx: mpsc::Receiver<Outbound>,
    overflow: CancellationToken,
    /// Held by SSE responses: their place under `edge.max_sse_streams_per_user`.
    sse_slot: Option<SseSlot>,
}

/// A place for one more SSE stream of `user`, or 429.
fn sse_slot(state: &AppState, user: Uuid) -> ApiResult<SseSlot> {
    let cap = state.config.edge.max_sse_streams_per_user;
    state.edge.sse_slot(user, cap).ok_or_else(|| {
        let mut err = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many open event streams (at most {cap} per user); close one first"),
        );
        err.retry_after = Some(Duration::from_secs(1));
        err
    })
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let actors = &self.state.actors;
        actors.chats.unsubscribe(self.chat_id, self.conn, true);
    }
}

async fn subscribe(
    state: &AppState,
    user_id: Uuid,
    chat_id: Uuid,
    since: Option<Resume>,
) -> ApiResult<Subscription> {
    let conn = state.actors.hub.new_conn_id();
    let (tx, rx) = mpsc::channel(state.config.ws.outbound_queue);
    let overflow = CancellationToken::new();
    let sub = Subscriber {
        conn,
        user_id,
        tx,
        overflow: overflow.clone(),
    };
    state.actors.chats.subscribe(chat_id, sub, since).await?;
    Ok(Subscription {
        state: state.clone(),
        chat_id,
        conn,
        rx,
        overflow,
        sse_slot: None,
    })
}

/// Follows one answer through the chat's events: learns the assistant message
/// that replies to our user message, and sees when it ends.
struct AnswerWatch {
    user_message_id: Uuid,
    assistant_id: Option<Uuid>,
}

impl AnswerWatch {
    /// True when `out` ends the answer (its `done`, or an error about it).
    fn observe(&mut self, out: &Outbound) -> bool {
        if self.assistant_id.is_none() && out.kind == "message" {
            let v: serde_json::Value = serde_json::from_str(&out.json).unwrap_or_default();
            if v["message"]["reply_to"].as_str() == Some(&self.user_message_id.to_string()) {
                self.assistant_id = v["message"]["id"].as_str().and_then(|s| s.parse().ok());
            }
        }
        out.ends.is_some()
            && (out.ends == self.assistant_id || out.ends == Some(self.user_message_id))
    }
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

fn sse_event(out: &Outbound) -> Event {
    let ev = Event::default().event(out.kind).data(out.json.as_ref());
    match &out.event_id {
        Some(id) => ev.id(id.as_ref()),
        None => ev,
    }
}

#[utoipa::path(post, path = "/api/chats/{id}/messages", tag = "chats", request_body = SendMessage,
    params(("id" = Uuid, Path, description = "chat id")), security(("bearer" = [])),
    responses((status = 200, body = Message, description = "the finished answer; with `Accept: text/event-stream` an SSE stream of ack, message, delta and done events"),
              (status = 400, description = "bad content, client_msg_id or model"), (status = 404, description = "no such chat"),
              (status = 502, description = "the answer failed")))]
pub async fn send_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(chat_id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> ApiResult<Response> {
    crate::auth::spend::may_spend(&state.db, &state.config.accounts, user.id).await?;
    store::chats::get_for_user(&state.db, user.id, chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat"))?;
    // Refused before anything is sent, so a refusal starts no answer.
    let slot = if wants_sse(&headers) {
        Some(sse_slot(&state, user.id)?)
    } else {
        None
    };
    let mut sub = subscribe(&state, user.id, chat_id, None).await?;
    sub.sse_slot = slot;
    let req = SendRequest {
        author: user.id,
        client_msg_id: body
            .client_msg_id
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
        content: body.content,
        model: body.model,
        origin: Some(sub.conn),
        documents: body
            .documents
            .and_then(crate::documents::retrieval::Scope::from_choice),
    };
    let ack = state.actors.chats.send(chat_id, req).await?;
    let mut watch = AnswerWatch {
        user_message_id: ack.message_id,
        assistant_id: None,
    };
    if ack.duplicate {
        // A repeat: the answer may be finished, or already streaming.
        match store::messages::reply_to(&state.db, ack.message_id).await? {
            Some(m) if m.status != "streaming" => {
                return if wants_sse(&headers) {
                    Ok(sse_replay(chat_id, &ack, m))
                } else {
                    answer(m)
                };
            }
            Some(m) => watch.assistant_id = Some(m.id),
            None => {}
        }
    }

    if wants_sse(&headers) {
        return Ok(sse_answer(sub, watch, ack));
    }
    json_answer(&state, sub, watch).await
}

/// A repeat of a message whose answer has ended: the ack, the answer as
/// stored, and how it ended — then the stream closes (nothing more will come).
fn sse_replay(chat_id: Uuid, ack: &Ack, m: Message) -> Response {
    let ack_frame = ServerFrame::Ack {
        client_msg_id: ack.client_msg_id.clone(),
        message_id: ack.message_id,
        seq: ack.seq,
    };
    let seq = m.seq;
    let end = if m.status == "failed" {
        let err = ApiError::new(
            ErrorCode::ProviderUnavailable,
            "the answer failed; the partial answer is saved as failed",
        );
        ServerFrame::from_error(&err).about(chat_id, m.id)
    } else {
        let tokens = |t: Option<i32>| t.and_then(|t| u32::try_from(t).ok()).unwrap_or(0);
        let cost = m.cost_micros.unwrap_or(0);
        ServerFrame::Done {
            chat_id,
            message_id: m.id,
            usage: crate::providers::Usage {
                input_tokens: tokens(m.input_tokens),
                output_tokens: tokens(m.output_tokens),
            },
            cost_micros: cost,
            cost_usd: crate::config::pricing::micros_to_usd(cost),
            provider: m.provider.clone().unwrap_or_default(),
            model: m.model.clone().unwrap_or_default(),
            finish_reason: m.finish_reason.clone().unwrap_or_default(),
            citations: m.citations.clone(),
        }
    };
    let message = ServerFrame::Message {
        chat_id,
        seq,
        message: m,
        deltas_included: None,
    };
    let events = [
        Outbound::new(&ack_frame, Some(ack.seq.to_string())),
        Outbound::new(&message, Some(seq.to_string())),
        Outbound::new(&end, Some(format!("{seq}:done"))),
    ]
    .map(|out| Ok::<_, Infallible>(sse_event(&out)));
    Sse::new(futures::stream::iter(events)).into_response()
}

fn answer(m: Message) -> ApiResult<Response> {
    if m.status == "failed" {
        return Err(ApiError::new(
            ErrorCode::ProviderUnavailable,
            "the answer failed; the partial answer is saved as failed",
        ));
    }
    Ok((StatusCode::OK, Json(m)).into_response())
}

#[utoipa::path(get, path = "/api/chats/{id}/events", tag = "chats",
    params(("id" = Uuid, Path, description = "chat id"), FollowQuery), security(("bearer" = [])),
    responses((status = 200, description = "SSE: the chat's events (message, delta, done, error), each with an id to resume from via Last-Event-ID"),
              (status = 404, description = "no such chat")))]
pub async fn follow_events(
    State(state): State<AppState>,
    ApiPath(chat_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<FollowQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let user = AuthUser {
        id: follower(&state, &headers, q.ticket.as_deref(), chat_id).await?,
    };
    store::chats::get_for_user(&state.db, user.id, chat_id)
        .await?
        .ok_or_else(|| ApiError::not_found("chat"))?;
    let since = match headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(parse_last_event_id))
    {
        Some(Some(resume)) => Some(resume),
        Some(None) => {
            return Err(ApiError::invalid(
                "Last-Event-ID: not an event id of this API",
            ));
        }
        None if q.since_seq.is_some_and(|s| s < 0) => {
            return Err(ApiError::invalid("since_seq: must not be negative"));
        }
        None => q.since_seq.map(Resume::since_seq),
    };
    let slot = sse_slot(&state, user.id)?;
    let mut sub = subscribe(&state, user.id, chat_id, since).await?;
    sub.sse_slot = Some(slot);
    let stream = futures::stream::unfold((sub, false), |(mut sub, ended)| async move {
        if ended {
            return None;
        }
        tokio::select! {
            biased;
            o = sub.rx.recv() => o.map(|out| (Ok::<_, Infallible>(sse_event(&out)), (sub, false))),
            () = sub.overflow.cancelled() => {
                let f = ServerFrame::error(ErrorCode::SlowConsumer, "reading too slowly");
                Some((Ok(sse_event(&Outbound::new(&f, None))), (sub, true)))
            }
            () = sub.state.lifecycle.closing.cancelled() => {
                Some((Ok(sse_event(&Outbound::new(&ServerFrame::shutting_down(), None))), (sub, true)))
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The ack, then the chat's events until the answer to this message ends.
fn sse_answer(sub: Subscription, watch: AnswerWatch, ack: Ack) -> Response {
    let ack_frame = ServerFrame::Ack {
        client_msg_id: ack.client_msg_id,
        message_id: ack.message_id,
        seq: ack.seq,
    };
    let first = sse_event(&Outbound::new(&ack_frame, Some(ack.seq.to_string())));
    let stream = futures::stream::unfold(
        (sub, watch, VecDeque::from([first]), false),
        |(mut sub, mut watch, mut pre, mut ended)| async move {
            if let Some(ev) = pre.pop_front() {
                return Some((Ok::<_, Infallible>(ev), (sub, watch, pre, ended)));
            }
            if ended {
                return None;
            }
            let out = tokio::select! {
                biased;
                o = sub.rx.recv() => o?,
                () = sub.overflow.cancelled() => {
                    let f = ServerFrame::error(ErrorCode::SlowConsumer, "reading too slowly");
                    return Some((Ok(sse_event(&Outbound::new(&f, None))), (sub, watch, pre, true)));
                }
                () = sub.state.lifecycle.closing.cancelled() => {
                    let f = ServerFrame::shutting_down();
                    return Some((Ok(sse_event(&Outbound::new(&f, None))), (sub, watch, pre, true)));
                }
            };
            ended = watch.observe(&out);
            Some((Ok(sse_event(&out)), (sub, watch, pre, ended)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Waits (up to `ANSWER_TIMEOUT`) for the answer to end and returns it as JSON.
async fn json_answer(
    state: &AppState,
    mut sub: Subscription,
    mut watch: AnswerWatch,
) -> ApiResult<Response> {
    let wait = async {
        loop {
            let out = tokio::select! {
                biased;
                o = sub.rx.recv() => o,
                () = sub.overflow.cancelled() => None,
                () = sub.state.lifecycle.closing.cancelled() => None,
            };
            let Some(out) = out else {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "the chat stopped answering; retry",
                ));
            };
            if watch.observe(&out) {
                return Ok(out);
            }
        }
    };
    let end = tokio::time::timeout(ANSWER_TIMEOUT, wait)
        .await
        .map_err(|_| ApiError::new(ErrorCode::ProviderUnavailable, "the answer took too long"))??;
    // An answer that ended in an `error` frame fails the same way here: its
    // code, message and `retry_after` (as `Retry-After`), as the WebSocket saw.
    let failure = (end.kind == "error")
        .then(|| error_of_frame(&end.json))
        .flatten();
    let Some(id) = watch.assistant_id else {
        return Err(failure.unwrap_or_else(|| {
            ApiError::new(
                ErrorCode::ProviderUnavailable,
                "no provider could answer; send again to retry",
            )
        }));
    };
    let message = store::messages::by_id(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::internal("finished answer not found"))?;
    match failure {
        Some(err) if message.status == "failed" => Err(err),
        _ => answer(message),
    }
}

/// The error an `error` frame carries, back as an [`ApiError`].
fn error_of_frame(json: &str) -> Option<ApiError> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let code: ErrorCode = serde_json::from_value(v["code"].clone()).ok()?;
    let mut err = ApiError::new(code, v["message"].as_str().unwrap_or("the answer failed"));
    err.retry_after = v["retry_after"].as_u64().map(Duration::from_secs);
    Some(err)
}
