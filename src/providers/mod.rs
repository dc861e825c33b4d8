//! Language-model providers behind one trait, and their prices.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`StreamEvent`]s. It does
//! no retries, limits or routing: those belong to the provider actor, the
//! router and the generation lifecycle (`crate::generation`).

pub mod anthropic;
pub mod cloudflare;
pub mod embedding;
pub mod openai;
pub mod options;
pub mod router;
pub mod simulated;
pub mod sse;
pub mod tokenizer;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// One turn of the conversation sent to a model.
///
/// An assistant turn may carry the tool calls it made; a `tool` turn is the
/// result of one of them (`tool_call_id`). Both are empty for plain chat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A function call an assistant made: its id, the function and its JSON arguments (text).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The provider's own model name.
    pub model: String,
    pub messages: Vec<PromptMessage>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    /// Tools, structured output and sampling options beyond the basics (`/v1` only).
    pub options: GenOptions,
}

pub use self::options::{GenOptions, ResponseFormat, ToolChoice, ToolDef};

/// Tokens in and out of one generation (defined with the prices that turn it into money).
pub use crate::config::pricing::Usage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A piece of the answer, in order.
    Token(String),
    /// The provider's own count, usually last.
    Usage(Usage),
    /// The answer ended; the reason is the provider's (`stop`, `length`, ...).
    Finish(String),
    /// A piece of a tool call, as OpenAI streams it: the first piece of call
    /// `index` carries its id and function name, later ones argument text.
    ToolCall(ToolCallDelta),
}

/// One streamed piece of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of this answer (0, 1, ...).
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Everything that can go wrong with a provider, in one shape, so routing can
/// decide what is worth a fallback.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("rejected credentials")]
    Unauthorized,
    #[error("rate limited by the provider")]
    RateLimited { retry_after_secs: Option<u64> },
    #[error("provider error (status {status})")]
    Upstream { status: u16 },
    #[error("malformed stream data: {0}")]
    Malformed(String),
    #[error("stream ended before the answer was complete")]
    Disconnected,
    /// Tokens had started, then none came for `routing.inter_token_timeout_ms`.
    #[error("the provider went silent mid-answer (no token for {0} ms)")]
    Stalled(u64),
    /// Refused locally: the provider's circuit breaker is open.
    #[error("circuit open: the provider failed repeatedly")]
    CircuitOpen,
}

impl ProviderError {
    /// Worth another try on the same provider (before any token reached the client).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Timeout | Self::Upstream { status: 500.. }
        )
    }

    /// What a client may be told: the kind of failure, never upstream details
    /// (URLs, addresses, OS errors), which stay in the logs.
    pub fn public(&self) -> String {
        match self {
            Self::Connect(_) => "cannot connect to the provider".into(),
            Self::Malformed(_) => "the provider sent malformed data".into(),
            other => other.to_string(),
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout => "timeout",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Upstream { .. } => "upstream_error",
            Self::Malformed(_) => "malformed",
            Self::Disconnected => "disconnected",
            Self::Stalled(_) => "stalled",
            Self::CircuitOpen => "circuit_open",
        }
    }
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// A chat-completion backend.
pub trait ChatProvider: Send + Sync + 'static {
    /// The configured name (`simulated`, `openai`, ...).
    fn name(&self) -> &str;
    /// The model used when a request names none.
    fn default_model(&self) -> &str;
    /// Starts a streamed generation. Dropping the stream cancels it upstream.
    fn stream(&self, request: ChatRequest) -> EventStream;
    /// Whether this provider honours the request parameter `param` (named as
    /// in OpenAI's API: `tools`, `seed`, ...). A request using one it does not
    /// is refused with a 400 naming it, never sent with the parameter dropped.
    fn supports(&self, param: &str) -> bool {
        let _ = param;
        false
    }
}

/// The first parameter of `request` that `provider` cannot honour.
pub fn unsupported_param(
    provider: &dyn ChatProvider,
    request: &ChatRequest,
) -> Option<&'static str> {
    request
        .options
        .params()
        .into_iter()
        .find(|p| !provider.supports(p))
}

