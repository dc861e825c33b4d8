//! `GET /ws`: the WebSocket protocol of docs/PROTOCOL.md.
//!
//! One task per socket reads frames and calls the actors; a writer task drains
//! the socket's bounded outbound queue, which the chat hub also feeds. Direct
//! answers (ack, pong, errors) go through the same queue, so a socket sees one
//! order. Close codes: 1009 frame too large, 4001 authentication failed (or
//! the account was disabled while connected), 4002 heartbeat timeout, 4008
//! slow consumer, 1008 too many connections, 1001 server shutting down (after
//! an `error` frame saying so). Every write has a deadline: a peer that stops
//! reading is dropped, and its socket counts toward the user's cap until
//! that moment.

mod subscribe_budget;
mod writer;

use subscribe_budget::SubscribeBudget;
use writer::{WriterTiming, write_loop};

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message as WsMessage, WebSocket},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    actors::{
        chat::{ChatError, SendRequest},
        hub::{ConnId, Outbound, Subscriber},
    },
    documents::retrieval::Scope,
    edge::UnauthenticatedSlot,
    error::{ApiError, ErrorCode},
    protocol::{ClientFrame, ServerFrame},
    state::AppState,
    store,
};

pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
pub const CLOSE_HEARTBEAT: u16 = 4002;
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Most queued frames written before one flush.
const WRITE_BATCH: usize = 64;
/// Per-socket read buffer; client frames are small JSON. The codec fills it
/// with zeros before each read, so all of it is resident in every idle
/// socket; a larger frame still arrives whole, in more reads.
const WS_READ_BUFFER: usize = 1024;
/// Chats one socket may follow at once.
const MAX_SUBSCRIPTIONS: usize = 256;

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !state.config.server.cors_origins.iter().any(|o| o == origin)
        && !same_origin(origin, &headers)
    {
        return ApiError::new(ErrorCode::Forbidden, "origin not allowed").into_response();
    }
    // A bearer header authenticates at upgrade; without one the first frame must be `auth`.
    let user = match super::http::extract::bearer_from_headers(&headers) {
        Some(token) => match state.tokens.verify_access(token) {
            Ok(claims) => Some(claims.sub),
            Err(_) => return ApiError::unauthorized("invalid or expired token").into_response(),
        },
        None => None,
    };
    // A socket holds a slot until its `auth` frame: sockets that never
    // authenticate cannot pile up past `edge.max_unauthenticated_ws`.
    let pending = match user {
        Some(_) => None,
        None => match state
            .edge
            .unauthenticated_slot(state.config.edge.max_unauthenticated_ws)
        {
            Some(slot) => Some(slot),
            None => {
                let mut err = ApiError::new(
                    ErrorCode::RateLimited,
                    "too many sockets waiting to authenticate; send a Bearer header or retry",
                );
                err.retry_after = Some(Duration::from_secs(1));
                return err.into_response();
            }
        },
    };
    let limit = state.config.ws.max_frame_bytes;
    // Our own check closes with 1009 and a reason; the codec's bound (twice as
    // large) only stops a peer from making us buffer without limit.
    ws.max_message_size(limit * 2)
        .max_frame_size(limit * 2)
        // tungstenite allocates its read buffer up front (128 KiB by default),
        // which was most of a socket's memory; frames larger than this still
        // arrive whole, in more reads.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            // Tracked, so shutdown waits for the socket's close frame to go out.
            let sockets = state.lifecycle.sockets.clone();
            sockets.track_future(connection(state, socket, user, pending))
        })
}

/// A page served by this server itself (the browser client at `/`) opens its
/// socket from its own origin: `Origin` is the scheme plus the `Host` it asked
/// for. Cross-site pages still need `server.cors_origins` (and sockets
/// authenticate by token, never by cookie).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

