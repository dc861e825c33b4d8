//! `MockLlm`: a local stand-in for OpenAI, Anthropic and Cloudflare Workers AI
//! that speaks their real wire formats, with behaviour scripted per test.
//!
//! ```ignore
//! let mock = MockLlm::start().await;
//! mock.set(Behavior::tokens(["Hel", "lo"]).ttft(Duration::from_millis(50)));
//! mock.push(Behavior::Status { code: 429, retry_after: Some(7) }); // next request only
//! let openai = OpenAiProvider::new(Some(mock.openai_base()), Some(key), "gpt".into());
//! // ... drive it ...
//! assert_eq!(mock.request_count(), 2);
//! assert_eq!(mock.last_request().unwrap().body["stream_options"]["include_usage"], true);
//! assert!(mock.wait_dropped(1, Duration::from_secs(2)).await);
//! ```
//!
//! # Routes
//! - `POST …/chat/completions` under any prefix (OpenAI and every compatible
//!   server: `{url}/v1`, `{url}/openai/v1`, `{url}/accounts/x/ai/v1` all work):
//!   `data: {chat.completion.chunk}` events — a role chunk, one chunk per token,
//!   a chunk with `finish_reason`, a usage chunk with empty `choices` (only when
//!   the request asked with `stream_options.include_usage`), `data: [DONE]`.
//!   With `"stream": false` (or absent) the answer is one `chat.completion` JSON.
//! - `POST /v1/messages` (Anthropic): `event:` + `data:` lines — message_start,
//!   content_block_start, ping, content_block_delta × n, content_block_stop,
//!   message_delta (stop_reason + usage), message_stop. `"stream": false` gives
//!   one `message` JSON.
//! - `POST /accounts/{account}/ai/run/{*model}` (Workers AI):
//!   `data: {"response": token}` × n, a final `{"response":"","usage":{…}}`,
//!   `data: [DONE]`.
//!
//! Reported usage is `input_tokens` = the number of whitespace-separated words
//! in every message's content (and Anthropic's `system`), `output_tokens` = the
//! number of tokens sent. A request's `max_tokens` (or `max_completion_tokens`)
//! below the scripted token count truncates the answer with finish `length`
//! (`max_tokens` on Anthropic).
//!
//! # Scripting
//! Each request takes the front of the queue ([`MockLlm::push`]) or, when the
//! queue is empty, the default ([`MockLlm::set`]; initially
//! [`Behavior::default`]: [`DEFAULT_TOKENS`], no delays, with usage).
//!
//! # Observing
//! [`MockLlm::requests`] keeps every request (path, headers, JSON body);
//! [`MockLlm::dropped`] counts responses whose body the client dropped before
//! the mock finished sending it (the proof that a cancel reached upstream);
//! [`MockLlm::completed`] counts those sent to the end,
//! [`MockLlm::open_streams`] those still being sent, and
//! [`MockLlm::connections`] the TCP connections accepted.

#![allow(dead_code, reason = "each test uses the behaviours it needs")]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
    serve::ListenerExt,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// The answer of [`Behavior::default`].
pub const DEFAULT_TOKENS: [&str; 4] = ["Hello", ",", " world", "!"];

/// What the mock does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Streams `tokens` after `ttft`, `delay` apart, then the provider's
    /// usage (if `usage`) and end marker, with `finish` (`stop`, `length`, ...)
    /// as the finish reason (Anthropic's words are derived from it).
    Ok {
        tokens: Vec<String>,
        ttft: Duration,
        delay: Duration,
        usage: bool,
        finish: String,
    },
    /// Answers `code` with the provider's real error JSON and, when set, a
    /// `Retry-After` header.
    Status { code: u16, retry_after: Option<u64> },
    /// Sends `200` and the stream's headers (Anthropic: also `message_start`),
    /// then nothing until the client goes away.
    HangBeforeFirstToken,
    /// Never answers, not even the status line.
    HangBeforeHeaders,
    /// Sends `n` tokens, then breaks the connection (no end marker, no
    /// terminating chunk).
    DropAfter(usize),
    /// Sends `n` tokens, then ends the body cleanly but without the end marker
    /// (`[DONE]` / `message_stop`).
    EndWithoutDone(usize),
    /// Sends one token, then a `data:` line that is not JSON, then the end marker.
    Malformed,
    /// Sends one token, then the provider's in-stream error event (OpenAI:
    /// `{"error":{..."code":503}}`; Anthropic: `overloaded_error`; Cloudflare:
    /// `{"errors":[...]}`).
    ErrorEvent,
    /// `401` with the provider's error body unless the request's key (Bearer
    /// token, or Anthropic's `x-api-key`) is this; otherwise the default answer.
    CheckKey(String),
}