/// The chat providers the settings enable: the simulated one always, and each
/// real one whose credentials are set.
pub fn configured(config: &crate::config::Config) -> Vec<std::sync::Arc<dyn ChatProvider>> {
    let pc = &config.providers;
    let model = |name: &str| pc.models.get(name).cloned().unwrap_or_default();
    let mut out: Vec<std::sync::Arc<dyn ChatProvider>> = vec![std::sync::Arc::new(
        simulated::SimulatedProvider::new(config.simulated.clone()),
    )];
    if pc.openai_api_key.is_some() || pc.openai_base_url.is_some() {
        out.push(std::sync::Arc::new(openai::OpenAiProvider::new(
            pc.openai_base_url.clone(),
            pc.openai_api_key.clone(),
            model("openai"),
        )));
    }
    if let Some(key) = &pc.anthropic_api_key {
        out.push(std::sync::Arc::new(anthropic::AnthropicProvider::new(
            pc.anthropic_base_url.clone(),
            key.clone(),
            model("anthropic"),
        )));
    }
    if let (Some(token), Some(account)) = (&pc.cloudflare_api_token, &pc.cloudflare_account_id) {
        out.push(std::sync::Arc::new(cloudflare::CloudflareProvider::new(
            pc.cloudflare_base_url.clone(),
            account.clone(),
            token.clone(),
            model("cloudflare"),
        )));
    }
    out
}

/// A rough token count (about four characters a token), for prompts whose
/// provider reports no usage.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4).max(u32::from(!text.is_empty()))
}

/// What the HTTP providers share: one request → one server-sent event stream,
/// with the error contract of [`ChatProvider::stream`] applied once.
pub(crate) mod http {
    use std::{collections::VecDeque, time::Duration};

    use futures::{StreamExt, stream::BoxStream};
    use reqwest::{
        RequestBuilder, StatusCode,
        header::{CONTENT_TYPE, HeaderMap},
    };
    use tracing::Instrument;

    use super::{
        EventStream, ProviderError, StreamEvent,
        sse::{Event, Events as SseEvents, SseError},
    };
    use crate::config::Secret;

    /// Connecting (TCP and TLS) may take this long.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Silence on an open response longer than this is a [`ProviderError::Timeout`].
    pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