pub(super) fn close(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

pub(super) fn text(frame: &ServerFrame) -> WsMessage {
    WsMessage::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

/// Waits for an `auth` frame within the deadline.
async fn authenticate(state: &AppState, socket: &mut WebSocket) -> Result<Uuid, &'static str> {
    let deadline = Duration::from_secs(state.config.ws.auth_timeout_secs);
    let first = tokio::time::timeout(deadline, async {
        loop {
            match socket.recv().await {
                Some(Ok(WsMessage::Text(t))) => return Some(t),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await
    .map_err(|_| "authentication timed out")?
    .ok_or("authenticate first")?;
    if first.len() > state.config.ws.max_frame_bytes {
        return Err("authenticate first");
    }
    match serde_json::from_str::<ClientFrame>(&first) {
        Ok(ClientFrame::Auth { token }) => state
            .tokens
            .verify_access(&token)
            .map(|c| c.sub)
            .map_err(|_| "invalid or expired token"),
        _ => Err("authenticate first"),
    }
}

/// Authenticates (unless the upgrade did) and registers the socket with the
/// user's actor; on refusal says why and closes.
async fn admit(
    state: &AppState,
    socket: &mut WebSocket,
    user: Option<Uuid>,
    pending: Option<UnauthenticatedSlot>,
) -> Option<(Uuid, ConnId)> {
    let user_id = match user {
        Some(u) => u,
        None => match authenticate(state, socket).await {
            Ok(u) => {
                drop(pending);
                u
            }
            Err(why) => {
                let _ = socket
                    .send(text(&ServerFrame::error(ErrorCode::Unauthorized, why)))
                    .await;
                let _ = socket.send(close(CLOSE_UNAUTHORIZED, why)).await;
                return None;
            }
        },
    };
    if super::http::extract::ensure_active(state, user_id)
        .await
        .is_err()
    {
        let why = "account disabled";
        let _ = socket
            .send(text(&ServerFrame::error(ErrorCode::Forbidden, why)))
            .await;
        let _ = socket.send(close(CLOSE_UNAUTHORIZED, why)).await;
        return None;
    }
    let conn = state.actors.hub.new_conn_id();
    if let Err(e) = state.actors.users.connect(user_id, conn).await {
        let _ = socket
            .send(text(&ServerFrame::error(
                ErrorCode::RateLimited,
                e.to_string(),
            )))
            .await;
        let _ = socket
            .send(close(CLOSE_POLICY, "too many connections"))
            .await;
        return None;
    }
    Some((user_id, conn))
}

async fn connection(
    state: AppState,
    mut socket: WebSocket,
    user: Option<Uuid>,
    pending: Option<UnauthenticatedSlot>,
) {
    // Boxed, like a frame's handling (read_loop): its Postgres and actor
    // calls would otherwise size every idle socket's task; freed once admitted.
    let Some((user_id, conn)) = Box::pin(admit(&state, &mut socket, user, pending)).await else {
        return;
    };
    let actors = &state.actors;
    metrics::gauge!("switchboard_ws_connections").increment(1.0);

    let (tx, rx) = mpsc::channel::<Outbound>(state.config.ws.outbound_queue);
    // A oneshot: the reader asks for at most one close, and an mpsc channel
    // would allocate a block of 32 slots for it on every socket.
    let (close_tx, close_rx) = oneshot::channel::<(u16, &'static str)>();
    let overflow = CancellationToken::new();
    // Cancelled when the writer gives up (a write timed out or failed), so
    // the reader stops too and the socket is dropped.
    let writer_gone = CancellationToken::new();
    let started = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let (sink, mut stream) = socket.split();
    let edge = &state.config.edge;
    let grace = Duration::from_secs(edge.ws_slow_grace_secs);
    #[expect(
        clippy::disallowed_methods,
        reason = "joined below: the connection waits for its writer, and aborts it after the grace"
    )]
    let mut writer = tokio::spawn(write_loop(
        sink,
        rx,
        close_rx,
        overflow.clone(),
        state.lifecycle.closing.clone(),
        WriterTiming {
            ping_every: Duration::from_secs(state.config.ws.ping_interval_secs.max(1)),
            idle: Duration::from_secs(state.config.ws.idle_timeout_secs.max(1)),
            started,
            last_seen: last_seen.clone(),
            write_timeout: Duration::from_secs(edge.ws_write_timeout_secs),
            slow_grace: grace,
            gone: writer_gone.clone(),
        },
    ));

    let mut session = Session {
        state: state.clone(),
        user_id,
        conn,
        tx,
        overflow,
        subscribed: HashSet::new(),
        subscribes: SubscribeBudget::new(edge.ws_subscribes_per_minute),
        cut: actors.users.cut_token(user_id, conn),
    };
    tokio::select! {
        () = read_loop(&mut session, &mut stream, close_tx, started, &last_seen) => {}
        () = writer_gone.cancelled() => {}
    }

    // Unsubscribe first so nothing more is queued, then let the writer finish.
    for chat_id in session.subscribed.drain() {
        actors
            .chats
            .unsubscribe(chat_id, conn, state.config.chat.cancel_on_disconnect);
    }
    drop(session);
    // A writer stuck on a peer that stopped reading would hold the socket
    // (and megabytes of kernel buffers) for good: past the grace it is
    // aborted, which drops its half of the socket.
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        writer.abort();
        let _ = writer.await;
    }
    drop(stream);
    // Counted toward the user's cap until here, when the socket is closed.
    actors.users.disconnect(user_id, conn);
    metrics::gauge!("switchboard_ws_connections").decrement(1.0);
}

/// Reads the client's frames until it goes, misbehaves past closing, or its
/// queue overflows; each frame is handled before the next is read.
async fn read_loop(
    session: &mut Session,
    stream: &mut futures::stream::SplitStream<WebSocket>,
    close_tx: oneshot::Sender<(u16, &'static str)>,
    started: Instant,
    last_seen: &AtomicU64,
) {
    let limit = session.state.config.ws.max_frame_bytes;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = session.overflow.cancelled() => break,
            // The writer sends what is queued, the `error` and close 1001.
            () = session.state.lifecycle.closing.cancelled() => break,
            () = session.cut.cancelled() => {
                let _ = close_tx.send((CLOSE_UNAUTHORIZED, "account disabled"));
                break;
            }
        };
        last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match msg {
            Some(Ok(WsMessage::Text(t))) => {
                metrics::counter!("switchboard_ws_frames_total", "direction" => "in").increment(1);
                if t.len() > limit {
                    let _ = close_tx.send((CLOSE_TOO_BIG, "frame too large"));
                    break;
                }
                // Boxed: handling a frame awaits Postgres and the chat
                // actor, and inline that state would sit in every idle
                // socket's task for its whole life.
                Box::pin(session.on_text(&t)).await;
            }
            Some(Ok(WsMessage::Binary(_))) => {
                session.reply(&ServerFrame::error(
                    ErrorCode::InvalidRequest,
                    "binary frames are not supported; send JSON text",
                ));
            }
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            Some(Ok(WsMessage::Close(_))) | None => break,
            Some(Err(e)) => {
                // The codec refuses frames past its bound; say why before going.
                let msg = e.to_string();
                if msg.contains("too long")
                    || msg.contains("Space limit")
                    || msg.contains("too big")
                {
                    let _ = close_tx.send((CLOSE_TOO_BIG, "frame too large"));
                }
                break;
            }
        }
    }
}

/// One authenticated socket's view: what it follows and may see.
struct Session {
    state: AppState,
    user_id: Uuid,
    conn: ConnId,
    tx: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
    subscribed: HashSet<Uuid>,
    subscribes: SubscribeBudget,
    /// Cancelled when the user is disabled: the socket closes with 4001.
    cut: CancellationToken,
}

impl Session {
    fn reply(&self, frame: &ServerFrame) {
        self.subscriber().push(Outbound::new(frame, None));
    }

    fn subscriber(&self) -> Subscriber {
        Subscriber {
            conn: self.conn,
            user_id: self.user_id,
            tx: self.tx.clone(),
            overflow: self.overflow.clone(),
        }
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.reply(&ServerFrame::error(code, message));
    }

    fn chat_error(&self, e: &ChatError) {
        self.reply(&ServerFrame::from_error(&ApiError::from(e.clone())));
    }

    /// Whether the user may see the chat. Read from Postgres every time: a
    /// member removed from the workspace loses the chat at their next frame,
    /// on every node.
    async fn may_see(&self, chat_id: Uuid) -> Result<(), ApiError> {
        match store::chats::get_for_user(&self.state.db, self.user_id, chat_id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ApiError::not_found("chat")),
            Err(e) => {
                tracing::error!(error = %e, "membership check failed");
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "storage unavailable: not saved, nothing done; retry",
                ))
            }
        }
    }

    /// `may_see`, answering the refusal itself.
    async fn check_visible(&self, chat_id: Uuid) -> bool {
        match self.may_see(chat_id).await {
            Ok(()) => true,
            Err(e) => {
                self.reply(&ServerFrame::from_error(&e));
                false
            }
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one match over the frame types, each arm short"
    )]
    async fn on_text(&mut self, raw: &str) {
        if crate::text::json_has_nul(raw.as_bytes()) {
            self.error(
                ErrorCode::InvalidRequest,
                "bad frame: strings must not contain NUL (\\u0000)",
            );
            return;
        }
        let frame = match serde_json::from_str::<ClientFrame>(raw) {
            Ok(f) => f,
            Err(e) => {
                let mut why = e.to_string();
                why.truncate(200);
                self.error(ErrorCode::InvalidRequest, format!("bad frame: {why}"));
                return;
            }
        };
        match frame {
            ClientFrame::Ping => self.reply(&ServerFrame::Pong),
            ClientFrame::Auth { .. } => {
                self.error(ErrorCode::InvalidRequest, "already authenticated")
            }
            ClientFrame::Subscribe { chat_id, since_seq } => {
                self.subscribe(chat_id, since_seq).await
            }
            ClientFrame::Unsubscribe { chat_id } => {
                if self.subscribed.remove(&chat_id) {
                    let actors = &self.state.actors;
                    actors.chats.unsubscribe(chat_id, self.conn, false);
                }
            }
            ClientFrame::Send {
                chat_id,
                client_msg_id,
                content,
                model,
                documents,
            } => {
                // The sender follows the chat it writes to, so it sees the
                // answer. The send itself checks membership and whether the
                // sender may spend (in the same read as its other checks).
                if !self.subscribed.contains(&chat_id) {
                    if let Err(e) = self.may_see(chat_id).await {
                        let frame = ServerFrame::from_error(&e).answering(chat_id, &client_msg_id);
                        return self.reply(&frame);
                    }
                    if !self.subscribe_live(chat_id, None).await {
                        return;
                    }
                }
                let id = client_msg_id.clone();
                let req = SendRequest {
                    author: self.user_id,
                    client_msg_id,
                    content,
                    model,
                    origin: Some(self.conn),
                    documents: documents.and_then(Scope::from_choice),
                };
                // A WebSocket frame's trace starts here (an HTTP request's at its `http` span).
                let span = crate::trace_span!("ws.send", %chat_id, otel.kind = "server");
                let sent = self.state.actors.chats.send(chat_id, req);
                match tracing::Instrument::instrument(sent, span).await {
                    Ok(ack) => self.reply(&ServerFrame::Ack {
                        client_msg_id: ack.client_msg_id,
                        message_id: ack.message_id,
                        seq: ack.seq,
                    }),
                    // Says which message, so a client knows what to re-send
                    // (with the same id: never stored twice).
                    Err(e) => self.reply(
                        &ServerFrame::from_error(&ApiError::from(e)).answering(chat_id, &id),
                    ),
                }
            }
            ClientFrame::Cancel {
                chat_id,
                message_id,
            } => {
                if !self.check_visible(chat_id).await {
                    return;
                }
                if let Err(e) = self.state.actors.chats.cancel(chat_id, message_id).await {
                    self.chat_error(&e);
                }
            }
        }
    }

    async fn subscribe(&mut self, chat_id: Uuid, since_seq: Option<i64>) {
        if since_seq.is_some_and(|s| s < 0) {
            self.error(ErrorCode::InvalidRequest, "since_seq: must not be negative");
            return;
        }
        if !self.check_visible(chat_id).await {
            return;
        }
        if self.subscribed.contains(&chat_id) {
            // Re-subscribing replays again from the given seq.
            let actors = &self.state.actors;
            actors.chats.unsubscribe(chat_id, self.conn, false);
            self.subscribed.remove(&chat_id);
        }
        self.subscribe_live(chat_id, since_seq).await;
    }

    async fn subscribe_live(&mut self, chat_id: Uuid, since_seq: Option<i64>) -> bool {
        if let Err(wait) = self.subscribes.take() {
            let mut err = ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} subscribes per minute on one socket",
                    self.subscribes.per_minute
                ),
            );
            err.retry_after = Some(wait);
            self.reply(&ServerFrame::from_error(&err));
            return false;
        }
        if self.subscribed.len() >= MAX_SUBSCRIPTIONS {
            self.error(
                ErrorCode::InvalidRequest,
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
            );
            return false;
        }
        match self
            .state
            .actors
            .chats
            .subscribe(
                chat_id,
                self.subscriber(),
                since_seq.map(crate::protocol::Resume::since_seq),
            )
            .await
        {
            Ok(()) => {
                self.subscribed.insert(chat_id);
                true
            }
            Err(e) => {
                self.chat_error(&e);
                false
            }
        }
    }
}