impl Default for Behavior {
    fn default() -> Self {
        Self::tokens(DEFAULT_TOKENS)
    }
}

impl Behavior {
    /// [`Behavior::Ok`] with these tokens, no delays, usage reported, finish `stop`.
    pub fn tokens<S: Into<String>>(tokens: impl IntoIterator<Item = S>) -> Self {
        Self::Ok {
            tokens: tokens.into_iter().map(Into::into).collect(),
            ttft: Duration::ZERO,
            delay: Duration::ZERO,
            usage: true,
            finish: "stop".into(),
        }
    }

    /// `n` tokens `t0 `, `t1 `, ... spaced `delay` apart.
    pub fn slow(n: usize, delay: Duration) -> Self {
        Self::tokens((0..n).map(|i| format!("t{i} "))).delay(delay)
    }

    /// Sets the time to first token (only on [`Behavior::Ok`]).
    pub fn ttft(mut self, d: Duration) -> Self {
        if let Self::Ok { ttft, .. } = &mut self {
            *ttft = d;
        }
        self
    }

    /// Sets the delay between tokens (only on [`Behavior::Ok`]).
    pub fn delay(mut self, d: Duration) -> Self {
        if let Self::Ok { delay, .. } = &mut self {
            *delay = d;
        }
        self
    }

    /// Reports no usage (only on [`Behavior::Ok`]).
    pub fn without_usage(mut self) -> Self {
        if let Self::Ok { usage, .. } = &mut self {
            *usage = false;
        }
        self
    }

    /// Sets the finish reason (only on [`Behavior::Ok`]).
    pub fn finish(mut self, reason: &str) -> Self {
        if let Self::Ok { finish, .. } = &mut self {
            *finish = reason.to_owned();
        }
        self
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON (`Value::String` with the raw text if it was not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The key the client sent: `x-api-key`, else the `Authorization: Bearer` token.
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-api-key")
            .or_else(|| self.header("authorization")?.strip_prefix("Bearer "))
    }
}

#[derive(Default)]
struct Shared {
    /// A provider that ignores the request's `max_tokens` (many OpenAI-compatible servers do).
    ignore_max_tokens: std::sync::atomic::AtomicBool,
    /// Added to every reported prompt-token count: a provider that counts more than we did.
    extra_input_tokens: std::sync::atomic::AtomicU64,
    default: Mutex<Behavior>,
    queue: Mutex<VecDeque<Behavior>>,
    requests: Mutex<Vec<Recorded>>,
    dropped: AtomicUsize,
    connections: AtomicUsize,
    completed: AtomicUsize,
    open: AtomicUsize,
}

/// The running mock; the server stops when this is dropped.
pub struct MockLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::AbortHandle,
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockLlm {
    /// Starts the mock on 127.0.0.1 and a free port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/accounts/{account}/ai/run/{*model}", post(cloudflare))
            .fallback(openai_or_404)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock LLM");
        let addr = listener.local_addr().unwrap();
        let counter = shared.clone();
        let listener = listener.tap_io(move |_| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("mock LLM serves");
        })
        .abort_handle();
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL an OpenAI client wants: `{url}/v1`.
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The behaviour of every request the queue does not cover.
    /// From now on, streams past the request's `max_tokens`.
    pub fn ignore_max_tokens(&self) {
        self.shared.ignore_max_tokens.store(true, Ordering::Relaxed);
    }

    /// From now on, reports `extra` more prompt tokens than the prompt has words.
    pub fn over_report_input(&self, extra: u64) {
        self.shared
            .extra_input_tokens
            .store(extra, Ordering::Relaxed);
    }

    pub fn set(&self, behavior: Behavior) {
        *self.shared.default.lock().unwrap() = behavior;
    }