    /// The client each chat provider starts with (`with_http_client` replaces
    /// it). It has no read timeout: the generation bounds a stream's silence
    /// itself (the first event's deadline, then
    /// `routing.inter_token_timeout_ms`), and reqwest's timer, re-armed for
    /// every chunk of every stream, cost about 8 % of the server's CPU per
    /// completion with 300 streams open (docs/BENCHMARKS.md, fifth pass).
    pub fn stream_client() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }

    /// The client each embedding provider starts with: one JSON answer, read
    /// under [`READ_TIMEOUT`].
    pub fn json_client() -> reqwest::Client {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }

    /// `base` without the trailing slashes, so `{base}/path` never doubles one.
    pub fn trim_base(base: &str) -> String {
        base.trim_end_matches('/').to_owned()
    }

    /// One provider's reading of its event stream.
    pub trait SseDecoder: Send + 'static {
        /// Handles one event, pushing what it yields onto `out`. `Ok(true)` means
        /// the provider's end marker was seen: the stream ends once `out` drains.
        fn event(
            &mut self,
            event: Event,
            out: &mut VecDeque<StreamEvent>,
        ) -> Result<bool, ProviderError>;
    }

    type Events = BoxStream<'static, Result<Event, SseError<reqwest::Error>>>;

    struct Sse<D> {
        provider: &'static str,
        /// Blanked out of logged error bodies, should a server echo it.
        key: Option<Secret>,
        request: Option<RequestBuilder>,
        events: Option<Events>,
        decoder: D,
        out: VecDeque<StreamEvent>,
        finished: bool,
        /// `provider.call`: open for the whole exchange (none when traces are off).
        span: tracing::Span,
    }

    impl<D> Sse<D> {
        /// Ends the stream with `error`, dropping the connection.
        fn fail(
            mut self,
            error: ProviderError,
        ) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
            self.finished = true;
            self.events = None;
            self.out.clear();
            Some((Err(error), self))
        }
    }

    /// Sends `request` when the stream is first polled and decodes the answer.
    ///
    /// The first item is the error if the request fails or the status is not
    /// 2xx; a body that ends before the decoder saw the end marker ends with
    /// [`ProviderError::Disconnected`]. Nothing follows an error. Dropping the
    /// stream drops the response, which closes the connection; after the end
    /// marker the rest of the body is read in the background instead, so the
    /// connection can go back to the pool.
    pub fn sse_stream<D: SseDecoder>(
        provider: &'static str,
        request: RequestBuilder,
        key: Option<&Secret>,
        decoder: D,
    ) -> EventStream {
        // The one place every HTTP provider's request passes: its trace span
        // and the `traceparent` that carries the trace to the provider.
        let span = crate::trace_span!(
            "provider.call",
            provider,
            otel.kind = "client",
            http.status_code = tracing::field::Empty
        );
        let request = crate::traces::with_traceparent(&span, request);
        let state = Sse {
            span,
            provider,
            key: key.cloned(),
            request: Some(request),
            events: None,
            decoder,
            out: VecDeque::new(),
            finished: false,
        };
        futures::stream::unfold(state, |mut s| async move {
            if let Some(event) = s.out.pop_front() {
                return Some((Ok(event), s));
            }
            if s.finished {
                return None;
            }
            if let Some(request) = s.request.take() {
                let response = match request.send().instrument(s.span.clone()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(provider = s.provider, error = %chain(&e), "provider request failed");
                        return s.fail(send_error(&e));
                    }
                };
                let status = response.status();
                s.span.record("http.status_code", status.as_u16());
                if !status.is_success() {
                    let error = status_error(status, response.headers());
                    log_error_body(s.provider, status, response, s.key.as_ref()).await;
                    return s.fail(error);
                }
                if let Some(kind) = response.headers().get(CONTENT_TYPE)
                    && kind.to_str().is_ok_and(|k| k.starts_with("application/json"))
                {
                    // A server that ignored `stream: true`.
                    return s.fail(ProviderError::Malformed(
                        "expected an event stream, got application/json".into(),
                    ));
                }
                s.events = Some(SseEvents::new(response.bytes_stream().boxed()).boxed());
            }
            loop {
                let next = s.events.as_mut()?.next().await;
                match next {
                    None => return s.fail(ProviderError::Disconnected),
                    Some(Err(e)) => return s.fail(body_error(e)),
                    Some(Ok(event)) => {
                        let done = match s.decoder.event(event, &mut s.out) {
                            Ok(done) => done,
                            Err(e) => return s.fail(e),
                        };
                        if done {
                            s.finished = true;
                            if let Some(rest) = s.events.take() {
                                #[expect(clippy::disallowed_methods, reason = "drains an abandoned upstream body so its connection is reused; ends with the body or its timeout, nothing to wait for at shutdown")]
                                tokio::spawn(drain(rest));
                            }
                        }
                        if let Some(event) = s.out.pop_front() {
                            return Some((Ok(event), s));
                        }
                        if done {
                            return None;
                        }
                    }
                }
            }
        })
        .fuse() // a poll after the end is `None`, not a panic
        .boxed()
    }

    /// The error for a non-2xx response.
    pub fn status_error(status: StatusCode, headers: &HeaderMap) -> ProviderError {
        match status.as_u16() {
            401 | 403 => ProviderError::Unauthorized,
            429 => ProviderError::RateLimited {
                retry_after_secs: retry_after(headers),
            },
            code => ProviderError::Upstream { status: code },
        }
    }

    /// `Retry-After` in whole seconds (rounded up); `retry-after-ms` as a fallback.
    /// An HTTP-date is not understood and gives `None`.
    pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
        let header = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        let secs =
            header("retry-after").or_else(|| header("retry-after-ms").map(|ms| ms / 1000.0))?;
        (secs.is_finite() && secs >= 0.0).then(|| secs.ceil() as u64)
    }

    /// The error for a request that got no response.
    pub fn send_error(e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout
        } else {
            ProviderError::Connect(chain(e))
        }
    }

    fn body_error(e: SseError<reqwest::Error>) -> ProviderError {
        match e {
            SseError::Transport(e) if e.is_timeout() => ProviderError::Timeout,
            SseError::Transport(_) => ProviderError::Disconnected,
            SseError::Utf8(e) => ProviderError::Malformed(format!("invalid UTF-8: {e}")),
        }
    }

    /// An error and its causes on one line.
    fn chain(e: &reqwest::Error) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// Reads what follows the end marker (usually just the body's end), for a
    /// second or so, so the connection can be reused.
    async fn drain(mut rest: Events) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = rest.next().await {}
        })
        .await;
    }

    /// Logs the start of an error body, which names what the provider disliked.
    async fn log_error_body(
        provider: &'static str,
        status: StatusCode,
        response: reqwest::Response,
        key: Option<&Secret>,
    ) {
        let body = tokio::time::timeout(Duration::from_secs(2), response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut body: String = body.chars().take(500).collect();
        if let Some(key) = key.map(Secret::expose).filter(|k| !k.is_empty()) {
            body = body.replace(key, "[redacted]");
        }
        tracing::warn!(
            provider,
            status = status.as_u16(),
            body,
            "provider returned an error status"
        );
    }

    /// `data` as JSON, or [`ProviderError::Malformed`].
    pub fn parse_json(data: &str) -> Result<serde_json::Value, ProviderError> {
        serde_json::from_str(data).map_err(|e| {
            let start: String = data.chars().take(80).collect();
            ProviderError::Malformed(format!("{e} in {start:?}"))
        })
    }
}