    /// Queues a behaviour for one request; queued ones go first, in order.
    pub fn push(&self, behavior: Behavior) {
        self.shared.queue.lock().unwrap().push_back(behavior);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    /// Responses whose body the client dropped before the mock finished it.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (one per request unless the client reuses them).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Responses sent to their end (including scripted breaks).
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Response bodies being sent right now.
    pub fn open_streams(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` responses were dropped by the client; false on timeout.
    pub async fn wait_dropped(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.dropped() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits until `n` requests have arrived; false on timeout.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.request_count() < n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

// ---------------------------------------------------------------------------
// Request handling shared by the three APIs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    OpenAi,
    Anthropic,
    Cloudflare,
}

/// Records the request and picks its behaviour.
async fn take(shared: &Shared, request: Request) -> (Recorded, Behavior) {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    };
    shared.requests.lock().unwrap().push(recorded.clone());
    let behavior = shared
        .queue
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    (recorded, behavior)
}

async fn openai_or_404(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.method() == axum::http::Method::POST
        && request.uri().path().ends_with("/chat/completions")
    {
        let (recorded, behavior) = take(&shared, request).await;
        let model = recorded.body["model"].as_str().unwrap_or("mock").to_owned();
        respond(&shared, Api::OpenAi, &recorded, behavior, model).await
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": "mock LLM: no such route", "type": "invalid_request_error"}})),
        )
            .into_response()
    }
}

async fn anthropic(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (recorded, behavior) = take(&shared, request).await;
    let model = recorded.body["model"].as_str().unwrap_or("mock").to_owned();
    respond(&shared, Api::Anthropic, &recorded, behavior, model).await
}

async fn cloudflare(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (recorded, behavior) = take(&shared, request).await;
    let model = recorded
        .path
        .split_once("/ai/run/")
        .map(|(_, m)| m.to_owned())
        .unwrap_or_default();
    respond(&shared, Api::Cloudflare, &recorded, behavior, model).await
}

async fn respond(
    shared: &Arc<Shared>,
    api: Api,
    recorded: &Recorded,
    behavior: Behavior,
    model: String,
) -> Response {
    let behavior = match behavior {
        Behavior::CheckKey(expected) => {
            if recorded.api_key() != Some(expected.as_str()) {
                return error_response(api, 401, None);
            }
            Behavior::default()
        }
        other => other,
    };
    if let Behavior::Status { code, retry_after } = behavior {
        return error_response(api, code, retry_after);
    }
    if behavior == Behavior::HangBeforeHeaders {
        std::future::pending::<()>().await;
    }
    let streaming = recorded.body["stream"].as_bool().unwrap_or(false);
    let wire = Wire {
        api,
        model,
        input_tokens: prompt_words(&recorded.body)
            + shared.extra_input_tokens.load(Ordering::Relaxed),
        include_usage: api != Api::OpenAi
            || recorded.body["stream_options"]["include_usage"].as_bool() == Some(true),
        max_tokens: recorded.body["max_completion_tokens"]
            .as_u64()
            .or_else(|| recorded.body["max_tokens"].as_u64())
            .map(|n| n as usize)
            .filter(|_| !shared.ignore_max_tokens.load(Ordering::Relaxed)),
    };
    if !streaming && api != Api::Cloudflare {
        return wire.whole(behavior);
    }
    let steps = wire.script(behavior);
    sse_response(shared.clone(), steps)
}

/// Words in every message's content (and a top-level `system`): the mock's prompt size.
fn prompt_words(body: &Value) -> u64 {
    let words = |v: &Value| {
        v.as_str()
            .map_or(0, |s| s.split_whitespace().count() as u64)
    };
    let messages = body["messages"]
        .as_array()
        .map_or(0, |m| m.iter().map(|m| words(&m["content"])).sum());
    messages + words(&body["system"])
}

/// The provider's own error body for `code`.
fn error_response(api: Api, code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match api {
        Api::OpenAi => {
            let (kind, err_code, message) = match code {
                401 => (
                    "invalid_request_error",
                    json!("invalid_api_key"),
                    "Incorrect API key provided: sk-mo****. You can find your API key at https://platform.openai.com/account/api-keys.",
                ),
                429 => (
                    "requests",
                    json!("rate_limit_exceeded"),
                    "Rate limit reached for requests. Please try again later.",
                ),
                500..=599 => (
                    "server_error",
                    Value::Null,
                    "The server had an error while processing your request. Sorry about that!",
                ),
                _ => ("invalid_request_error", Value::Null, "Invalid request."),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": err_code}})
        }
        Api::Anthropic => {
            let (kind, message) = match code {
                400 => ("invalid_request_error", "Invalid request."),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => ("permission_error", "Your API key does not have permission."),
                404 => ("not_found_error", "Not found."),
                413 => ("request_too_large", "Request exceeds the maximum size."),
                429 => (
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit.",
                ),
                529 => ("overloaded_error", "Overloaded"),
                _ => ("api_error", "Internal server error"),
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Cloudflare => {
            let (cf_code, message) = match code {
                401 | 403 => (10000, "Authentication error"),
                429 => (
                    3040,
                    "AiError: Capacity temporarily exceeded, please try again.",
                ),
                400..=499 => (5006, "AiError: Bad input"),
                _ => (3043, "AiError: Internal server error"),
            };
            json!({"result": null, "success": false, "errors": [{"code": cf_code, "message": message}], "messages": []})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if api == Api::Anthropic {
        response
            .headers_mut()
            .insert("request-id", HeaderValue::from_static("req_mock"));
    }
    response
}

// ---------------------------------------------------------------------------
// Wire formats

struct Wire {
    api: Api,
    model: String,
    input_tokens: u64,
    /// OpenAI sends the usage chunk only when asked.
    include_usage: bool,
    max_tokens: Option<usize>,
}

/// One step of a scripted response body.
enum Step {
    Sleep(Duration),
    Send(String),
    /// Stays silent until the client leaves.
    Hang,
    /// Breaks the connection.
    Abort,
}

const CREATED: u64 = 1_767_225_600;

impl Wire {
    fn openai_chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let chunk = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        format!("data: {chunk}\n\n")
    }

    fn anthropic_event(kind: &str, data: Value) -> String {
        format!("event: {kind}\ndata: {data}\n\n")
    }

    /// The frames before the first token.
    fn opening(&self) -> Vec<String> {
        match self.api {
            Api::OpenAi => {
                vec![self.openai_chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            Api::Anthropic => {
                let usage = if self.include_usage {
                    json!({"input_tokens": self.input_tokens, "output_tokens": 1})
                } else {
                    Value::Null
                };
                let mut message = json!({
                    "id": "msg_mock", "type": "message", "role": "assistant", "content": [],
                    "model": self.model, "stop_reason": null, "stop_sequence": null,
                });
                if !usage.is_null() {
                    message["usage"] = usage;
                }
                vec![
                    Self::anthropic_event(
                        "message_start",
                        json!({"type": "message_start", "message": message}),
                    ),
                    Self::anthropic_event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ),
                    Self::anthropic_event("ping", json!({"type": "ping"})),
                ]
            }
            Api::Cloudflare => vec![],
        }
    }

    fn token(&self, token: &str) -> String {
        match self.api {
            Api::OpenAi => self.openai_chunk(json!({"content": token}), None),
            Api::Anthropic => Self::anthropic_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}),
            ),
            Api::Cloudflare => format!("data: {}\n\n", json!({"response": token, "p": "abcdefgh"})),
        }
    }

    /// Everything after the last token, end marker included.
    fn closing(&self, output_tokens: usize, finish: &str) -> Vec<String> {
        let usage = json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": self.input_tokens + output_tokens as u64,
        });
        match self.api {
            Api::OpenAi => {
                let mut frames = vec![self.openai_chunk(json!({}), Some(finish))];
                if self.include_usage {
                    let chunk = json!({
                        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
                        "model": self.model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage,
                    });
                    frames.push(format!("data: {chunk}\n\n"));
                }
                frames.push("data: [DONE]\n\n".into());
                frames
            }
            Api::Anthropic => {
                let stop_reason = match finish {
                    "stop" => "end_turn",
                    "length" => "max_tokens",
                    other => other,
                };
                let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}});
                if self.include_usage {
                    delta["usage"] = json!({"output_tokens": output_tokens});
                }
                vec![
                    Self::anthropic_event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    ),
                    Self::anthropic_event("message_delta", delta),
                    Self::anthropic_event("message_stop", json!({"type": "message_stop"})),
                ]
            }
            Api::Cloudflare => {
                let mut frames = Vec::new();
                if self.include_usage {
                    frames.push(format!(
                        "data: {}\n\n",
                        json!({"response": "", "usage": usage})
                    ));
                }
                frames.push("data: [DONE]\n\n".into());
                frames
            }
        }
    }

    fn error_event(&self) -> String {
        match self.api {
            Api::OpenAi => format!(
                "data: {}\n\n",
                json!({"error": {"message": "The server is overloaded.", "type": "server_error", "code": 503}})
            ),
            Api::Anthropic => Self::anthropic_event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            Api::Cloudflare => format!(
                "data: {}\n\n",
                json!({"errors": [{"code": 3043, "message": "AiError: Internal server error"}]})
            ),
        }
    }

    /// Applies the request's `max_tokens`: the tokens sent and the finish reason.
    fn cap(&self, mut tokens: Vec<String>, finish: String) -> (Vec<String>, String) {
        match self.max_tokens {
            Some(max) if tokens.len() > max => {
                tokens.truncate(max);
                (tokens, "length".into())
            }
            _ => (tokens, finish),
        }
    }

    fn script(mut self, behavior: Behavior) -> Vec<Step> {
        if let Behavior::Ok { usage: false, .. } = behavior {
            self.include_usage = false;
        }
        let mut steps: Vec<Step> = self.opening().into_iter().map(Step::Send).collect();
        let send_tokens = |steps: &mut Vec<Step>, wire: &Wire, n: usize| {
            for i in 0..n {
                steps.push(Step::Send(wire.token(&format!("t{i} "))));
            }
        };
        match behavior {
            Behavior::Ok {
                tokens,
                ttft,
                delay,
                finish,
                ..
            } => {
                let (tokens, finish) = self.cap(tokens, finish);
                for (i, token) in tokens.iter().enumerate() {
                    let pause = if i == 0 { ttft } else { delay };
                    if !pause.is_zero() {
                        steps.push(Step::Sleep(pause));
                    }
                    steps.push(Step::Send(self.token(token)));
                }
                if tokens.is_empty() && !ttft.is_zero() {
                    steps.push(Step::Sleep(ttft));
                }
                steps.extend(
                    self.closing(tokens.len(), &finish)
                        .into_iter()
                        .map(Step::Send),
                );
            }
            Behavior::HangBeforeFirstToken => steps.push(Step::Hang),
            Behavior::DropAfter(n) => {
                send_tokens(&mut steps, &self, n);
                // let what was sent reach the client before the connection breaks
                steps.push(Step::Sleep(Duration::from_millis(50)));
                steps.push(Step::Abort);
            }
            Behavior::EndWithoutDone(n) => send_tokens(&mut steps, &self, n),
            Behavior::Malformed => {
                send_tokens(&mut steps, &self, 1);
                let bad = match self.api {
                    Api::Anthropic => "event: content_block_delta\ndata: {\"type\": oops\n\n",
                    _ => "data: {\"choices\": oops, not json\n\n",
                };
                steps.push(Step::Send(bad.into()));
                steps.extend(self.closing(1, "stop").into_iter().map(Step::Send));
            }
            Behavior::ErrorEvent => {
                send_tokens(&mut steps, &self, 1);
                steps.push(Step::Send(self.error_event()));
            }
            Behavior::Status { .. } | Behavior::HangBeforeHeaders | Behavior::CheckKey(_) => {
                unreachable!("answered before the stream")
            }
        }
        steps
    }

    /// A non-streamed answer (`"stream": false`).
    fn whole(&self, behavior: Behavior) -> Response {
        let (tokens, finish) = match behavior {
            Behavior::Ok { tokens, finish, .. } => self.cap(tokens, finish),
            _ => {
                return (
                    StatusCode::NOT_IMPLEMENTED,
                    "mock LLM: only Ok and Status behaviours answer without streaming",
                )
                    .into_response();
            }
        };
        let text = tokens.concat();
        let body = match self.api {
            Api::OpenAi => json!({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                             "logprobs": null, "finish_reason": finish}],
                "usage": {"prompt_tokens": self.input_tokens, "completion_tokens": tokens.len(),
                          "total_tokens": self.input_tokens + tokens.len() as u64},
            }),
            _ => json!({
                "id": "msg_mock", "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": if finish == "length" { "max_tokens" } else { "end_turn" },
                "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": tokens.len()},
            }),
        };
        axum::Json(body).into_response()
    }
}

// ---------------------------------------------------------------------------
// The streamed body and its drop accounting

/// Counts the body as dropped if it goes away before the script finished.
struct BodyGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl BodyGuard {
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.shared.completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse_response(shared: Arc<Shared>, steps: Vec<Step>) -> Response {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let guard = BodyGuard {
        shared,
        finished: false,
    };
    let steps: VecDeque<Step> = steps.into();
    let body = futures::stream::unfold((steps, guard), |(mut steps, mut guard)| async move {
        loop {
            match steps.pop_front() {
                None => {
                    guard.finish();
                    return None;
                }
                Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Step::Hang) => std::future::pending::<()>().await,
                Some(Step::Abort) => {
                    guard.finish();
                    let error = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "mock: connection dropped",
                    );
                    return Some((Err(error), (steps, guard)));
                }
                Some(Step::Send(frame)) => {
                    // The last frame counts as finished once handed over, so a
                    // client that hangs up right after the end marker is no drop.
                    if steps.is_empty() {
                        guard.finish();
                    }
                    return Some((Ok(Bytes::from(frame)), (steps, guard)));
                }
            }
        }
    })
    .boxed();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}
